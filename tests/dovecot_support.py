"""A real Dovecot for tests: Debian's, as an instance of its own in a temporary folder.

Issue 16's second way in reads bounces from an IMAP mailbox; this runs ``/usr/sbin/dovecot -F
-c CONF`` with its own configuration (``base_dir``, ``state_dir``, log, Maildirs and
passwd-file under one folder in /tmp, an ``instance_name`` of its own), listening on loopback
ports chosen free; /etc/dovecot, ports 143 and 993 and the machine's own service are never
read, bound or touched.

What the instance offers:

- IMAP on ``port`` (plain text, STARTTLS offered) and ``tls_port`` (implicit TLS), with a
  certificate for 127.0.0.1 and localhost from a ``trustme`` CA (``ca``: trust it with
  ``ca.configure_trust(context)``);
- ``USERS`` accounts ``u1``... with the password ``PASSWORD`` (a quote, a backslash and a
  space in it, so that quoting is tested), each with its own Maildir: :meth:`user` hands each
  test one nobody else used;
- ``capabilities``: the post-login CAPABILITY list, to play an older server (no MOVE,
  UIDPLUS or IDLE); None: Dovecot's own (MOVE, UIDPLUS, IDLE...);
- ``auth_failure_delay = 0`` and no authentication penalty (anvil's, which would delay every
  login from 127.0.0.1 after a test's wrong password): a wrong password is refused within
  half a second (Dovecot answers its failures in batches).

The test's side of the mailbox (:meth:`append`, :meth:`messages`, :meth:`folders`,
:meth:`kick`) uses the standard library's ``imaplib`` and ``doveadm``, not the code under
test. Dovecot's master runs as root and its mail processes as ``nobody`` (its login and
internal processes as ``dovenull`` and ``dovecot``), or, for a user other than root, all as
that user. Without /usr/sbin/dovecot, :func:`require_dovecot` skips, and fails under
``CI=true``::

    @pytest.fixture(scope="session")
    def dovecot() -> Iterator[Dovecot]:
        with dovecot_server() as running:
            yield running
"""

from __future__ import annotations

import grp
import imaplib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailer.settings.bounces import ImapSettings

DOVECOT = Path("/usr/sbin/dovecot")
DOVEADM = Path("/usr/bin/doveadm")
HOST = "127.0.0.1"
USERS = 60
PASSWORD = 'se"cret\\ 7'  # a quote, a backslash and a space: quoting is tested
START_TIMEOUT = 30.0  # seconds for the master to listen and greet, however loaded the machine
LEGACY_CAPABILITIES = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+"  # no MOVE, IDLE
_instances = itertools.count(1)

