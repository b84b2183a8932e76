"""The headers every response carries: the security headers (set by :class:`SecurityHeaders`
on every HTTP response, error pages and Starlette's own 500 included) and ``no-store`` for the
pages that show someone's data.

Pure ASGI; knows nothing of routes, storage or tokens.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_STORE = {"Cache-Control": "no-store"}

# Set on every response by :class:`SecurityHeaders`, error pages and 500s included.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # the token is in the URL: keep it out of Referer
)


# The staff console (/admin/) loads its own vendored script and styles, never inline ones.
CONSOLE_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CONSOLE_PREFIX = "/admin"
# The console's pages that show a campaign's mail in a sandboxed ``<iframe srcdoc>``: the frame
# inherits the page's policy, and a mail is styled inline and shows its images. Scripts stay
# the console's own; the frame's sandbox runs none of the mail's anyway.
PREVIEW_PATHS = re.compile(r"^/admin/(compose|preview|campaigns/[^/]+/(edit|preview))$")
PREVIEW_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data: https:; connect-src 'self'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)


def _headers_for(path: str) -> tuple[tuple[bytes, bytes], ...]:
    if PREVIEW_PATHS.match(path):
        return ((b"content-security-policy", PREVIEW_CSP), *SECURITY_HEADERS[1:])
    if path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
        return ((b"content-security-policy", CONSOLE_CSP), *SECURITY_HEADERS[1:])
    return SECURITY_HEADERS


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every HTTP response, whoever made it (a view, an
    error handler, Starlette's own 500 page); the console's pages get :data:`CONSOLE_CSP`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        chosen = _headers_for(str(scope.get("path", "")))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in chosen}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *chosen]}
            await send(message)

        await self.app(scope, receive, with_headers)
