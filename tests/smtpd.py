"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, in the test's own event loop.

It records every message it accepts and misbehaves on demand through a fault plan. Load the
fixtures with ``pytest_plugins = ["tests.smtpd"]`` (in ``tests/conftest.py``), then::

    async def test_refused(smtp_server: SmtpServer) -> None:  # plain SMTP, started
        smtp_server.plan.reply("RCPT", "550 5.1.1 No such user", recipient="gone@example.org")
        async with SmtpTransport(smtp_server.settings()) as transport:
            ...
        assert smtp_server.recipients() == ["a@example.org"]

    async def test_tls(smtp_factory: SmtpFactory) -> None:  # other variants
        server = await smtp_factory(security="starttls", auth=True, size_limit=10_000)
        server.settings(username=USER, password=PASSWORD)  # ca_file is filled in

The fault plan answers instead of the normal server. Rules are tried in the order added, the
first that matches answers, and ``times`` limits how often a rule fires::

    plan.reply("DATA", "421 4.7.0 Try again later", times=3)  # the first 3 messages get 421
    plan.reply("RCPT", "550 5.1.1 No such user", recipient="gone@example.org")
    plan.reply("RCPT", "451 4.3.0 Busy", fraction=0.1, seed=7)  # the same 10 % of addresses
    plan.reply("AUTH", "535 5.7.8 Bad credentials")
    plan.reply("CONNECT", "421 4.3.2 Too many connections")  # greeting, then hang up
    plan.drop("DATA")  # store the message, then hang up before the reply: a duplicate risk
    plan.drop("MAIL")  # hang up instead of answering MAIL
    plan.delay("DATA", 5.0)  # store the message, answer 250 after 5 s
    plan.hide("STARTTLS", "SMTPUTF8")  # leave extensions out of the EHLO reply
    plan.unsolicited("DATA", "554 5.0.0 Oops")  # answer 250, then write this line unasked

Commands a rule may name: CONNECT, EHLO, AUTH, MAIL, RCPT, DATA; ``recipient`` and
``fraction`` apply to RCPT and DATA (a DATA rule matches when any recipient does). A DATA
message is stored unless the rule's reply is a 4xx/5xx. A 421 reply closes the connection, as
real servers do. aiosmtplib tries each AUTH mechanism in turn (PLAIN, then LOGIN), so an AUTH
rule with ``times=1`` lets the second attempt through. ``stop()`` hangs up every client and closes the port; ``start()`` opens the
same port again ("the relay is down, then back").

What it records: ``received`` (one :class:`Received` per accepted message), ``commands`` (every
command verb, in order), ``connections`` (how many were opened), ``errors`` (exceptions
inside the server, e.g. a failed TLS handshake); ``recipients()`` and ``duplicates()`` count
deliveries per address; ``await wait_received(n)`` waits until n messages are stored.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pytest
import trustme
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from mailer.settings import SMTPSettings

HOST = "127.0.0.1"
USER = "mailer"
PASSWORD = "correct horse battery staple"
DEFAULT_SIZE_LIMIT = 33_554_432  # aiosmtpd's default, advertised as EHLO SIZE
RULE_COMMANDS = frozenset({"CONNECT", "EHLO", "AUTH", "MAIL", "RCPT", "DATA"})
Security = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class Received:
    """One message the server accepted (or stored before dropping the connection)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly as received, dot-unstuffed
    smtp_utf8: bool  # MAIL FROM carried SMTPUTF8
    mail_options: tuple[str, ...]  # e.g. ("SIZE=123", "BODY=8BITMIME")
    connection: int  # which connection (1, 2, ...) brought it
    login: str | None  # the AUTH user, if the client logged in
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)


@dataclass
class Rule:
    """One entry of the fault plan; see the module docstring."""

    command: str
    reply: str | None = None
    drop: bool = False
    delay: float = 0.0
    extra: str | None = None  # a line written right after the reply, unasked
    recipient: str | None = None
    fraction: float | None = None
    seed: int = 0
    times: int | None = None
    hits: int = 0

    def matches(self, recipients: Iterable[str]) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        addresses = [r.lower() for r in recipients]
        if self.recipient is not None and self.recipient.lower() not in addresses:
            return False
        return self.fraction is None or any(self.chooses(a) for a in addresses)

    def chooses(self, address: str) -> bool:
        """Whether ``address`` is in the fraction: fixed per address and seed, not per call."""
        assert self.fraction is not None
        return random.Random(f"{self.seed}:{address.lower()}").random() < self.fraction


class FaultPlan:
    """What the server does instead of answering normally."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.hidden: set[str] = set()

    def add(self, rule: Rule) -> Rule:
        rule.command = rule.command.upper()
        if rule.command not in RULE_COMMANDS:
            raise ValueError(f"rules apply to {sorted(RULE_COMMANDS)}, not {rule.command}")
        if rule.command not in {"RCPT", "DATA"} and (rule.recipient or rule.fraction):
            raise ValueError("recipient and fraction apply to RCPT and DATA rules only")
        self.rules.append(rule)
        return rule

    def reply(self, command: str, reply: str, **match: Any) -> Rule:
        """Answer ``command`` with ``reply`` (e.g. "451 4.3.0 Try later")."""
        return self.add(Rule(command, reply=reply, **match))

    def drop(self, command: str, **match: Any) -> Rule:
        """Hang up instead of answering (for DATA: after storing the message)."""
        return self.add(Rule(command, drop=True, **match))

    def delay(self, command: str, seconds: float, **match: Any) -> Rule:
        """Wait ``seconds`` before answering (normally, or with ``reply=``)."""
        return self.add(Rule(command, delay=seconds, **match))

    def unsolicited(self, command: str, line: str, **match: Any) -> Rule:
        """Answer ``command`` normally, then write ``line`` in the same packet, unasked: a
        relay whose reply stream is out of step with the commands (DATA only)."""
        return self.add(Rule(command, extra=line, **match))

    def hide(self, *extensions: str) -> None:
        """Leave EHLO keywords out (STARTTLS, SMTPUTF8, 8BITMIME, SIZE, AUTH)."""
        self.hidden.update(e.upper() for e in extensions)

    def clear(self) -> None:
        self.rules.clear()
        self.hidden.clear()

    def pick(self, command: str, recipients: Iterable[str] = ()) -> Rule | None:
        recipients = list(recipients)
        for rule in self.rules:
            if rule.command == command and rule.matches(recipients):
                rule.hits += 1
                return rule
        return None