CONFIG = """\
instance_name = {instance}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = {host}
ssl = yes
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
disable_plaintext_auth = no
auth_failure_delay = 0
auth_mechanisms = plain login
mail_location = maildir:{base}/mail/%u
first_valid_uid = 1
default_login_user = {login_user}
default_internal_user = {internal_user}
{internal_group}
{capabilities}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/mail/%u
}}
service imap-login {{
  {chroot}
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  {chroot}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def free_port() -> int:
    """A loopback port free now (the system's choice), for a server started later."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def require_dovecot() -> None:
    """Skip (fail under CI) when this machine has no Dovecot."""
    if DOVECOT.exists():
        return
    reason = "no /usr/sbin/dovecot on this machine: apt-get install dovecot-imapd"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must have it (.ci/run installs dovecot-imapd)")
    pytest.skip(reason)


class DovecotError(RuntimeError):
    """The instance did not start, or did not stop."""


class Dovecot:
    """One Dovecot instance in a temporary folder; see the module docstring."""

    def __init__(self, *, capabilities: str | None = None) -> None:
        self.capabilities = capabilities
        self.host = HOST
        self.port = 0  # plain text and STARTTLS, chosen at start()
        self.tls_port = 0  # implicit TLS
        self.instance = f"mailer-test-{os.getpid()}-{next(_instances)}"
        # the mail processes (nobody) walk to their Maildir: 0755, not pytest's 0700 tmp_path
        self.base = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
        self.base.chmod(0o755)
        self.config = self.base / "dovecot.conf"
        self.log_file = self.base / "dovecot.log"
        self.ca = trustme.CA()
        self.process: subprocess.Popen[bytes] | None = None
        self._users = (f"u{n}" for n in range(1, USERS + 1))

    def _accounts(self) -> dict[str, Any]:
        """Who runs what: root's master with Dovecot's users, or all as the current user."""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            return {
                "login_user": "dovenull", "internal_user": "dovecot", "internal_group": "",
                "chroot": "", "uid": nobody.pw_uid, "gid": nobody.pw_gid,
            }  # fmt: skip
        me, group = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
        return {
            "login_user": me, "internal_user": me,
            "internal_group": f"default_internal_group = {group}", "chroot": "chroot =",
            "uid": os.geteuid(), "gid": os.getegid(),
        }  # fmt: skip

    def _write(self) -> None:
        accounts = self._accounts()
        mail = self.base / "mail"
        mail.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(mail, accounts["uid"], accounts["gid"])
        cert = self.ca.issue_cert(HOST, "localhost")
        cert.private_key_pem.write_to_path(str(self.base / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.base / "cert.pem"))
        lines = [f"u{n}:{{PLAIN}}{PASSWORD}::::::" for n in range(1, USERS + 1)]
        (self.base / "passwd").write_text("\n".join(lines) + "\n")
        extra = f"imap_capability = {self.capabilities}" if self.capabilities else ""
        self.config.write_text(
            CONFIG.format(
                instance=self.instance,
                base=self.base,
                host=self.host,
                port=self.port,
                tls_port=self.tls_port,
                capabilities=extra,
                **accounts,
            )
        )
        if os.geteuid() == 0:
            (self.base / "key.pem").chmod(0o600)  # read by the config process (root)
            (self.base / "passwd").chmod(0o640)  # by the auth process (group dovecot)
            with suppress(KeyError):
                os.chown(self.base / "passwd", 0, grp.getgrnam("dovecot").gr_gid)

    def start(self) -> None:
        """Start the master in the foreground and wait for both listeners' greetings; a port
        taken meanwhile (chosen before Dovecot binds it) is tried again with others."""
        for attempt in range(3):
            self.port, self.tls_port = free_port(), free_port()
            self._write()
            with open(self.base / "master.err", "wb") as errors:  # the child keeps its copy
                self.process = subprocess.Popen(
                    [str(DOVECOT), "-F", "-c", str(self.config)],
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                )
            if self._wait_greetings():
                return
            self.stop()
            if "Address already in use" not in self.report() or attempt == 2:
                raise DovecotError(f"dovecot did not start:\n{self.report()}")

    def _wait_greetings(self) -> bool:
        """Until the plain port greets with ``* OK``; False if the master exited first."""
        deadline = time.monotonic() + START_TIMEOUT
        while self.process is not None and self.process.poll() is None:
            try:
                with socket.create_connection((self.host, self.port), timeout=5) as conn:
                    if conn.makefile("rb").readline().startswith(b"* OK"):
                        return True
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DovecotError(f"no greeting from {self.host}:{self.port}:\n{self.report()}")
            time.sleep(0.05)  # a poll interval, not a wait for something to happen
        return False

    def stop(self) -> None:
        """SIGKILL to the master, then to its children still there (they leave once they see
        the master gone). SIGTERM would take a second (the master waits for its children),
        twice a session, for nothing worth keeping."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=15)
        for _ in range(50):
            pids = self.processes()
            if not pids:
                return
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)  # a poll interval while the kernel reaps them
        raise DovecotError(f"processes of {self.instance} survived SIGKILL: {pids}")

    def processes(self) -> list[int]:
        """The live processes of this instance (their titles are ``dovecot-INSTANCE/...``)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with suppress(OSError):
                title = (entry / "cmdline").read_bytes()
                if title.startswith(f"dovecot-{self.instance}/".encode()) or (
                    str(self.config).encode() in title.split(b"\0")
                ):
                    found.append(int(entry.name))
        return found

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def report(self) -> str:
        """What a failing test prints: the master's errors and the instance's log."""
        parts = []
        for path in (self.base / "master.err", self.log_file):
            with suppress(OSError):
                parts.append(f"--- {path}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def log(self) -> str:
        with suppress(OSError):
            return self.log_file.read_text(errors="replace")
        return ""

    # --- a test's side of the mailbox --------------------------------------------------------

    def user(self) -> str:
        """An account no other test of the session used (empty Maildir, INBOX only)."""
        try:
            return next(self._users)
        except StopIteration:
            raise DovecotError(f"more than {USERS} tests used this instance: raise USERS") from None

    def settings(self, user: str, **overrides: Any) -> ImapSettings:
        """The mailer's IMAP settings for ``user`` on the plain port (security none)."""
        values: dict[str, Any] = {
            "host": self.host, "port": self.port, "security": "none", "user": user,
            "password": PASSWORD,
        }  # fmt: skip
        return ImapSettings.model_validate(values | overrides)

    @contextmanager
    def session(self, user: str) -> Iterator[imaplib.IMAP4]:
        imap = imaplib.IMAP4(self.host, self.port, timeout=30)
        try:
            imap.login(user, PASSWORD)
            yield imap
        finally:
            with suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def append(self, user: str, *messages: bytes, folder: str = "INBOX") -> None:
        with self.session(user) as imap:
            for raw in messages:
                kind, data = imap.append(folder, None, None, raw)
                assert kind == "OK", data

    def messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """The messages of ``folder`` (its name as on the wire), oldest first; [] if none."""
        with self.session(user) as imap:
            kind, _ = imap.select(folder, readonly=True)
            if kind != "OK":
                return []
            kind, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
            assert kind == "OK", data
            return [bytes(item[1]) for item in data if isinstance(item, tuple)]

    def flags(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Each message's FLAGS response, oldest first."""
        with self.session(user) as imap:
            imap.select(folder, readonly=True)
            _, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            return [item for item in data if isinstance(item, bytes)]

    def folders(self, user: str) -> list[str]:
        """The user's folder names as on the wire (modified UTF-7)."""
        with self.session(user) as imap:
            kind, data = imap.list()
            assert kind == "OK", data
            names = []
            for line in data:
                assert isinstance(line, bytes)
                name = line.decode().rsplit(' "." ', 1)[1]
                names.append(name[1:-1] if name.startswith('"') else name)
            return sorted(names)

    def kick(self, user: str) -> str:
        """``doveadm kick``: end the user's IMAP sessions, as a server restart does; what it
        said (it fails when the user has no session)."""
        ran = subprocess.run(
            [str(DOVEADM), "-c", str(self.config), "kick", user],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return f"exit {ran.returncode}: {ran.stdout}{ran.stderr}".strip()


@contextmanager
def dovecot_server(*, capabilities: str | None = None) -> Iterator[Dovecot]:
    """A started instance, stopped and removed at the end, also when the test fails."""
    require_dovecot()
    server = Dovecot(capabilities=capabilities)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.remove()


__all__ = [
    "DOVECOT",
    "HOST",
    "LEGACY_CAPABILITIES",
    "PASSWORD",
    "Dovecot",
    "DovecotError",
    "dovecot_server",
    "free_port",
    "require_dovecot",
]
