"""The console's static files (vendored htmx and Pico.css, and ``console.css``), served from
``mailer/web/console/static/`` with long cache headers: their URL carries a hash of their
content (``/admin/static/NAME?v=HASH``), so a new version is a new URL.

Only the files present when the process started are served; nothing else under that folder
(nor outside it) can be reached.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

FOLDER = Path(__file__).resolve().parent / "static"
SERVED = (".js", ".css")
LONG_CACHE = "public, max-age=31536000, immutable"


def _load() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    if FOLDER.is_dir():
        for path in sorted(FOLDER.iterdir()):
            if path.is_file() and path.suffix in SERVED:
                body = path.read_bytes()
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind.endswith("javascript"):
                    kind += "; charset=utf-8"
                files[path.name] = (body, kind, hashlib.sha256(body).hexdigest()[:16])
    return files


STATIC = _load()


def asset_url(name: str) -> str:
    """The URL of a static file, with its content hash for cache busting."""
    found = STATIC.get(name)
    return f"/admin/static/{name}" + (f"?v={found[2]}" if found else "")


async def static_file(request: Request) -> Response:
    """``GET /admin/static/NAME``: one of the files loaded at start, else 404."""
    found = STATIC.get(str(request.path_params.get("name", "")))
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body, kind, digest = found
    etag = f'"{digest}"'
    headers = {"Cache-Control": LONG_CACHE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        return Response(status_code=200, headers={**headers, "Content-Type": kind})
    return Response(body, headers=headers, media_type=kind.split(";")[0])
