"""The HTTP client that posts webhook events, and one POST as a value.

:func:`open_client` makes an ``httpx.AsyncClient`` that follows no redirect, reads no proxy
from the environment, says ``User-Agent: mailer/<version>`` and connects only through
:class:`GuardedBackend`: the host is resolved at the moment of connecting and every address
checked (:func:`mailer.webhook_urls.refused_address`), the connection made to the address
checked, so a name that changes its answer between the check and the connection (DNS
rebinding) still cannot reach a private address. TLS is verified against the host name.

:func:`post` makes one signed POST within ``seconds`` in all (connection, sending,
answer: a receiver that trickles its answer is cut off too) and reads at most
:data:`MAX_ANSWER` bytes of the answer; it never raises for the receiver's doing: what
happened is an :class:`Answer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpcore
import httpx

from mailer import __version__
from mailer.outbox import signing
from mailer.outbox.policy import Answer
from mailer.webhook_urls import Resolve, refused_address, shown, system_resolve

MAX_ANSWER = 2048  # bytes of an answer's body read (stored: its start)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking the host itself before connecting."""

    def __init__(self, *, allow_private: bool, resolve: Resolve) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private
        self._resolve = resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = list(await self._resolve(host.strip("[]")))
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} cannot be resolved ({exc})") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            why = refused_address(address, allow_private=self._allow_private)
            if why is not None:
                raise httpcore.ConnectError(f"refused to connect to {host}: {why}")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not posted to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport on a connection pool that connects through :class:`GuardedBackend`."""

    def __init__(self, backend: GuardedBackend, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


@asynccontextmanager
async def open_client(
    *, seconds: float, concurrency: int, allow_private: bool, resolve: Resolve = system_resolve
) -> AsyncIterator[httpx.AsyncClient]:
    """The client the daemon (and ``mailer webhooks test``) posts with."""
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=30
    )
    backend = GuardedBackend(allow_private=allow_private, resolve=resolve)
    async with httpx.AsyncClient(
        transport=_Transport(backend, limits),
        timeout=seconds,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": f"mailer/{__version__}", "Accept-Encoding": "identity"},
    ) as client:
        yield client


async def post(
    client: httpx.AsyncClient,
    *,
    url: str,
    secret: str,
    event_id: str,
    payload: Mapping[str, Any],
    when: datetime,
    seconds: float,
) -> Answer:
    """POST one event, signed at ``when``, given ``seconds`` in all; what came back (never
    raises for the receiver's doing)."""
    data = signing.body(payload)
    headers = {"Content-Type": "application/json", **signing.headers(secret, event_id, when, data)}
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            async with client.stream("POST", url, content=data, headers=headers) as response:
                text = await _start_of(response)
    except TimeoutError:
        return Answer(None, f"no answer within {seconds:g} s", _ms(started))
    except httpx.TimeoutException:
        return Answer(None, f"no answer within {seconds:g} s", _ms(started))
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        return Answer(None, _one_line(exc), _ms(started))
    took, code = _ms(started), response.status_code
    if 200 <= code < 300:
        return Answer(code, None, took, text)
    error = f"answered {code} {response.reason_phrase}".strip()
    if 300 <= code < 400:
        where = response.headers.get("location")
        error += f"; redirect to {shown(where) if where else 'nowhere'} not followed"
    return Answer(code, error, took, text, response.headers.get("retry-after"))


async def _start_of(response: httpx.Response) -> str:
    got = b""
    async for chunk in response.aiter_raw():
        got += chunk
        if len(got) >= MAX_ANSWER:
            break
    return got[:MAX_ANSWER].decode("utf-8", "replace")


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    kind = "cannot connect" if isinstance(exc, httpx.ConnectError) else type(exc).__name__
    return f"{kind}: {text}"[:300]


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