class _Handler:
    """aiosmtpd hooks: apply the fault plan, else behave as aiosmtpd would, and record."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def act(self, smtpd: _SMTPD, rule: Rule) -> str | None:
        """Delay, drop or choose the reply of ``rule``; None: answer normally."""
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.drop:
            assert smtpd.transport is not None
            smtpd.transport.close()
            # connection_lost() cancels this handler task; nothing is answered.
            await asyncio.get_running_loop().create_future()
        if rule.reply is not None and rule.reply.startswith("421"):
            smtpd.close_after_reply = True
        return rule.reply

    async def handle_exception(self, error: Exception) -> str:
        """Keep errors (a failed TLS handshake...) in ``errors`` instead of the log."""
        self.owner.errors.append(error)
        return f"500 Error: ({type(error).__name__}) {error}"

    async def handle_EHLO(
        self,
        server: _SMTPD,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        rule = self.owner.plan.pick("EHLO")
        reply = await self.act(server, rule) if rule else None
        if reply is not None:
            return [reply]
        session.host_name = hostname
        hidden = self.owner.plan.hidden | (set() if self.owner.auth else {"AUTH"})
        kept = [r[4:] for r in responses if r[4:].split(" ")[0].upper() not in hidden]
        return [f"250-{line}" for line in kept[:-1]] + [f"250 {kept[-1]}"]

    async def handle_AUTH(
        self, server: _SMTPD, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        rule = self.owner.plan.pick("AUTH")
        reply = await self.act(server, rule) if rule else None
        return MISSING if reply is None else reply

    async def handle_MAIL(
        self,
        server: _SMTPD,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        rule = self.owner.plan.pick("MAIL")
        reply = await self.act(server, rule) if rule else None
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: _SMTPD,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        rule = self.owner.plan.pick("RCPT", [address])
        reply = await self.act(server, rule) if rule else None
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: _SMTPD, session: Session, envelope: Envelope) -> str:
        rule = self.owner.plan.pick("DATA", envelope.rcpt_tos)
        if rule is None or rule.reply is None or rule.reply.startswith("2"):
            self.owner.received.append(self._record(server, session, envelope))
            async with self.owner.arrived:
                self.owner.arrived.notify_all()
        reply = await self.act(server, rule) if rule else None
        if reply is None:
            reply = f"250 2.0.0 Ok: queued as {len(self.owner.received)}"
        if rule is not None and rule.extra is not None:
            reply += f"\r\n{rule.extra}"  # aiosmtpd writes both lines in one packet
        return reply

    @staticmethod
    def _record(server: _SMTPD, session: Session, envelope: Envelope) -> Received:
        content = envelope.original_content
        assert envelope.mail_from is not None
        assert content is not None
        transport = server.transport
        auth = session.auth_data
        return Received(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(content),
            smtp_utf8=envelope.smtp_utf8,
            mail_options=tuple(envelope.mail_options),
            connection=server.number,
            login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
        )


class _SMTPD(SMTP):
    """aiosmtpd's protocol, numbering connections, logging commands, obeying CONNECT rules."""

    def __init__(self, owner: SmtpServer, **kwargs: Any) -> None:
        super().__init__(owner.handler, **kwargs)
        self.owner = owner
        self.number = 0
        self.close_after_reply = False
        # aiosmtpd dispatches each verb through this dict (built in SMTP.__init__); wrapping
        # it is the one place that sees every command, before aiosmtpd's own checks.
        self._smtp_methods = {
            verb: self._logged(verb, method) for verb, method in self._smtp_methods.items()
        }

    def _logged(
        self, verb: str, method: Callable[[str], Coroutine[Any, Any, None]]
    ) -> Callable[[str], Coroutine[Any, Any, None]]:
        async def run(arg: str) -> None:
            self.owner.commands.append(verb)
            await method(arg)

        return run

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # a new connection, not the STARTTLS upgrade
            self.owner.connections += 1
            self.number = self.owner.connections
            self.owner.live.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner.live.discard(self)
        super().connection_lost(error)

    async def push(self, status: Any) -> None:
        await super().push(status)
        if self.close_after_reply and self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        rule = self.owner.plan.pick("CONNECT")
        reply = await self.owner.handler.act(self, rule) if rule else None
        if reply is not None:
            await self.push(reply)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA (trustme) and a server certificate for 127.0.0.1, ::1 and localhost."""

    ca: trustme.CA
    server: trustme.LeafCert
    ca_file: Path  # PEM, for MAILER_SMTP__CA_FILE

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        return context


@dataclass(eq=False)
class SmtpServer:
    """One test SMTP server; see the module docstring."""

    security: Security = "none"
    auth: bool = False  # offer AUTH PLAIN/LOGIN, accepting USER / PASSWORD
    auth_required: bool = False  # refuse MAIL with 530 until the client logged in
    size_limit: int | None = DEFAULT_SIZE_LIMIT
    smtputf8: bool = True
    certificates: Certificates | None = None
    host: str = HOST
    port: int = 0  # chosen by the system on the first start(), kept afterwards
    plan: FaultPlan = field(default_factory=FaultPlan)
    received: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    connections: int = 0
    errors: list[Exception] = field(default_factory=list)  # exceptions inside the server
    live: set[_SMTPD] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.security != "none" and self.certificates is None:
            raise ValueError("a TLS server needs certificates")
        self.handler = _Handler(self)
        self.arrived = asyncio.Condition()  # notified on each message stored
        self._server: asyncio.Server | None = None
        self._context = self.certificates.server_context() if self.certificates else None

    @property
    def ca_file(self) -> Path | None:
        return self.certificates.ca_file if self.certificates else None

    def settings(self, **overrides: Any) -> SMTPSettings:
        """SMTP settings pointing at this server; short timeouts for tests."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "ca_file": self.ca_file,
            "local_hostname": "client.test",
            "connect_timeout": 5.0,
            "timeout": 10.0,
        }
        return SMTPSettings.model_validate(values | overrides)

    def recipients(self) -> list[str]:
        """Every delivered recipient, once per delivery (a duplicate appears twice)."""
        return [r for message in self.received for r in message.rcpt_tos]

    def duplicates(self) -> dict[str, int]:
        return {r: n for r, n in Counter(self.recipients()).items() if n > 1}

    async def wait_received(self, count: int = 1) -> None:
        """Wait until at least ``count`` messages are stored; TimeoutError after 10 s."""
        async with asyncio.timeout(10), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)

    def _protocol(self) -> _SMTPD:
        with warnings.catch_warnings():
            # aiosmtpd warns when AUTH is required without STARTTLS; here that is either
            # implicit TLS (which it does not count) or a loopback test on purpose.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _SMTPD(
                self,
                hostname="mx.test",
                data_size_limit=self.size_limit,
                enable_SMTPUTF8=self.smtputf8,
                tls_context=self._context if self.security == "starttls" else None,
                auth_required=self.auth_required,
                auth_require_tls=self.security == "starttls",
                authenticator=self._authenticate if self.auth else None,
                loop=asyncio.get_running_loop(),
            )

    @staticmethod
    def _authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self.host,
            self.port,
            ssl=self._context if self.security == "tls" else None,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the port and hang up on every client, as a crashed relay would."""
        if self._server is None:
            return
        self._server.close()
        handlers = [p._handler_coroutine for p in self.live if p._handler_coroutine]
        for protocol in list(self.live):
            if protocol.transport is not None:
                protocol.transport.abort()
        await self._server.wait_closed()
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        self._server = None


class SmtpFactory(Protocol):
    async def __call__(
        self,
        *,
        security: Security = "none",
        auth: bool = False,
        auth_required: bool = False,
        size_limit: int | None = DEFAULT_SIZE_LIMIT,
        smtputf8: bool = True,
    ) -> SmtpServer: ...


@pytest.fixture(scope="session")
def smtp_certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "::1", "localhost")
    ca_file = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certificates(ca=ca, server=server, ca_file=ca_file)


@pytest.fixture
async def smtp_factory(smtp_certificates: Certificates) -> AsyncIterator[SmtpFactory]:
    """Start test SMTP servers of any variant; all are stopped after the test."""
    servers: list[SmtpServer] = []

    async def make(**options: Any) -> SmtpServer:
        server = SmtpServer(certificates=smtp_certificates, **options)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def smtp_server(smtp_factory: SmtpFactory) -> SmtpServer:
    """A started plain-SMTP test server (SMTPUTF8, 8BITMIME, SIZE; no AUTH, no TLS)."""
    return await smtp_factory()


__all__ = [
    "PASSWORD",
    "USER",
    "Certificates",
    "FaultPlan",
    "Received",
    "Rule",
    "SmtpFactory",
    "SmtpServer",
    "smtp_certificates",
    "smtp_factory",
    "smtp_server",
]
