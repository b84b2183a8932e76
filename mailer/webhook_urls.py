"""Where a webhook may be posted: one check for the CLI, the API and the daemon (a stage:
pure but for the ``resolve`` it is handed).

With ``MAILER_WEBHOOKS__ALLOW_PRIVATE`` off (the default) an endpoint is ``https`` to a host
whose every address is public: no loopback, private (RFC 1918, unique local), link-local
(the cloud metadata service at 169.254.169.254), shared (100.64/10), multicast, reserved or
unspecified address, an IPv4 address mapped or embedded in IPv6 included, so that whoever may
add an endpoint cannot aim the daemon at the inside of the network. The daemon checks again
before each POST and at the moment it connects (:mod:`mailer.outbox.client`); the API and the
CLI check when an endpoint is added,, so a name that
resolves elsewhere later (DNS rebinding) is refused then too.

:func:`check_url` is handed ``resolve`` (host to addresses): the tests pass their own, the
daemon and the CLI :func:`system_resolve`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from mailer.errors import MailerError

Resolve = Callable[[str], Awaitable[Sequence[str]]]
"""A host name to its IP addresses (as text)."""

MAX_URL = 2000
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetError(MailerError, ValueError):
    """A webhook URL that may not be used; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart: where to connect, the addresses it resolved to (checked)."""

    url: str
    scheme: str
    host: str  # lower case; an IPv6 literal without its brackets
    port: int
    addresses: tuple[str, ...]


def shown(url: str) -> str:
    """A URL for a log line or an error: scheme, host, port and path, never the query (it
    may carry the receiver's token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unreadable URL)"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" + ("?..." if parts.query else "")


def parse_url(url: str, *, allow_private: bool) -> Target:
    """The URL's syntax checked (not its addresses); :class:`TargetError` says what is wrong."""
    if len(url) > MAX_URL:
        raise TargetError(f"the URL is over {MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise TargetError("the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise TargetError("the URL must start with https:// (a webhook endpoint)")
    if scheme == "http" and not allow_private:
        raise TargetError(
            "the URL must use https:// (plain http only with MAILER_WEBHOOKS__ALLOW_PRIVATE=true)"
        )
    if parts.username is not None or parts.password is not None:
        raise TargetError(
            "put no user or password in the URL: the receiver checks the webhook-signature "
            "header with the endpoint's secret"
        )
    if parts.fragment:
        raise TargetError("the URL has a #fragment, which is never sent: remove it")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise TargetError("the URL has no host")
    if not host.isascii():  # as the HTTP client will encode it (IDNA 2008, UTS 46)
        try:
            idna.encode(host, uts46=True)
        except (idna.IDNAError, UnicodeError) as exc:
            raise TargetError(f"the URL's host is not a valid domain name ({exc})") from None
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80), ())


def _ip(text: str) -> IP | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def refused_address(text: str, *, allow_private: bool) -> str | None:
    """Why the daemon may not connect to this address (``None``: it may)."""
    address = _ip(text)
    if address is None:
        return f"{text} is not an IP address"
    if allow_private:
        return None
    inner: list[IP] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        inner += [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
        if address.teredo is not None:
            inner.append(address.teredo[1])
    for one in inner:
        if one.is_unspecified or one.is_loopback or one.is_link_local or one.is_multicast:
            return f"{text} is a loopback, link-local, multicast or unspecified address"
        site_local = isinstance(one, ipaddress.IPv6Address) and one.is_site_local
        if one.is_private or one.is_reserved or site_local or not one.is_global:
            return f"{text} is a private or reserved address"
    return None


async def check_url(url: str, allow_private: bool, resolve: Resolve) -> Target:
    """The URL checked and its host resolved: every address must be allowed (one private
    address is enough to refuse). :class:`TargetError` names the problem."""
    target = parse_url(url, allow_private=allow_private)
    if _ip(target.host) is not None:
        addresses: Sequence[str] = [target.host]
    else:
        try:
            addresses = await resolve(target.host)
        except (OSError, UnicodeError, TimeoutError) as exc:
            raise TargetError(
                f"{target.host}: cannot be resolved "
                f"({getattr(exc, 'strerror', None) or exc or 'timed out'}); check the name"
            ) from None
        if not addresses:
            raise TargetError(f"{target.host}: resolves to no address")
    for address in addresses:
        why = refused_address(address, allow_private=allow_private)
        if why is not None:
            raise TargetError(
                f"{target.host}: {why}; webhooks go to public https endpoints "
                "(MAILER_WEBHOOKS__ALLOW_PRIVATE=true allows private ones)"
            )
    return Target(target.url, target.scheme, target.host, target.port, tuple(addresses))


async def system_resolve(host: str) -> Sequence[str]:
    """The host's addresses as the system resolves them (IPv4 and IPv6, TCP)."""
    infos = await asyncio.wait_for(
        asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), 10
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
