"""The IMAP bounce reader: a mailbox the bounces are delivered to (``MAILER_BOUNCES__IMAP__*``),
read and emptied into a folder of its own.

:class:`ImapReader` connects (implicit TLS, required STARTTLS, or plain text to this machine
only), logs in, selects the folder and hands each message's bytes to ``accept`` (the intake),
by UID in batches with ``BODY.PEEK[]`` (nothing is marked read); given ``accept_batch``, a
fetch's messages go to it at once, and to ``accept`` one by one if it refuses them. A message
stored is
moved to the done folder (``UID MOVE``, else ``UID COPY``, ``\\Deleted`` and ``UID EXPUNGE``,
or ``EXPUNGE`` without UIDPLUS), created when missing; one it refused stays where it is, for
the next sweep. :meth:`ImapReader.run` sweeps, then waits with IDLE (renewed every 29 minutes)
or, without IDLE, sleeps ``poll`` seconds between two connections; a failure is one log line
naming the setting to check, and the reader retries with exponential backoff (1 s to 5 min).

Delivery is at least once: a message stored but not moved when the connection drops is handed
over again at the next sweep, and the intake knows it already (fingerprint). A message over
10 MiB is no bounce (they are kilobytes): it is moved to the done folder unread, with a
warning, so that it neither blocks the folder nor is downloaded again at every sweep, and
nothing is deleted. A driver: it knows nothing of storage; ``accept`` raises if it could not
store the message. What is said on the wire (UID sets, folder names, FETCH answers) is in
``imap_wire``, pure.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aioimaplib

from mailer.errors import ConfigError, MailerError
from mailer.inbound import imap_wire as wire
from mailer.inbound.imap_wire import MAX_MESSAGE
from mailer.settings.bounces import ImapSettings

log = logging.getLogger("mailer.bounces.imap")
T = TypeVar("T")
Accept = Callable[[bytes], Awaitable[None]]
AcceptBatch = Callable[[Sequence[bytes]], Awaitable[None]]  # all stored, or raises

TIMEOUT = 30.0  # seconds for an answer to a command (a fetch: between two pieces of it)
IDLE_RENEW = 29 * 60.0  # seconds: IDLE is re-issued before the 30 minutes servers allow
BACKOFF_FIRST = 1.0  # seconds before the first retry, doubled at each failure
BACKOFF_MAX = 300.0
VAR = "MAILER_BOUNCES__IMAP__"
WHERE = f"{VAR}HOST and {VAR}PORT"
SECURITY = f"{VAR}SECURITY (tls for port 993, starttls for 143) and {VAR}PORT"


class ImapError(MailerError, ConnectionError):
    """The bounce mailbox cannot be read (server down, TLS, login, folder, connection lost);
    the message is one line: server, user, what failed, the ``MAILER_BOUNCES__IMAP__*``
    setting to check. Never the password."""


class ImapReader:
    """Reads one mailbox's bounces into ``accept``; see the module docstring.

    ``ssl_context`` verifies the server (default: the system's CAs, host name checked);
    ``timeout`` and ``idle_renew`` are in seconds.
    """

    def __init__(
        self,
        settings: ImapSettings,
        accept: Accept,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = TIMEOUT,
        idle_renew: float = IDLE_RENEW,
        accept_batch: AcceptBatch | None = None,
    ) -> None:
        if not settings.host or settings.user is None or settings.password is None:
            raise ConfigError(
                f"{VAR}HOST, {VAR}USER and {VAR}PASSWORD are needed to read bounces by IMAP"
            )
        if settings.security == "none" and not _is_loopback(settings.host):
            raise ConfigError(
                f"{VAR}SECURITY=none logs in in clear text, allowed only to this machine "
                f"(127.0.0.1, ::1, localhost), not to {settings.host}: use tls (port 993) or "
                "starttls (port 143)"
            )
        if settings.folder == settings.done_folder:
            raise ConfigError(f"{VAR}DONE_FOLDER must differ from {VAR}FOLDER ({settings.folder})")
        self.settings = settings
        self.accept = accept
        self.accept_batch = accept_batch
        self.context = ssl_context
        if self.context is None and settings.security != "none":
            self.context = ssl.create_default_context()
        self.timeout = timeout
        self.idle_renew = idle_renew
        self.where = f"{settings.host}:{settings.effective_port}"
        self._backoff = BACKOFF_FIRST  # seconds before run() tries again after a failure
        self._failing = False

    async def sweep(self) -> int:
        """Connect, hand every message of the folder to ``accept`` and move each one stored to
        the done folder; how many were stored. ImapError if the mailbox cannot be read."""
        session = _Session(self)
        try:
            await session.open()
            return await session.sweep()
        finally:
            await session.close()

    async def run(self) -> None:
        """Sweep, wait for new mail (IDLE, else ``poll`` seconds), sweep... until cancelled;
        a failure is logged in one line and retried with exponential backoff."""
        while True:
            try:
                await self._session()
            except ImapError as exc:
                log.warning("%s; retrying in %s", exc, _seconds(self._backoff))
            except Exception as exc:  # a bug here must not end the reading of bounces
                log.error(
                    "IMAP %s: unexpected %s; retrying in %s", self.where, type(exc).__name__,
                    _seconds(self._backoff), exc_info=True,
                )  # fmt: skip
            else:  # no IDLE: a new connection at the next look
                await asyncio.sleep(self.settings.poll)
                continue
            self._failing = True
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        """One connection: a sweep, then IDLE and a sweep for as long as IDLE is offered."""
        session = _Session(self)
        try:
            await session.open()
            await session.sweep()
            if self._failing:
                log.info("IMAP %s: reading %r again", self.where, self.settings.folder)
            self._backoff, self._failing = BACKOFF_FIRST, False
            while session.can_idle:
                await session.idle()
                await session.sweep()
        finally:
            await session.close()


class _Session:
    """One connection, logged in with the folder selected."""

    def __init__(self, reader: ImapReader) -> None:
        self.reader = reader
        self.settings = reader.settings
        self.client: Any = None
        self.lost = asyncio.Event()
        self.idling: asyncio.Future[Any] | None = None

    @property
    def can_idle(self) -> bool:
        return bool(self.settings.idle and self.client.has_capability("IDLE"))

    def fail(self, what: str, check: str, cause: object = None) -> ImapError:
        """The one line of a failure; whatever the server or a library said is scrubbed."""
        detail = f" ({self._scrub(cause)})" if cause not in (None, "") else ""
        user = self.settings.user
        return ImapError(f"IMAP {self.reader.where} (user {user}): {what}{detail}; check {check}")

    def _scrub(self, cause: object) -> str:
        text = " ".join(str(cause).split())
        password = self.settings.password
        if password is not None:
            secret = password.get_secret_value()
            for form in (wire.quoted(secret), secret):
                if form:
                    text = text.replace(form, "***")
        return text[:300]

    # --- connecting --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, STARTTLS if asked, LOGIN, create the done folder if missing, SELECT."""
        s = self.settings
        tls = self.reader.context if s.security == "tls" else None
        try:
            self.client = aioimaplib.IMAP4(
                host=s.host, port=s.effective_port, timeout=self.reader.timeout,
                conn_lost_cb=self._lost, ssl_context=tls,
            )  # fmt: skip
            await self.client.wait_hello_from_server()
        except (OSError, aioimaplib.AioImapException) as exc:
            raise self._connect_error(exc, tls=tls is not None) from None
        if s.security == "starttls":
            await self._starttls()
        if self.client.get_state() != aioimaplib.AUTH:  # not PREAUTH
            await self._login()
        await self.command("CAPABILITY", self.client.protocol.capability())
        await self._folders()

    def _lost(self, exc: Exception | None) -> None:
        self.lost.set()

    def _connect_error(self, exc: BaseException, *, tls: bool) -> ImapError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self.fail(
                "its TLS certificate is not trusted", f"{VAR}HOST (the name on the certificate)",
                exc.verify_message,
            )  # fmt: skip
        if isinstance(exc, ssl.SSLError):
            hint = ": is it a plain-text port?" if self.settings.security == "tls" else ""
            return self.fail(f"TLS handshake failed{hint}", SECURITY, exc)
        if isinstance(exc, TimeoutError):
            hint = " (is it a TLS port? then security tls)" if not tls else ""
            return self.fail(f"no IMAP greeting in {self.reader.timeout:.0f} s{hint}", SECURITY)
        if isinstance(exc, OSError):
            return self.fail("cannot connect", f"{WHERE}, and that the server runs", exc)
        return self.fail("the server's greeting is not IMAP's", WHERE, exc)

    async def _starttls(self) -> None:
        if not self.client.has_capability("STARTTLS"):
            raise self.fail("the server offers no STARTTLS", SECURITY)
        protocol = self.client.protocol
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        await self.ok("STARTTLS", protocol.execute(command), SECURITY)
        loop = asyncio.get_running_loop()
        assert self.reader.context is not None
        try:
            protocol.transport = await loop.start_tls(
                protocol.transport, protocol, self.reader.context,
                server_hostname=self.settings.host, ssl_handshake_timeout=self.reader.timeout,
            )  # fmt: skip
        except (OSError, ConnectionError) as exc:
            raise self._connect_error(exc, tls=True) from None
        await self.command("CAPABILITY", protocol.capability())  # what TLS may have changed

    async def _login(self) -> None:
        """LOGIN with both arguments quoted; the quoted password is what aioimaplib's debug
        log masks (it would show one with a quote or a backslash otherwise)."""
        protocol = self.client.protocol
        assert self.settings.user is not None
        assert self.settings.password is not None
        secret = wire.quoted(self.settings.password.get_secret_value())
        try:
            command = aioimaplib.Command(
                "LOGIN", protocol.new_tag(), wire.quoted(self.settings.user), secret,
                loop=protocol.loop,
            )  # fmt: skip
        except ValueError:
            raise self.fail(
                "the user or password holds a line break", f"{VAR}USER and {VAR}PASSWORD"
            ) from None
        response = await self.command("LOGIN", protocol.execute(command, scrub=secret))
        if response.result != "OK":
            raise self.fail("login refused", f"{VAR}USER and {VAR}PASSWORD", wire.said(response))
        async with protocol.state_condition:
            protocol.state = aioimaplib.AUTH
            protocol.state_condition.notify_all()

    async def _folders(self) -> None:
        s = self.settings
        done = wire.mailbox(s.done_folder)
        listed = await self.ok("LIST", self.client.list('""', done), f"{VAR}DONE_FOLDER")
        if len(listed.lines) < 2:  # no LIST line before the tagged one: missing
            await self.ok("CREATE", self.client.create(done), f"{VAR}DONE_FOLDER")
            log.info("IMAP %s: folder %r created", self.reader.where, s.done_folder)
        selected = await self.command("SELECT", self.client.select(wire.mailbox(s.folder)))
        if selected.result != "OK":
            raise self.fail(
                f"cannot open the folder {s.folder!r}", f"{VAR}FOLDER", wire.said(selected)
            )

    async def close(self) -> None:
        """End IDLE, LOGOUT and close the connection; never raises (but CancelledError)."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if not self.lost.is_set() and client.get_state() != aioimaplib.STARTED:
                if self.idling is not None:
                    await self._end_idle(client)
                async with asyncio.timeout(min(self.reader.timeout, 5.0)):
                    await client.logout()
        except Exception as exc:  # it ends anyway
            log.debug("IMAP %s: LOGOUT failed (%s)", self.reader.where, self._scrub(exc))
        finally:
            transport = client.protocol.transport
            if transport is not None:
                transport.close()

    # --- commands ----------------------------------------------------------------------------

    async def command(self, what: str, call: Awaitable[T], *, limit: float | None = 0) -> T:
        """``call``'s answer; ImapError on a timeout (``limit`` 0: the reader's timeout; None:
        only aioimaplib's own), a lost connection or a library error."""
        task = asyncio.ensure_future(call)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, return_when=asyncio.FIRST_COMPLETED,
                timeout=self.reader.timeout if limit == 0 else limit,
            )  # fmt: skip
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            try:
                return task.result()
            except aioimaplib.CommandTimeout:
                raise self.fail(
                    f"no answer to {what} in {self.reader.timeout:.0f} s", WHERE
                ) from None
            except (aioimaplib.AioImapException, OSError) as exc:
                raise self.fail(f"{what} failed", WHERE, exc) from None
        if lost in done:
            raise self.fail(f"the server closed the connection (during {what})", WHERE)
        raise self.fail(f"no answer to {what} in {self.reader.timeout:.0f} s", WHERE)

    async def ok(self, what: str, call: Awaitable[Any], check: str) -> Any:
        response = await self.command(what, call)
        if response.result != "OK":
            raise self.fail(f"{what} refused", check, wire.said(response))
        return response

    # --- sweeping ----------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Every message of the selected folder, in batches, until a search finds none that
        this sweep has not tried (mail that came meanwhile is taken too)."""
        tried: set[int] = set()
        stored = 0
        while True:
            waiting = [uid for uid in await self._uids() if uid not in tried][: wire.BATCH_MESSAGES]
            if not waiting:
                if stored:
                    log.info(
                        "IMAP %s: %d bounce(s) stored and moved to %r", self.reader.where,
                        stored, self.settings.done_folder,
                    )  # fmt: skip
                return stored
            sizes = await self._sizes(waiting)
            batch = wire.batch(waiting, sizes)
            tried.update(batch)
            tried.update(uid for uid in waiting if uid not in sizes)  # expunged meanwhile
            stored += await self._take(batch, sizes)

    async def _uids(self) -> list[int]:
        search = self.client.uid_search("ALL", charset=None)
        return wire.search((await self.ok("UID SEARCH", search, f"{VAR}FOLDER")).lines[:-1])

    async def _sizes(self, uids: Sequence[int]) -> dict[int, int]:
        fetch = self.client.uid("FETCH", wire.uid_set(uids), "(UID RFC822.SIZE)")
        return wire.sizes((await self.ok("UID FETCH", fetch, WHERE)).lines[:-1])

    async def _bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        fetch = self.client.uid("FETCH", wire.uid_set(uids), "(UID BODY.PEEK[])")
        response = await self.command("UID FETCH", fetch, limit=None)  # its timer: per piece
        if response.result != "OK":
            raise self.fail("UID FETCH refused", WHERE, wire.said(response))
        return wire.bodies(response.lines[:-1])

    async def _take(self, batch: Sequence[int], sizes: dict[int, int]) -> int:
        """Hand the batch's messages to ``accept_batch`` or ``accept``; move those stored, and
        those too large."""
        where, folder = self.reader.where, self.settings.folder
        large = [uid for uid in batch if sizes[uid] > MAX_MESSAGE]
        for uid in large:
            log.warning(
                "IMAP %s: message UID %d of %r is %.1f MiB, over %d MiB: not a bounce, moved "
                "unread to %r", where, uid, folder, sizes[uid] / 2**20, MAX_MESSAGE // 2**20,
                self.settings.done_folder,
            )  # fmt: skip
        small = [uid for uid in batch if uid not in large]
        bodies = await self._bodies(small) if small else {}
        for uid in small:
            if uid not in bodies:
                log.warning("IMAP %s: UID %d of %r not returned; left there", where, uid, folder)
        done = list(large) + await self._batch([(u, bodies[u]) for u in small if u in bodies])
        for uid in small:
            raw = bodies.get(uid)
            if raw is None or uid in done:
                continue
            try:
                await self.reader.accept(raw)
            except Exception as exc:
                log.warning(
                    "IMAP %s: message UID %d of %r not stored (%s: %s); left there for the "
                    "next sweep", where, uid, folder, type(exc).__name__, self._scrub(exc),
                    exc_info=not isinstance(exc, MailerError),
                )  # fmt: skip
                continue
            done.append(uid)
        if done:
            await self._move(sorted(done))
        return len(done) - len(large)

    async def _batch(self, fetched: list[tuple[int, bytes]]) -> list[int]:
        """The UIDs ``accept_batch`` stored: all of them, or none when it refused them."""
        if self.reader.accept_batch is None or len(fetched) < 2:
            return []
        try:
            await self.reader.accept_batch([raw for _, raw in fetched])
        except Exception as exc:
            log.warning(
                "IMAP %s: a batch of %d messages not stored (%s: %s); trying them one by one",
                self.reader.where, len(fetched), type(exc).__name__, self._scrub(exc),
                exc_info=not isinstance(exc, MailerError),
            )  # fmt: skip
            return []
        return [uid for uid, _ in fetched]

    async def _move(self, uids: Sequence[int]) -> None:
        """To the done folder: UID MOVE, else COPY, \\Deleted and (UID) EXPUNGE."""
        client, uid_set, check = self.client, wire.uid_set(uids), f"{VAR}DONE_FOLDER"
        target = wire.mailbox(self.settings.done_folder)
        if client.has_capability("MOVE"):
            await self.ok("UID MOVE", client.uid("MOVE", uid_set, target), check)
            return
        await self.ok("UID COPY", client.uid("COPY", uid_set, target), check)
        await self.ok(
            "UID STORE", client.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)"), check
        )
        if client.has_capability("UIDPLUS"):
            await self.ok("UID EXPUNGE", client.uid("EXPUNGE", uid_set), check)
        else:  # expunges every \Deleted message of the folder, as any client without UIDPLUS
            await self.ok("EXPUNGE", client.expunge(), check)

    # --- waiting -----------------------------------------------------------------------------

    async def idle(self) -> None:
        """IDLE until the server says new mail exists, or for ``idle_renew`` seconds."""
        client = self.client
        queue = client.protocol.idle_queue
        while not queue.empty():  # what a previous IDLE left
            queue.get_nowait()
        renew = self.reader.idle_renew
        self.idling = await self.command("IDLE", client.idle_start(timeout=renew))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + renew
        try:
            while (left := deadline - loop.time()) > 0:
                pushed = await self._pushed(queue, left)
                if pushed is None or pushed == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    return
                lines = [bytes(line) for line in pushed]
                if any(line.startswith(b"BYE") for line in lines):
                    raise self.fail("the server ended the session", WHERE, lines[-1].decode())
                if any(line.endswith((b" EXISTS", b" RECENT")) for line in lines):
                    return
        finally:
            await self._end_idle(client)

    async def _pushed(self, queue: asyncio.Queue[Any], left: float) -> Any:
        """What the server pushed during IDLE; None if nothing in ``left`` seconds."""
        get = asyncio.ensure_future(queue.get())
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {get, lost}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            get.cancel()
            lost.cancel()
        if get in done:
            return get.result()
        if lost in done:
            raise self.fail("the server closed the connection (during IDLE)", WHERE)
        return None

    async def _end_idle(self, client: Any) -> None:
        idling, self.idling = self.idling, None
        if idling is None or idling.done():
            return
        if self.lost.is_set():
            if client._idle_waiter is not None:  # aioimaplib's renewal timer
                client._idle_waiter.cancel()
            idling.cancel()
            return
        client.idle_done()  # DONE; IDLE's own answer follows
        await self.command("IDLE", idling)


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 60 else f"{value / 60:.0f} min"


__all__ = ["MAX_MESSAGE", "Accept", "AcceptBatch", "ImapError", "ImapReader"]
