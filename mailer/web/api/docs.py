"""The REST API's browsable docs at ``/api/v1/docs``: Swagger UI, vendored unchanged from
the npm package ``swagger-ui-dist`` in ``static/`` (``VENDOR.toml`` records where each file
came from and its hash), started by our own ``docs.js``, so the page runs under a CSP
without inline scripts (:class:`DocsHeaders` gives it its own policy), and the document it
shows, ``/api/v1/openapi.json``.

Only the files present at start are served (by name, never a path), with long cache headers:
their URL carries a hash of their content.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FOLDER = Path(__file__).resolve().parent / "static"
KINDS = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
LONG_CACHE = "public, max-age=31536000, immutable"
DOCS_PATH = "/api/v1/docs"
# Swagger UI draws its icons as data: SVG images and sets style attributes from its script.
DOCS_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def _load() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    if FOLDER.is_dir():
        for path in sorted(FOLDER.iterdir()):
            if path.is_file() and path.suffix in KINDS:
                body = path.read_bytes()
                files[path.name] = (body, KINDS[path.suffix], hashlib.sha256(body).hexdigest()[:16])
    return files


STATIC = _load()


def asset_url(name: str) -> str:
    found = STATIC.get(name)
    return f"{DOCS_PATH}/static/{name}" + (f"?v={found[2]}" if found else "")


def docs_page() -> Response:
    """The page of the docs: Swagger UI's files and our ``docs.js``; no inline script."""
    spec = html.escape("/api/v1/openapi.json")
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mailer API</title>
<link rel="stylesheet" href="{html.escape(asset_url("swagger-ui.css"))}">
<link rel="stylesheet" href="{html.escape(asset_url("docs.css"))}">
</head><body>
<div id="docs" data-spec="{spec}"></div>
<script src="{html.escape(asset_url("swagger-ui-bundle.js"))}"></script>
<script src="{html.escape(asset_url("docs.js"))}"></script>
</body></html>
"""
    return Response(body, media_type="text/html", headers={"Cache-Control": "no-cache"})


def static_file(name: str, request: Request) -> Response:
    """One of the files loaded at start, else a 404 problem's plain cousin."""
    found = STATIC.get(name)
    if found is None:
        from mailer.web.api.problems import Problem

        return Problem(404, "no such file of the docs").response()
    body, kind, digest = found
    etag = f'"{digest}"'
    headers = {"Cache-Control": LONG_CACHE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=kind)


def document_response(make: Callable[[], dict[str, Any]]) -> Callable[[], Response]:
    """The endpoint body of ``/openapi.json``: the document made once, then served."""
    made: list[bytes] = []

    def answer() -> Response:
        if not made:
            made.append(json.dumps(make(), ensure_ascii=False, separators=(",", ":")).encode())
        return Response(
            made[0], media_type="application/json", headers={"Cache-Control": "no-cache"}
        )

    return answer


class DocsHeaders:
    """The docs page's own CSP (Swagger UI's files, its data: icons) instead of the pages'
    one; put outside :class:`~mailer.web.headers.SecurityHeaders`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (path == DOCS_PATH or path.startswith(DOCS_PATH + "/")):
            await self.app(scope, receive, send)
            return

        async def with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"content-security-policy"
                ]
                message = {**message, "headers": [*kept, (b"content-security-policy", DOCS_CSP)]}
            await send(message)

        await self.app(scope, receive, with_csp)
