"""The headers every response carries: the security headers (set by :class:`SecurityHeaders`
on every HTTP response, error pages and Starlette's own 500 included) and ``no-store`` for the
pages that show someone's data.

Pure ASGI; knows nothing of routes, storage or tokens.
"""

from __future__ import annotations

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


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every HTTP response, whoever made it (a view, an
    error handler, Starlette's own 500 page)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)
