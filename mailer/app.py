"""The daemon (``mailer run``): storage, transport, the dispatch loop, the web pages and the
webhooks' poster, until SIGTERM.

It owns the process's signals. On start it resumes every ``running`` send; then, every
``MAILER_SCHEDULER__SYNC_INTERVAL`` seconds, it runs the sends whose time has come and the
retries that are due. SIGTERM or SIGINT stops claiming work, lets the messages in flight
finish (up to ``MAILER_DELIVERY__SHUTDOWN_GRACE`` seconds), records their results and exits 0.

Entry-point layer: it composes the resources on one ``AsyncExitStack`` and names this
process's node (:func:`node_name`); it sends, schedules and serves nothing itself, and reads
the time only through the :data:`~mailer.clock.Clock` it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from mailer.clock import Clock, utc_now
from mailer.errors import ConfigError, MessageError, StorageError
from mailer.settings import SenderSettings, Settings, mask_url, require_working_links
from mailer.storage import Store, ensure_data_dir, head_revision, sending_lock
from mailer.tokens import Signer, load_signer

if TYPE_CHECKING:
    from mailer.message import Built
    from mailer.scheduler import Scheduler
    from mailer.transport import Transport
    from mailer.web.console.context import TestMail, TestResult

# Dispatch, the scheduler, the transport and the web server are imported by the functions
# that start them: a command that only reads or stores (`campaign create`, `status`...)
# starts in about a second less without them.

log = logging.getLogger("mailer.daemon")


async def prepare(settings: Settings, store: Store) -> str | None:
    """Check the data folder and the schema (upgrading it when configured); return revision."""
    ensure_data_dir(settings.paths.data_dir)
    if settings.database.auto_upgrade:
        before, after = await store.upgrade()
        if before != after:
            log.info("database upgraded from %s to %s", before or "empty", after)
        return after
    current, head = await store.revision(), head_revision()
    if current != head:
        raise StorageError(
            f"the database schema is at {current or 'nothing'} and this version needs {head}: "
            "run `mailer db upgrade` (or set MAILER_DATABASE__AUTO_UPGRADE=true)"
        )
    return current


def check_sending(settings: Settings) -> None:
    """What must hold before any message goes out, checked before anything starts: links
    that work (:func:`~mailer.settings.require_working_links`) and a DKIM key that loads.

    Raises :class:`ConfigError` naming the setting; ``mailer run`` and ``mailer send run``
    call it first, so a wrong key never leaves a send ``running`` with nothing sent.
    """
    require_working_links(settings)
    check_dkim_key(settings.sender)


def check_dkim_key(sender: SenderSettings) -> None:
    """Read the DKIM key file and sign a probe with it; :class:`ConfigError` if it cannot."""
    if sender.dkim_selector is None or sender.dkim_key_file is None:
        return
    path = sender.dkim_key_file
    where = f"MAILER_SENDER__DKIM_KEY_FILE: {path}"
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror})") from None
    from mailer.message import DkimSigner

    try:
        DkimSigner(
            selector=sender.dkim_selector,
            domain=sender.from_address.rpartition("@")[2],
            private_key=key,
        )
    except (MessageError, ValueError, TypeError) as exc:
        reason = str(exc).removeprefix("DKIM signing failed: ").splitlines()
        raise ConfigError(
            f"{where}: not a usable private key ({reason[0] if reason else 'unreadable'}); "
            "expected a PEM private key such as `openssl genrsa -out dkim.pem 2048` makes"
        ) from None


async def run(
    settings: Settings, *, stop: asyncio.Event | None = None, clock: Clock = utc_now
) -> None:
    """Run until ``stop`` is set or the process gets SIGTERM/SIGINT; ``clock`` is what dispatch
    and the lease check read the time from."""
    from mailer.dispatch import Engine
    from mailer.scheduler import Scheduler
    from mailer.transport import open_transport
    from mailer.web import WebServer, create_app

    check_sending(settings)
    stop = stop or asyncio.Event()
    async with AsyncExitStack() as stack:
        store = await _open(stack, settings, stop)
        stack.enter_context(sending_lock(store.engine))
        revision = await prepare(settings, store)
        await take_back_leases(store, clock=clock)
        transport = (
            f"smtp {settings.smtp.host}:{settings.smtp.port}"
            if settings.smtp.host
            else f"capture to {settings.paths.data_dir / 'outbox'}"
        )
        sender = await stack.enter_async_context(open_transport(settings))
        engine = Engine(settings, store, sender, node=node_name(), clock=clock)
        scheduler = await stack.enter_async_context(
            Scheduler(
                engine,
                sync_interval=settings.scheduler.sync_interval,
                grace=settings.scheduler.misfire_grace,
                newsletter_grace=settings.scheduler.newsletter_grace,
                concurrent=settings.scheduler.concurrent_sends,
            )
        )
        pages = "off (MAILER_WEB__ENABLED=false)"
        if settings.web.enabled:
            server = WebServer(
                create_app(
                    settings, store, signer=engine.signer, scheduler=scheduler,
                    on_send=scheduler.enqueue, test_mail=_test_mail(sender),
                ),
                settings,
            )  # fmt: skip
            pages = await server.start()
            stack.push_async_callback(server.stop)  # after the sends have drained
        pages += await _console_listener(
            stack, settings, store, on_send=scheduler.enqueue, test_mail=_test_mail(sender)
        )
        pages += await _bounces(stack, settings, store, signer=engine.signer, clock=clock)
        _webhooks(stack, settings, store, clock=clock)
        log.info(
            "mailer started: database %s (schema %s), transport %s, web pages %s; waiting for work",
            mask_url(settings.database_url),
            revision,
            transport,
            pages,
        )
        notify("READY=1")
        await stop.wait()
        notify("STOPPING=1")
        await _drain(scheduler, grace=settings.delivery.shutdown_grace)
    log.info("mailer stopped cleanly")


async def _drain(scheduler: Scheduler, *, grace: float) -> None:
    """Claim no new work and let the messages in flight finish: for up to ``grace`` seconds,
    or until a second SIGTERM/SIGINT, after which they are cut off (still queued)."""
    log.info("stop requested: no new work; finishing the messages in flight")
    scheduler.stop.set()
    loop = asyncio.get_running_loop()
    loop.remove_signal_handler(signal.SIGTERM)
    loop.remove_signal_handler(signal.SIGINT)
    second = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, second.set)
    waiter = asyncio.create_task(scheduler.wait_idle(grace))
    interrupt = asyncio.create_task(second.wait())
    done, _ = await asyncio.wait({waiter, interrupt}, return_when=asyncio.FIRST_COMPLETED)
    interrupt.cancel()
    if waiter not in done or not waiter.result():
        waiter.cancel()
        log.warning(
            "messages still in flight%s; cutting them off (they stay queued and go "
            "again at the next start)",
            " after a second signal" if second.is_set() else f" after {grace:.0f} s",
        )
        scheduler.cancel_dispatch()


async def serve_web(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """``mailer web``: the subscriber pages alone (no sending), until SIGTERM/SIGINT.

    Sign-ups are stored with their confirmation send; a daemon on the same database
    (``mailer run``) delivers it at its next sync.
    """
    from mailer.web import WebServer, create_app

    stop = stop or asyncio.Event()
    async with AsyncExitStack() as stack:
        store = await _open(stack, settings, stop)
        await prepare(settings, store)
        signer = load_signer(settings.secret_keys, settings.paths.data_dir)
        server = WebServer(create_app(settings, store, signer=signer), settings)
        url = await server.start()
        stack.push_async_callback(server.stop)
        url += await _console_listener(
            stack, settings, store, on_send=None, test_mail=_test_mail_opening(settings)
        )
        log.info("web pages on %s (links use %s)", url, settings.web.base_url)
        notify("READY=1")
        await stop.wait()
        notify("STOPPING=1")
    log.info("web pages stopped")


async def take_back_leases(store: Store, *, clock: Clock = utc_now) -> None:
    """Release the leases of the nodes of this machine that are gone (a crash, kill -9), so
    that a restart resumes their deliveries at once rather than when the leases expire."""
    host = socket.gethostname()
    for holder in await store.deliveries.lease_holders(now=clock()):
        name, _, pid = holder.rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        released = await store.deliveries.release(None, node=holder)
        log.info("took back %s deliveries leased by node %s, which is gone", released, holder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def notify(state: str) -> None:
    """sd_notify for systemd's Type=notify, in a few lines of stdlib (no-op elsewhere).

    NOTIFY_SOCKET is systemd's protocol, not a setting, so it is read here.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())


