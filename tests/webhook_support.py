"""A real HTTP receiver for the webhook tests, and a clock the tests move.

:class:`Receiver` is uvicorn serving a tiny ASGI app on 127.0.0.1 (port 0, then the same port
again after :meth:`Receiver.down` / :meth:`Receiver.up`) in the test's own loop. It records
every request and checks its signature with the reference library ``standardwebhooks``
against the secret registered for its path: strictly (the library's five-minute tolerance on
``webhook-timestamp``) when the test runs on real time, or, when the test simulates hours,
with the library's own ``sign`` over the timestamp the request carries. It answers what the
test asks per path: a status code, a redirect, a delay (a slow or a timing-out receiver).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class SimClock:
    """A clock the test moves (``advance``); it starts at the real time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.at = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


@dataclass
class Received:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None  # None: no secret registered for the path

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Answer:
    """What the receiver answers on one path."""

    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test's loop keeps its own signals


class Receiver:
    """uvicorn on 127.0.0.1 recording every request (``requests``)."""

    def __init__(self, *, strict_time: bool = True) -> None:
        self.strict_time = strict_time
        self.requests: list[Received] = []
        self.secrets: dict[str, str] = {}
        self.answers: dict[str, Answer] = {}
        self.port = 0
        self.open = 0  # requests being answered (a slow receiver's in flight)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, status: int = 200, *, delay: float = 0.0, **headers: str) -> None:
        self.answers[path] = Answer(
            status, delay, {k.replace("_", "-"): v for k, v in headers.items()}
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender went (killed) before its body: nothing was delivered
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        self.requests.append(Received(path, headers, body, self._verify(path, headers, body)))
        self._arrived.set()
        answer = self.answers.get(path, Answer())
        self.open += 1
        try:
            if answer.delay:
                await asyncio.sleep(answer.delay)
            raw = [(k.encode(), v.encode()) for k, v in answer.headers.items()]
            await send({"type": "http.response.start", "status": answer.status, "headers": raw})
            body = b"ok" if answer.status < 300 else b"no"
            await send({"type": "http.response.body", "body": body})
        finally:
            self.open -= 1

    def _verify(self, path: str, headers: dict[str, str], body: bytes) -> bool | None:
        secret = self.secrets.get(path)
        if secret is None:
            return None
        hook = Webhook(secret)
        if self.strict_time:
            try:
                hook.verify(body, headers)
            except WebhookVerificationError:
                return False
            return True
        try:
            when = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
            expected = hook.sign(headers["webhook-id"], when, body.decode())
        except (KeyError, ValueError):
            return False
        return expected in headers.get("webhook-signature", "").split()

    async def start(self) -> str:
        sock = socket.create_server(("127.0.0.1", self.port))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=1
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="receiver")
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)
        return self.url

    async def down(self) -> None:
        """Stop listening (connections refused) until :meth:`up`."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = self._task = None

    async def up(self) -> None:
        await self.start()

    def ids(self, path: str | None = None) -> Counter[str]:
        """How many times each event id arrived (on ``path``, or anywhere)."""
        return Counter(r.event_id for r in self.requests if path is None or r.path == path)

    async def wait_until(self, condition: Callable[[], bool], seconds: float = 30) -> None:
        """Until ``condition()`` holds after a request (or :class:`TimeoutError`)."""
        async with asyncio.timeout(seconds):
            while not condition():
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await self._arrived.wait()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Poll an async condition (the database) until it holds, within ``seconds``."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - the database has no event to await
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def receiving(*, strict_time: bool = True) -> Any:
    receiver = Receiver(strict_time=strict_time)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.down()
