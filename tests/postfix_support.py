"""A real Postfix for tests: Debian's, as an instance of its own in a temporary folder.

Issue 16's relay case needs a mail server that accepts a message, delivers it later and sends
the DSN of a refused recipient to the envelope sender, as a real relay does. This runs
``/usr/sbin/postfix -c DIR start`` with its own ``main.cf``/``master.cf`` (``config_directory``),
``queue_directory`` and ``data_directory`` under one folder in /tmp, on loopback ports chosen
free; the machine's own instance (/etc/postfix, port 25) is never read, started or touched.

What the instance does:

- its smtpd on ``127.0.0.1:relay.port`` accepts mail from 127.0.0.1 for any domain;
- every domain goes to ``next_hop`` (``relayhost = [127.0.0.1]:N``), except ``bounce_domain``,
  which ``transport_maps`` sends to ``bounce_hop`` (the mailer's inbound listener, or a test's
  stand-in), so a DSN to ``b+TOKEN@bounces.example.org`` comes back to the test;
- the queue is retried every second (``queue_run_delay``, ``minimal_backoff_time``,
  ``maximal_backoff_time``); ``queue_lifetime="0"`` makes a soft failure a DSN at its first
  attempt (``maximal_queue_lifetime``, ``bounce_queue_lifetime``);
- no DNS (``[ip]`` next hops, ``smtp_dns_support_level = disabled``, ``smtp_host_lookup =
  native``, no peer name lookup), IPv4 only, no local delivery;
- it logs to ``relay.log_file`` (``maillog_file`` through the ``postlog`` service), which
  :meth:`PostfixRelay.report` returns with the queue's listing for a failing test to print.

Postfix's master must run as root (its children run as ``mail_owner = postfix``); the tests do
(CI too). Without /usr/sbin/postfix, or not as root, :func:`require_postfix` skips, and fails
under ``CI=true``. A session fixture, with the next hop's and the listener's ports chosen
first so each test can start its servers on them::

    @pytest.fixture(scope="session")
    def relay() -> Iterator[PostfixRelay]:
        with postfix_relay(next_hop=("127.0.0.1", free_port()),
                           bounce_hop=("127.0.0.1", free_port())) as running:
            yield running
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from mailer.settings import SMTPSettings

POSTFIX = Path("/usr/sbin/postfix")
POSTQUEUE = Path("/usr/sbin/postqueue")
POSTSUPER = Path("/usr/sbin/postsuper")
HOST = "127.0.0.1"
BOUNCE_DOMAIN = "bounces.example.org"
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"
START_TIMEOUT = 30.0  # seconds for `postfix start` and the first 220 greeting
Hop = tuple[str, int]

# One line a service; chroot "n" everywhere (the queue folder holds no copy of /etc and /lib).
MASTER_CF = """\
{host}:{port} inet  n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def free_port() -> int:
    """A loopback port free now (the system's choice), for a server started later."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def require_postfix() -> None:
    """Skip (fail under CI) when this machine cannot run a Postfix instance of its own."""
    reason = None
    if not POSTFIX.exists():
        reason = "no /usr/sbin/postfix on this machine: apt-get install postfix"
    elif os.geteuid() != 0:
        reason = "Postfix's master runs as root only; these tests need root (CI runs as root)"
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must have it (.ci/run installs postfix)")
    pytest.skip(reason)


class PostfixError(RuntimeError):
    """The instance did not start, or did not stop."""


class PostfixRelay:
    """One Postfix instance in a temporary folder; see the module docstring."""

    def __init__(
        self,
        *,
        next_hop: Hop,
        bounce_hop: Hop,
        bounce_domain: str = BOUNCE_DOMAIN,
        queue_lifetime: str | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.next_hop = next_hop
        self.bounce_hop = bounce_hop
        self.bounce_domain = bounce_domain
        self.queue_lifetime = queue_lifetime
        self.overrides = dict(overrides or {})  # main.cf parameters of a test's own, last word
        self.host = HOST
        self.port = 0  # the smtpd's, chosen at start()
        # Postfix's children (user postfix) walk to the queue: the folder must be 0755, so not
        # pytest's tmp_path (under a 0700 folder); a short path keeps socket names short.
        self.base = Path(tempfile.mkdtemp(prefix="mailer-postfix-"))
        self.base.chmod(0o755)
        self.config_dir = self.base / "etc"
        self.queue_dir = self.base / "queue"  # root 0755; post-install makes its parts
        self.data_dir = self.base / "data"  # made by post-install, owned by postfix
        self.log_file = self.base / "maillog"
        self.config_dir.mkdir()
        self.queue_dir.mkdir()
        self.master_pid: int | None = None

    def main_cf(self) -> dict[str, str]:
        """Every main.cf parameter this instance sets, in order."""
        hop_host, hop_port = self.next_hop
        bounce_host, bounce_port = self.bounce_hop
        values = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": MAIL_OWNER,
            "setgid_group": SETGID_GROUP,
            "myhostname": "relay.test",
            "mydomain": "relay.test",
            "myorigin": "relay.test",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "local_transport": "error:5.1.1 no local delivery here",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_peername_lookup": "no",
            "relayhost": f"[{hop_host}]:{hop_port}",
            "transport_maps": f"inline:{{ {self.bounce_domain}=smtp:[{bounce_host}]:{bounce_port} }}",
            "smtp_helo_name": "relay.test",
            "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_connect_timeout": "5s",
            # a cached connection to a hop a test has stopped would defer the next message
            "smtp_connection_cache_on_demand": "no",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "0h",
            "notify_classes": "",  # no copies to a postmaster nobody reads
            "biff": "no",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.base),
        }
        if self.queue_lifetime is not None:
            values["maximal_queue_lifetime"] = self.queue_lifetime
            values["bounce_queue_lifetime"] = self.queue_lifetime
        return values | self.overrides

    def _write_config(self) -> None:
        lines = [f"{key} = {value}" for key, value in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        master = MASTER_CF.format(host=self.host, port=self.port)
        (self.config_dir / "master.cf").write_text(master)

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(POSTFIX), "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )

    def start(self) -> None:
        """Start the instance and wait for its smtpd's greeting; a port taken meanwhile (the
        free port is chosen before Postfix binds it) is tried again with another."""
        for attempt in range(3):
            self.port = free_port()
            self._write_config()
            ran = self._postfix("start")
            if ran.returncode == 0:
                break
            if "Address already in use" not in self.log() or attempt == 2:
                raise PostfixError(f"postfix start failed ({ran.returncode}):\n{self.report()}")
        self.master_pid = self._read_master_pid()
        self._wait_greeting()

    def _read_master_pid(self) -> int | None:
        with suppress(OSError, ValueError):
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        return None

    def _wait_greeting(self) -> None:
        """Until the smtpd answers 220 (master spawns it at the first connection)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with (
                    socket.create_connection((self.host, self.port), timeout=5) as conn,
                    conn.makefile("rb") as reader,
                ):
                    if reader.readline().startswith(b"220 "):
                        conn.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PostfixError(f"no 220 from {self.host}:{self.port}:\n{self.report()}")
            time.sleep(0.05)  # a poll interval, not a wait for something to happen

    def stop(self) -> None:
        """`postfix stop`, then SIGKILL to any process of this instance still there."""
        try:
            if self.master_pid is not None:
                self._postfix("stop")
        finally:
            self._kill_leftovers()
            self.master_pid = None

    def _kill_leftovers(self) -> None:
        """Kill, by pid, the processes that run on this instance's configuration (Postfix
        passes MAIL_CONFIG to every child), whichever their process group."""
        for _ in range(50):
            pids = self.processes()
            if not pids:
                return
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)  # a poll interval while the kernel reaps them
        raise PostfixError(f"processes of {self.config_dir} survived SIGKILL: {pids}")

    def processes(self) -> list[int]:
        """The live processes of this instance: master and its children."""
        mark = f"MAIL_CONFIG={self.config_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with suppress(OSError):
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":  # a zombie is dead already, waiting for its parent
                        found.append(int(entry.name))
        return found

    def settings(self, **overrides: Any) -> SMTPSettings:
        """The mailer's SMTP settings for sending through this instance."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": "none",
            "local_hostname": "mailer.test",
            "connect_timeout": 5.0,
            "timeout": 10.0,
        }
        return SMTPSettings.model_validate(values | overrides)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        """The instance's log so far."""
        with suppress(OSError):
            return self.log_file.read_text(errors="replace")
        return ""

    def queue(self) -> str:
        """`postqueue -p`: the messages still queued, with the reason of each deferral."""
        if self.master_pid is None:
            return "(not running)"
        ran = subprocess.run(
            [str(POSTQUEUE), "-c", str(self.config_dir), "-p"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return (ran.stdout + ran.stderr).strip()

    def clear(self) -> None:
        """`postsuper -d ALL`: forget every queued message (what a failed test left behind)."""
        subprocess.run(
            [str(POSTSUPER), "-c", str(self.config_dir), "-d", "ALL"],
            capture_output=True,
            timeout=30,
            check=True,
        )

    def report(self) -> str:
        """What a failing test prints: the log and the queue."""
        return f"--- {self.log_file}\n{self.log()}--- postqueue -p\n{self.queue()}\n"


@contextmanager
def postfix_relay(
    *,
    next_hop: Hop,
    bounce_hop: Hop,
    bounce_domain: str = BOUNCE_DOMAIN,
    queue_lifetime: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Iterator[PostfixRelay]:
    """A started instance, stopped and removed at the end, also when the test fails."""
    require_postfix()
    relay = PostfixRelay(
        next_hop=next_hop,
        bounce_hop=bounce_hop,
        bounce_domain=bounce_domain,
        queue_lifetime=queue_lifetime,
        overrides=overrides,
    )
    try:
        relay.start()
        yield relay
    finally:
        try:
            relay.stop()
        finally:
            relay.remove()


__all__ = [
    "BOUNCE_DOMAIN",
    "POSTFIX",
    "Hop",
    "PostfixError",
    "PostfixRelay",
    "free_port",
    "postfix_relay",
    "require_postfix",
]