async def _open(stack: AsyncExitStack, settings: Settings, stop: asyncio.Event) -> Store:
    """SIGTERM and SIGINT set ``stop`` (until the stack closes); the store, opened."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stack.callback(_restore_signals, loop)
    return await stack.enter_async_context(Store.open(settings))


def _restore_signals(loop: asyncio.AbstractEventLoop) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)


M_ARENA_MAX = -8  # glibc's <malloc.h>


def cap_malloc_arenas() -> bool:
    """One malloc arena for the whole process (glibc), unless the operator set
    ``MALLOC_ARENA_MAX``; whether the cap is in place. glibc gives each thread that
    allocates an arena of its own (the database's threads, the pre-flight's, the render
    pool's), and each keeps what it freed: about 5 MiB of the daemon's peak. The threads
    allocate little and mostly hold the GIL, so they do not wait on one another for it."""
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not a glibc system
        glibc = None
    if "MALLOC_ARENA_MAX" in os.environ or not glibc:
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1))
    except (AttributeError, OSError):  # pragma: no cover - a libc without mallopt
        return False


def node_name() -> str:
    """This node's name (``host:pid``), the daemon's identity: who claims sends and holds
    leases."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def _console_listener(
    stack: AsyncExitStack,
    settings: Settings,
    store: Store,
    *,
    on_send: Callable[[int], None] | None,
    test_mail: TestMail,
) -> str:
    """Start the console's own listener when ``MAILER_CONSOLE__PORT`` is set; what to add to
    the start-up line."""
    from mailer.web import WebServer
    from mailer.web.app import create_console_app, own_console_listener

    if not settings.console.enabled:
        return "; console off (MAILER_CONSOLE__ENABLED=false)"
    if not own_console_listener(settings):
        return " (console on /admin/)" if settings.web.enabled else "; console off (web pages off)"
    console = settings.console
    assert console.port is not None
    listen = (
        console.host or "127.0.0.1",
        console.port,
        "MAILER_CONSOLE__HOST/MAILER_CONSOLE__PORT",
    )
    server = WebServer(
        create_console_app(settings, store, on_send=on_send, test_mail=test_mail),
        settings,
        listen=listen,
    )
    url = await server.start()
    stack.push_async_callback(server.stop)
    return f"; console on {url}/admin/"


async def _bounces(
    stack: AsyncExitStack, settings: Settings, store: Store, *, signer: Signer, clock: Clock
) -> str:
    """The ways bounces come in that the daemon runs: the SMTP listener when
    ``MAILER_BOUNCES__LISTEN`` is set, the IMAP mailbox when ``MAILER_BOUNCES__IMAP__HOST``
    is; and always the emptying of raw messages past ``MAILER_BOUNCES__KEEP_DAYS``. What to
    add to the start-up line."""
    from mailer.intake import Intake

    intake = Intake(store, settings, clock=clock, signer=signer)
    keeper = asyncio.create_task(intake.keep(), name="bounces-keep")
    stack.push_async_callback(_cancel, keeper)
    said = ""
    if settings.bounces.imap.host:
        from mailer.inbound.imap import ImapReader  # aioimaplib only where it is used

        async def mailbox(raw: bytes) -> None:
            await intake.message(raw, source="imap")

        async def mailboxes(raws: Sequence[bytes]) -> None:  # a fetch, in one transaction
            await intake.messages(raws, source="imap")

        reader = ImapReader(settings.bounces.imap, mailbox, accept_batch=mailboxes)
        task = asyncio.create_task(reader.run(), name="bounces-imap")
        stack.push_async_callback(_cancel, task)
        said += f"; bounces read from imap {reader.where}"
    if settings.bounces.listen is not None:
        from mailer.inbound.listener import BounceListener  # aiosmtpd likewise

        async def accept(raw: bytes, recipients: Sequence[str]) -> None:
            await intake.message(raw, source="smtp", envelope_to=recipients)

        listener = BounceListener(settings.bounces, accept)
        where = await listener.start()
        stack.push_async_callback(listener.stop)
        said += f"; bounces taken on smtp {where}"
    return said


def _webhooks(stack: AsyncExitStack, settings: Settings, store: Store, *, clock: Clock) -> None:
    """The poster of the outgoing webhooks (``mailer.outbox``), a task cancelled at shutdown:
    what it has in flight then keeps its lease and goes again at the next start."""
    from mailer.outbox import Poster

    poster = Poster(store, settings.webhooks, node=node_name(), clock=clock)
    task = asyncio.create_task(poster.run(), name="webhooks")
    stack.push_async_callback(_cancel, task)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Stop a background task; one that had failed is logged, not raised at shutdown."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("%s had stopped with an error", task.get_name())


def _test_mail(transport: Transport) -> TestMail:
    """How the console's test sends leave: through the daemon's own transport (its relay,
    its limits), one message each; the console never imports the transport itself."""
    from mailer.transport import Outcome
    from mailer.web.console.context import TestResult

    async def send(built: Built) -> TestResult:
        result = await transport.send(built)
        reply = f"{result.code or ''} {result.reply or ''}".strip()
        return TestResult(result.outcome == Outcome.SENT, reply)

    return send


def _test_mail_opening(settings: Settings) -> TestMail:
    """Test sends for ``mailer web`` (no daemon): a transport opened for each, checked as a
    send would be (:func:`check_sending`)."""
    from mailer.transport import open_transport

    async def send(built: Built) -> TestResult:
        check_sending(settings)
        async with open_transport(settings) as transport:
            return await _test_mail(transport)(built)

    return send
