"""Benchmark of sending: a real send from SQLite through the SMTP pool into Postfix's smtp-sink.

Everything runs on loopback against Postfix's ``smtp-sink`` (it discards what it receives;
aiosmtpd is not used: it caps near 1,000 msg/s and would hide the differences). Four
measurements, interleaved in each repetition (ceiling, transport, end to end, baseline) so
that the noise of a shared machine spreads evenly, each against a freshly started sink:

1. ceiling: ``smtp-source -s 10 -d`` (10 reused sessions) sends our message, built once, as
   fast as the sink takes it;
2. transport only: that same message (one ``Built``, a different recipient each time) through
   ``SmtpTransport`` with ``pool_size`` 10 and 20 concurrent tasks, with PIPELINING (MAIL,
   RCPT and DATA in one write: smtp-sink offers it) and without (one command at a time);
3. end to end: ``Engine.run_send`` of a newsletter (the ~20 KB French newsletter of
   ``render_message.py``) to ``--recipients`` subscribers imported from a generated CSV into
   a fresh SQLite database, with ``SmtpTransport`` (pool 10);
4. baseline: what a user might write by hand: plain Jinja2 with the same templates,
   ``email.message.EmailMessage`` per recipient and ONE ``smtplib.SMTP`` connection, in turn.

``--mode daemon`` (in the default run too, after those) measures what an operator sees, per
message size (``--size`` KB, default 20; ``--sizes 10,20,50``) and per
``MAILER_DELIVERY__RENDER_WORKERS`` value (``--workers``, default 1 and 2), interleaved in each
repetition against a freshly started sink:

5. ceiling: ``smtp-source -s 20 -d`` with that size's message;
6. ``Engine.run_send`` of the send below, as in 3, from a copy of its database;
7. ``mailer run``: a data folder made once per size with the CLI (a CSV of ``--recipients``
   subscribers imported by ``mailer init``; an announcement due now, whose Markdown body is
   chosen to make a message of the size as the send builds it, by ``mailer campaign
   create``), copied fresh for each run; the daemon started as a subprocess with
   MAILER_SMTP__HOST/PORT at the sink (web pages on, on a free port), the clock running from
   its start (Popen) to the sink's last message (its ``-c`` counter), then SIGTERM once it
   has logged the send's end. Its processes are read in ``/proc`` every 0.1 s: the peak RSS
   (VmHWM) and CPU (utime + stime) of the main process, of the render workers (the children
   of multiprocessing's fork server; those it reaped are in its cutime) and of the fork
   server. The report adds the CPU per message of each and the rate more cores would give.

Every measurement runs in its own child process (CPU time and peak RSS are its own); the
parent uses the standard library only and stays small, because on Linux a child's
``ru_maxrss`` starts at its parent's high-water mark. Every message must be accepted: the
sink's own counter (``-c``) and the client's results are both checked. Figures are printed,
never asserted; a failed check exits with status 1.

``smtp-sink`` and ``smtp-source`` come from Debian's ``postfix`` package: when they are not
found, the package is downloaded with ``apt-get download`` and unpacked with ``dpkg -x`` into
a cache folder (Postfix itself is never installed, configured or started); if that fails,
``apt-get install postfix`` is the fallback (and a Postfix it starts is stopped).

    .venv/bin/python bench/send.py [--quick] [--recipients 20000] [--repetitions 5]
                                   [--memory-check] [--profile] [--seed 1]
                                   [--mode all|engine|daemon] [--sizes 10,20,50]
                                   [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import glob
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POOL = 10  # SMTP connections of the mailer, and sessions of smtp-source
TASKS = 2 * POOL  # concurrent senders in the transport-only measurement
LIST_SLUG = "bench-news"
LIST_TITLE = "Chercheurs du réseau CRI-IMIDIATE"
SENDER_NAME = "Réseau CRI-IMIDIATE"
SENDER_ADDRESS = "news@cri-imidiate.example.org"
DOMAIN = "cri-imidiate.example.org"
BASE_URL = "https://lists.example.org"
SUBJECT = "La lettre du réseau CRI-IMIDIATE — janvier 2024"
CAMPAIGN = "lettre-janvier-2024"
SECRET = "bench-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"  # noqa: S105 - signs fictional links
CHILD_TIMEOUT = 3600  # seconds: one end-to-end run of 100,000 on a slow machine
TARGETS = {"ratio": 0.15, "stretch": 0.22, "baseline": 3.0, "cpu_ms": 1.2, "mib": 100.0}
CEILING_SPREAD = 0.15  # the ceiling moving more than this between repetitions: a noisy run
DAEMON_CAMPAIGN = "annonce-bench"  # the daemon mode's announcement, due now
DAEMON_SUBJECT = "Les travaux du réseau CRI-IMIDIATE cette année"
CEILING_SESSIONS = 2 * POOL  # smtp-source sessions of the daemon mode's ceiling
DAEMON_TARGETS = {"daemon": 0.15, "stretch": 0.22, "engine": 0.20, "mib": 100.0}
SAMPLE_EVERY = 0.1  # seconds between two looks at the daemon's processes in /proc

# --- small helpers (parent and children) -------------------------------------------------


def _maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --- smtp-sink and smtp-source ------------------------------------------------------------


class ToolError(Exception):
    pass


@dataclass
class Tools:
    sink: Path
    source: Path
    env: dict[str, str]
    how: str


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mailer-bench" / "postfix"


def _tools_in(root: Path, how: str) -> Tools:
    """smtp-sink/smtp-source of an unpacked package tree, with its libraries on the path."""
    libs = [root / "usr" / "lib" / "postfix"]
    for pattern in ("usr/lib/*-linux-gnu", "lib/*-linux-gnu"):
        libs += [Path(p) for p in sorted(glob.glob(str(root / pattern)))]
    paths = [str(p) for p in libs if p.is_dir()]
    if os.environ.get("LD_LIBRARY_PATH"):
        paths.append(os.environ["LD_LIBRARY_PATH"])
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(paths)}
    return Tools(root / "usr/sbin/smtp-sink", root / "usr/sbin/smtp-source", env, how)


def _missing_libraries(tools: Tools) -> list[str]:
    """Shared libraries ``ldd`` cannot find for the two programs (empty: they can run)."""
    missing: list[str] = []
    for program in (tools.sink, tools.source):
        if not program.is_file():
            return [f"{program} (no such file)"]
        done = subprocess.run(
            ["ldd", str(program)], env=tools.env, capture_output=True, text=True, check=False
        )
        missing += [
            line.split("=>")[0].strip()
            for line in done.stdout.splitlines()
            if "not found" in line and line.split("=>")[0].strip() not in missing
        ]
    return missing


def _privileged(command: list[str]) -> list[str]:
    return command if os.geteuid() == 0 else ["sudo", "-n", *command]


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def _apt_download(packages: list[str], folder: Path, say: Callable[[str], None]) -> None:
    done = _run(["apt-get", "download", *packages], cwd=folder)
    if done.returncode != 0:  # no package lists yet, or stale ones
        say("  apt-get download failed; running apt-get update first")
        update = _run(_privileged(["apt-get", "update"]))
        if update.returncode != 0:
            raise ToolError(f"apt-get update failed: {update.stderr.strip()[-300:]}")
        done = _run(["apt-get", "download", *packages], cwd=folder)
    if done.returncode != 0:
        raise ToolError(f"apt-get download {' '.join(packages)}: {done.stderr.strip()[-300:]}")


def _depends(deb: Path) -> list[str]:
    """The package names in a .deb's Depends (first of each alternative, versions dropped)."""
    field_ = _run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    names = []
    for part in field_.split(","):
        name = part.split("|")[0].strip().split(" ")[0].split(":")[0]
        if name:
            names.append(name)
    return names


def _extract(cache: Path, say: Callable[[str], None]) -> Tools:
    """apt-get download postfix, dpkg -x into ``cache`` (and its libraries if need be)."""
    say("  downloading Debian's postfix package (apt-get download; nothing is installed)")
    with tempfile.TemporaryDirectory(prefix="mailer-bench-deb-") as tmp:
        folder = Path(tmp)
        _apt_download(["postfix"], folder, say)
        debs = sorted(folder.glob("postfix_*.deb"))
        if not debs:
            raise ToolError("apt-get download postfix left no postfix_*.deb")
        deb = debs[0]
        version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
        staging = cache.with_name(cache.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for package in [deb]:
            unpack = _run(["dpkg", "-x", str(package), str(staging)])
            if unpack.returncode != 0:
                raise ToolError(f"dpkg -x {package.name}: {unpack.stderr.strip()[-300:]}")
        note = f"Postfix {version}: smtp-sink and smtp-source unpacked from {deb.name}"
        missing = _missing_libraries(_tools_in(staging, note))
        if missing:
            libraries = [p for p in _depends(deb) if p.startswith("lib") and p != "libc6"]
            say(
                f"  missing libraries {', '.join(missing)}: unpacking postfix's library "
                f"dependencies too ({', '.join(libraries)})"
            )
            _apt_download(libraries, folder, say)
            for package in sorted(folder.glob("*.deb")):
                if package != deb:
                    _run(["dpkg", "-x", str(package), str(staging)])
            missing = _missing_libraries(_tools_in(staging, note))
            if missing:
                raise ToolError(f"still missing after unpacking: {', '.join(missing)}")
            note += f" (with {len(libraries)} library packages)"
        (staging / "VERSION").write_text(note + "\n", encoding="utf-8")
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)
    return _tools_in(cache, f"{note}, into {cache}")


def _install(say: Callable[[str], None]) -> Tools:
    """The fallback: apt-get install postfix ("No configuration"), and stop it if it started."""
    say("  installing the postfix package (apt-get install; fallback)")
    _run(
        _privileged(["debconf-set-selections"]),
        input="postfix postfix/main_mailer_type select No configuration\n",
    )
    done = _run(
        _privileged(
            [
                "env", "DEBIAN_FRONTEND=noninteractive",
                "apt-get", "install", "-y", "--no-install-recommends", "postfix",
            ]
        )
    )  # fmt: skip
    if done.returncode != 0:
        raise ToolError(f"apt-get install postfix failed: {done.stderr.strip()[-300:]}")
    how = "the postfix package, installed with apt-get (fallback)"
    if _run(_privileged(["/usr/sbin/postfix", "status"])).returncode == 0:
        _run(_privileged(["/usr/sbin/postfix", "stop"]))
        how += "; the Postfix service it started was stopped"
    return Tools(Path("/usr/sbin/smtp-sink"), Path("/usr/sbin/smtp-source"), dict(os.environ), how)


def find_tools(given: str | None, say: Callable[[str], None]) -> Tools:
    """smtp-sink and smtp-source: given, cached, installed, unpacked now, or installed now."""
    if given:
        folder = Path(given)
        if not (folder / "smtp-sink").is_file() or not (folder / "smtp-source").is_file():
            raise ToolError(f"--tools {folder}: no smtp-sink and smtp-source there")
        tools = Tools(
            folder / "smtp-sink", folder / "smtp-source", dict(os.environ), f"--tools {folder}"
        )
        if _missing_libraries(tools):
            tree = folder.parent.parent  # .../usr/sbin -> an unpacked package tree
            tools = _tools_in(tree, f"--tools {folder}")
        missing = _missing_libraries(tools)
        if missing:
            raise ToolError(f"--tools {folder}: cannot run ({', '.join(missing)})")
        return tools
    cache = _cache_dir()
    version = cache / "VERSION"
    if version.is_file():
        tools = _tools_in(
            cache, f"{version.read_text(encoding='utf-8').strip()}, cached in {cache}"
        )
        if not _missing_libraries(tools):
            return tools
        say(f"  the cached tools in {cache} cannot run; unpacking again")
    installed = Tools(
        Path("/usr/sbin/smtp-sink"), Path("/usr/sbin/smtp-source"), dict(os.environ), ""
    )
    if installed.sink.is_file() and not _missing_libraries(installed):
        installed.how = "the installed Postfix (/usr/sbin)"
        return installed
    try:
        return _extract(cache, say)
    except (ToolError, OSError) as exc:
        say(f"  unpacking the package failed ({exc})")
    return _install(say)


class Sink:
    """One smtp-sink on 127.0.0.1 (a free port), counting with -c; stopped on exit."""

    def __init__(self, tools: Tools, folder: Path) -> None:
        self.tools = tools
        self.folder = folder
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.output = folder / "sink.out"

    def __enter__(self) -> Sink:
        self.port = _free_port()
        self.output = self.folder / f"sink-{self.port}.out"
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # required when root
        command = [str(self.tools.sink), "-c", *user, f"127.0.0.1:{self.port}", "1024"]
        with self.output.open("wb") as out, (self.folder / "sink.err").open("wb") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err, env=self.tools.env)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                error = (self.folder / "sink.err").read_text(errors="replace").strip()
                raise ToolError(f"smtp-sink exited at once ({self.process.returncode}): {error}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise ToolError(f"smtp-sink does not listen on port {self.port}") from None
                time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.unlink(missing_ok=True)

    def cpu(self) -> float | None:
        """The sink's CPU seconds so far (Linux /proc), None elsewhere."""
        assert self.process is not None
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def count(self) -> int:
        """Messages the sink received so far (its last ``mesg=`` counter)."""
        with self.output.open("rb") as out:
            out.seek(max(0, self.output.stat().st_size - 512))
            found = re.findall(rb"mesg=(\d+)", out.read())
        return int(found[-1]) if found else 0

    def messages(self, expected: int, wait: float = 5.0) -> int:
        """Messages the sink received (its last ``mesg=`` counter), waiting for ``expected``."""
        deadline = time.monotonic() + wait
        while True:
            count = self.count()
            if count >= expected or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


# --- the children: one measurement each ----------------------------------------------------


def _settings(
    work: Path,
    port: int = 25,
    database: Path | None = None,
    render_workers: int | str | None = None,
) -> Any:
    from mailer.settings import Settings

    values: dict[str, Any] = {
        "smtp": {
            "host": "127.0.0.1", "port": port, "security": "none", "pool_size": POOL,
            "local_hostname": "bench.example.org",
        },
        "sender": {"from_address": SENDER_ADDRESS, "from_name": SENDER_NAME, "domain": DOMAIN},
        "web": {"base_url": BASE_URL},
        "paths": {
            "data_dir": work / "data", "lists_dir": work / "lists",
            "templates_dir": ROOT / "templates",
        },
        "secret_keys": [SECRET],
    }  # fmt: skip
    if database is not None:
        values["database"] = {"url": f"sqlite+aiosqlite:///{database}"}
    if render_workers is not None:
        values["delivery"] = {"render_workers": render_workers}
    return Settings.model_validate(values)


def _recipient_rows(count: int, seed: int) -> Iterator[tuple[str, str, str]]:
    """(email, name, locale) of ``count`` distinct fictional subscribers; about 60 % fr,
    30 % en, 10 % without a locale (the list's: fr). Names from render_message.py."""
    from render_message import FIRST_NAMES, LAST_NAMES, _ascii

    rng = random.Random(seed)
    locales = ("fr",) * 6 + ("en",) * 3 + ("",)
    for number in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        domain = rng.choice(("example.org", "example.net", "univ-exemple.fr"))
        email = f"{_ascii(first)}.{_ascii(last)}{number}@{domain}"
        yield email, f"{first} {last}", rng.choice(locales)


def _write_list(lists: Path, count: int, seed: int) -> Path:
    """The list's CSV of ``count`` subscribers and its settings file, in ``lists``."""
    lists.mkdir(parents=True, exist_ok=True)
    csv_path = lists / f"{LIST_SLUG}.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("email", "name", "locale"))
        writer.writerows(_recipient_rows(count, seed))
    (lists / f"{LIST_SLUG}.toml").write_text(
        f'title = "{LIST_TITLE}"\ndefault_locale = "fr"\n', encoding="utf-8"
    )
    return csv_path


async def child_setup(work: Path, count: int, seed: int) -> dict[str, Any]:
    """CSV, database (imported list, saved campaign, created send), the reference message."""
    from render_message import newsletter_body

    from mailer.compose import make_composer
    from mailer.lists import import_file
    from mailer.models import Content, SendInfo
    from mailer.render import Renderer
    from mailer.storage import Store
    from mailer.tokens import Signer

    csv_path = _write_list(work / "lists", count, seed)
    body = newsletter_body(seed)
    (work / "body.md").write_text(body, encoding="utf-8")
    database = work / "template.sqlite3"
    settings = _settings(work, database=database)
    now = datetime.now(UTC)
    start = time.perf_counter()
    async with Store.open(settings) as store:
        await store.upgrade()
        report = await import_file(store, csv_path, now=now)
        imported = time.perf_counter() - start
        content = Content(name=CAMPAIGN, kind="newsletter", subject=SUBJECT, body=body)
        campaign = await store.campaigns.save(
            content, list_slugs=[LIST_SLUG], sender_name=SENDER_NAME,
            sender_address=SENDER_ADDRESS, event=None, now=now,
        )  # fmt: skip
        send_id, _ = await store.sends.create(
            campaign, key="bench", action="newsletter", due_at=now, now=now
        )
        spec = await store.sends.spec(send_id)
        first = None
        async for recipient in store.lists.recipients(LIST_SLUG, limit=1):
            first = recipient
        assert first is not None
    # The message as the send builds it for smtp-sink (which offers 8BITMIME).
    composer = make_composer(
        settings,
        renderer=Renderer(settings.paths.templates_dir),
        signer=Signer([SECRET]),
        send=SendInfo(
            content=spec.content, list=spec.lists[0], sender_name=SENDER_NAME,
            sender_address=SENDER_ADDRESS, action=spec.action, now=now, event=None,
        ),
        send_id=send_id,
        trace=f"c{campaign}/bench",
        eight_bit=True,
    )  # fmt: skip
    composed = composer.compose(first, date=now)
    data = composed.message.data
    (work / "message.eml").write_bytes(data)  # CRLF, as the transport sends it
    (work / "message-lf.eml").write_bytes(data.replace(b"\r\n", b"\n"))  # for smtp-source -F
    return {
        "send_id": send_id,
        "rows": report.rows,
        "added": report.tally.added,
        "rejected": report.rejected_count,
        "import_seconds": imported,
        "message_bytes": len(data),
        "html_chars": len(composed.rendered.html),
        "text_chars": len(composed.rendered.text),
        "encodings": sorted(
            {m.decode() for m in re.findall(rb"Content-Transfer-Encoding: (\S+)", data)}
        ),
        "message_id": composed.message.message_id,
        "body_bytes": len(body.encode()),
        "batch_size": settings.delivery.batch_size,
        "record_batch": settings.delivery.record_batch,
        "csv_bytes": csv_path.stat().st_size,
    }


async def child_transport(
    work: Path, port: int, count: int, pipelining: bool = True
) -> dict[str, Any]:
    """The pre-built message through SmtpTransport (pool 10), TASKS concurrent senders;
    ``pipelining=False``: one command at a time, though the sink offers PIPELINING."""
    import dataclasses

    from mailer.message import Built
    from mailer.transport import FastData, Outcome, SmtpTransport

    built = Built(
        data=(work / "message.eml").read_bytes(), sender=SENDER_ADDRESS, recipient="",
        message_id=f"<bench.transport@{DOMAIN}>", smtputf8=False, eight_bit=True,
    )  # fmt: skip
    settings = _settings(work, port)
    numbers = iter(range(count))
    outcomes: dict[str, int] = {}
    data = FastData(pipelining=pipelining)
    async with SmtpTransport(settings.smtp, fast_data=data) as transport:

        async def sender() -> None:
            for number in numbers:  # shared iterator: each number is taken once
                message = dataclasses.replace(built, recipient=f"reader{number}@example.org")
                result = await transport.send(message)
                outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1

        gc.collect()
        baseline = _maxrss_kib()
        cpu0, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(TASKS)))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    if data.pipelined != (count if pipelining else 0):
        raise SystemExit(f"{data.pipelined:,} of {count:,} transactions pipelined")
    return {
        "messages": count,
        "sent": outcomes.get(Outcome.SENT.value, 0),
        "outcomes": outcomes,
        "seconds": seconds,
        "cpu": cpu,
        "baseline_kib": baseline,
        "peak_kib": _maxrss_kib(),
    }


def _copy_database(template: Path, work: Path) -> Path:
    copy = work / f"run-{os.getpid()}.sqlite3"
    shutil.copyfile(template, copy)
    return copy


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _time_phases(engine: Any) -> dict[str, list[float]]:
    """Wrap the engine's pre-flight and sending pass to time them (wall, CPU)."""
    phases: dict[str, list[float]] = {}
    for name, attribute in (("preflight", "_preflight"), ("pass", "_pass")):
        original = getattr(engine, attribute, None)
        if original is None:
            continue
        slot = phases.setdefault(name, [0.0, 0.0])

        async def timed(
            *args: Any, _original: Any = original, _slot: list[float] = slot, **kwargs: Any
        ) -> Any:
            cpu0, start = time.process_time(), time.perf_counter()
            try:
                return await _original(*args, **kwargs)
            finally:
                _slot[0] += time.perf_counter() - start
                _slot[1] += time.process_time() - cpu0

        setattr(engine, attribute, timed)
    return phases


def _profile_table(profiler: Any, sort: str, limit: int) -> list[str]:
    """The top ``limit`` functions of a cProfile run, short names, by cumtime or tottime."""
    import pstats

    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.items():
        where = filename
        for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
            if marker in where:
                where = where.split(marker, 1)[1]
        where = where.removeprefix(".11/").removeprefix(".12/").removeprefix(".13/")
        name = f"{function} ({where}:{line})" if line else function
        rows.append((own if sort == "tottime" else cumulative, own, cumulative, calls, name))
    rows.sort(reverse=True)
    out = [f"    {'tottime s':>9} {'cumtime s':>9} {'calls':>9}  function"]
    for _, own, cumulative, calls, name in rows[:limit]:
        out.append(f"    {own:9.2f} {cumulative:9.2f} {calls:9,d}  {name[:110]}")
    return out


def _stop_forkserver() -> None:
    """Stop multiprocessing's fork server, so that it and the render workers it forked are
    reaped and counted in RUSAGE_CHILDREN (CPU and peak RSS). Private API, hence guarded."""
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is not None:
        stop()


async def child_e2e(
    work: Path,
    port: int,
    send_id: int,
    expected: int,
    profile: bool,
    render_workers: int | str | None,
) -> dict[str, Any]:
    """Engine.run_send of the whole send, from a copy of the prepared database. CPU counts
    the render worker processes too (in ``worker_cpu``)."""
    from mailer.app import cap_malloc_arenas
    from mailer.dispatch import Engine
    from mailer.storage import Store
    from mailer.transport import open_transport

    cap_malloc_arenas()  # as `mailer run` does, before this process's threads allocate

    database = _copy_database(work / "template.sqlite3", work)
    settings = _settings(work, port, database, render_workers)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The render workers' peak RSS from /proc (VmHWM), every 0.1 s: RUSAGE_CHILDREN's
    # ru_maxrss would be this process's own at the fork server's fork, not theirs.
    watch, watching = Watch(os.getpid()), threading.Event()

    def look() -> None:
        while not watching.wait(SAMPLE_EVERY):
            watch.sample()

    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    try:
        async with Store.open(settings) as store, open_transport(settings) as transport:
            engine = Engine(settings, store, transport, node="bench")
            phases = _time_phases(engine)
            await store.ping()
            gc.collect()
            baseline = _maxrss_kib()
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            cpu0, start = time.process_time(), time.perf_counter()
            summary = await engine.run_send(send_id)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
            if profiler is not None:
                profiler.disable()
    finally:
        _remove_database(database)
        watching.set()
        looker.join()
    _stop_forkserver()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (children.ru_utime + children.ru_stime) - (children0.ru_utime + children0.ru_stime)
    result = {
        "messages": expected,
        "sent": summary.counts.get("sent", 0),
        "status": str(summary.status),
        "counts": dict(summary.counts),
        "reason": summary.reason,
        "seconds": seconds,
        "cpu": cpu + worker_cpu,
        "worker_cpu": worker_cpu,
        "worker_peak_kib": max((w.hwm_kib for w in watch.of("render")), default=0),
        "forkserver_kib": max((w.hwm_kib for w in watch.of("forkserver")), default=0),
        "phases": phases,
        "baseline_kib": baseline,
        "peak_kib": _maxrss_kib(),
    }
    if profiler is not None:
        result["profile_cumulative"] = _profile_table(profiler, "cumtime", 30)
        result["profile_self"] = _profile_table(profiler, "tottime", 30)
    return result


async def child_stages(work: Path, send_id: int) -> dict[str, Any]:
    """Each stage of the send alone, over the same recipients: fetch, compose, record."""
    from mailer.compose import make_composer
    from mailer.models import DeliveryResult, DeliveryStatus, SendInfo
    from mailer.render import Renderer
    from mailer.storage import Store
    from mailer.tokens import Signer

    database = _copy_database(work / "template.sqlite3", work)
    settings = _settings(work, database=database)
    now = datetime.now(UTC)
    fetch = compose = record = 0.0
    try:
        async with Store.open(settings) as store:
            spec = await store.sends.spec(send_id)
            await store.sends.claim(send_id, node="bench", now=now)
            cpu0 = time.process_time()
            await store.deliveries.materialise(spec, now=now)
            materialise = time.process_time() - cpu0
            renderer, signer = Renderer(settings.paths.templates_dir), Signer([SECRET])
            composers = {
                info.id: make_composer(
                    settings, renderer=renderer, signer=signer,
                    send=SendInfo(
                        content=spec.content, list=info, sender_name=SENDER_NAME,
                        sender_address=SENDER_ADDRESS, action=spec.action, now=now, event=None,
                    ),
                    send_id=send_id, trace="bench", eight_bit=True,
                )
                for info in spec.lists
            }  # fmt: skip
            outcomes = []
            after = 0
            while True:
                cpu0 = time.process_time()
                batch = await store.deliveries.due(
                    send_id, after=after, limit=settings.delivery.batch_size, now=now
                )
                fetch += time.process_time() - cpu0
                if not batch:
                    break
                for due in batch:
                    after = due.id
                    cpu0 = time.process_time()
                    built = composers[due.list_id].compose(due.recipient, date=now).message
                    compose += time.process_time() - cpu0
                    outcomes.append(
                        DeliveryResult(
                            due.id, DeliveryStatus.SENT, code=250, reply="2.0.0 Ok: queued as X",
                            message_id=built.message_id,
                        )
                    )  # fmt: skip
            step = settings.delivery.record_batch
            cpu0 = time.process_time()
            for first in range(0, len(outcomes), step):
                await store.deliveries.record(outcomes[first : first + step], now=now)
            record = time.process_time() - cpu0
            counts = await store.figures.counts(send_id)
    finally:
        _remove_database(database)
    return {
        "messages": len(outcomes),
        "sent": counts.get("sent", 0),
        "materialise": materialise,
        "fetch": fetch,
        "compose": compose,
        "record": record,
    }


BASELINE_TEXT = """\
{% extends "email/base.LOCALE.txt" %}
{% block content %}
{{ greeting }} {{ subscriber.name }},

{{ body }}
{% endblock %}
"""


def child_baseline(work: Path, port: int, count: int) -> dict[str, Any]:
    """What a user might write: plain Jinja2 (the same templates), EmailMessage per
    recipient, one smtplib connection, one message after the other, from the CSV."""
    import hashlib
    import hmac
    import smtplib
    from email.message import EmailMessage
    from email.utils import formataddr, formatdate, make_msgid

    import jinja2
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROOT / "templates")),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # The newsletter's subject block names its issue with mailer's date filter; the baseline
    # gives its own subject and never renders that block, but Jinja compiles it.
    env.filters["date"] = lambda value, fmt="long": str(value)
    body = (work / "body.md").read_text(encoding="utf-8")
    body_html = Markup(MarkdownIt("commonmark").render(body))  # noqa: S704 - markdown-it escapes
    templates = {
        locale: (
            env.get_template(f"email/newsletter.{locale}.html"),
            env.from_string(BASELINE_TEXT.replace("LOCALE", locale)),
        )
        for locale in ("fr", "en")
    }
    greeting = {"fr": "Bonjour", "en": "Hello"}
    key = SECRET.encode()
    shared = {
        "subject": SUBJECT,
        "list": {"title": LIST_TITLE, "slug": LIST_SLUG},
        "campaign": {"name": CAMPAIGN},
        "sender": {"name": SENDER_NAME, "address": SENDER_ADDRESS},
    }
    sent = 0
    with (work / "lists" / f"{LIST_SLUG}.csv").open(encoding="utf-8", newline="") as rows:
        reader = csv.DictReader(rows)
        gc.collect()
        baseline = _maxrss_kib()
        cpu0, start = time.process_time(), time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.example.org") as smtp:
            for _, row in zip(range(count), reader, strict=False):
                locale = row["locale"] if row["locale"] in templates else "fr"
                html_template, text_template = templates[locale]
                token = hmac.new(key, row["email"].encode(), hashlib.sha256).hexdigest()[:32]
                links = {
                    "unsubscribe": f"{BASE_URL}/u/{token}",
                    "preferences": f"{BASE_URL}/p/{token}",
                    "web_version": None,
                }
                context = {
                    **shared,
                    "subscriber": {"name": row["name"], "email": row["email"]},
                    "links": links,
                    "greeting": greeting[locale],
                }
                message = EmailMessage()
                message["From"] = formataddr((SENDER_NAME, SENDER_ADDRESS))
                message["To"] = formataddr((row["name"], row["email"]))
                message["Subject"] = SUBJECT
                message["Date"] = formatdate(localtime=True)
                message["Message-ID"] = make_msgid(domain=DOMAIN)
                message["List-Unsubscribe"] = f"<{links['unsubscribe']}>"
                message.set_content(text_template.render(context, body=body))
                message.add_alternative(html_template.render(context, body=body_html), "html")
                refused = smtp.send_message(message)
                if not refused:
                    sent += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {
        "messages": count,
        "sent": sent,
        "seconds": seconds,
        "cpu": cpu,
        "bytes": len(message.as_bytes()),
        "baseline_kib": baseline,
        "peak_kib": _maxrss_kib(),
    }


# --- the children of the daemon mode: the data folder's files, the message it sends ---------


def _write_campaign(folder: Path, body: str) -> Path:
    """The announcement's campaign file (due now, in French) and its body file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{DAEMON_CAMPAIGN}.fr.md").write_text(body, encoding="utf-8")
    path = folder / f"{DAEMON_CAMPAIGN}.toml"
    path.write_text(
        f'name = "{DAEMON_CAMPAIGN}"\nkind = "announcement"\nlists = ["{LIST_SLUG}"]\n'
        f'timezone = "Europe/Paris"\nsend_at = "now"\nlanguage = "fr"\n'
        f'subject = "{DAEMON_SUBJECT}"\nbody_file = "{DAEMON_CAMPAIGN}.fr.md"\n',
        encoding="utf-8",
    )
    return path


def _blocks(seed: int, count: int) -> list[str]:
    """At least ``count`` Markdown blocks (headings, paragraphs, lists, quotes) of the French
    newsletter of render_message.py, its issues of successive seeds one after the other."""
    from render_message import newsletter_body

    blocks: list[str] = []
    issue = seed
    while len(blocks) < count:
        blocks += newsletter_body(issue).strip().split("\n\n")
        issue += 1
    return blocks


def child_daemon_setup(work: Path, count: int, seed: int, size_kb: int) -> dict[str, Any]:
    """The list (CSV and settings) and the announcement whose body makes a message of about
    ``size_kb`` KB as the send builds it (8bit, the product's composer), found by bisection
    on the number of Markdown blocks."""
    from render_message import recipients

    from mailer.campaigns import load
    from mailer.compose import make_composer
    from mailer.models import ListInfo, SendInfo
    from mailer.render import Renderer
    from mailer.tokens import Signer

    _write_list(work / "lists", count, seed)
    settings = _settings(work)
    renderer, signer = Renderer(settings.paths.templates_dir), Signer([SECRET])
    info = ListInfo(id=1, slug=LIST_SLUG, title=LIST_TITLE, default_locale="fr")
    who = recipients(1, seed)[0]
    now = datetime.now(UTC)
    folder = work / "campaigns"
    blocks = _blocks(seed, 8)

    def size(n: int) -> int:
        path = _write_campaign(folder, "\n\n".join(blocks[:n]) + "\n")
        content = load(path, templates_dir=settings.paths.templates_dir).content
        send = SendInfo(
            content=content, list=info, sender_name=SENDER_NAME, sender_address=SENDER_ADDRESS,
            action="announcement", now=now, event=None, key="announce",
        )  # fmt: skip
        composer = make_composer(
            settings, renderer=renderer, signer=signer, send=send, send_id=1,
            trace="c1/announce", eight_bit=True,
        )  # fmt: skip
        return len(composer.compose(who, date=now).message.data)

    target = size_kb * 1024
    high = 8
    while size(high) < target:
        high *= 2
        blocks = _blocks(seed, high)
    low = 1  # size(low) may already be over: the smallest message this template makes
    while low < high:
        middle = (low + high) // 2
        if size(middle) < target:
            low = middle + 1
        else:
            high = middle
    over, under = size(low), size(max(1, low - 1))
    chosen = low if over - target <= target - under or low == 1 else low - 1
    estimate = size(chosen)  # leaves the chosen body in the campaign's files
    return {
        "blocks": chosen,
        "estimate_bytes": estimate,
        "body_bytes": (folder / f"{DAEMON_CAMPAIGN}.fr.md").stat().st_size,
    }


async def child_daemon_message(work: Path) -> dict[str, Any]:
    """The send ``mailer campaign create`` made, in the folder's template database: its id,
    its total, and its first recipient's message as the send builds it for smtp-sink (8bit),
    written for smtp-source -F (LF line ends)."""
    import sqlite3

    from mailer.compose import make_composer
    from mailer.dispatch.feed import trace_of
    from mailer.models import SendInfo
    from mailer.render import Renderer
    from mailer.storage import Store
    from mailer.tokens import Signer

    database = work / "template.sqlite3"
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT id FROM sends").fetchall()
    if len(rows) != 1:
        raise SystemExit(f"{database}: {len(rows)} sends, expected the announcement's one")
    send_id = int(rows[0][0])
    settings = _settings(work, database=database)
    now = datetime.now(UTC)
    async with Store.open(settings) as store:
        spec = await store.sends.spec(send_id)
        first = None
        async for recipient in store.lists.recipients(LIST_SLUG, limit=1):
            first = recipient
        assert first is not None
    composer = make_composer(
        settings,
        renderer=Renderer(settings.paths.templates_dir),
        signer=Signer([SECRET]),
        send=SendInfo(
            content=spec.content, list=spec.lists[0],
            sender_name=spec.sender_name or settings.sender.from_name,
            sender_address=spec.sender_address or settings.sender.from_address,
            action=spec.action, now=now, event=spec.event, key=spec.key,
        ),
        send_id=send_id,
        trace=trace_of(spec),
        eight_bit=True,
    )  # fmt: skip
    data = composer.compose(first, date=now).message.data
    (work / "message-lf.eml").write_bytes(data.replace(b"\r\n", b"\n"))
    return {
        "send_id": send_id,
        "status": str(spec.status),
        "message_bytes": len(data),
        "encodings": sorted(
            {m.decode() for m in re.findall(rb"Content-Transfer-Encoding: (\S+)", data)}
        ),
    }


def run_child(mode: str, options: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT))  # the mailer package, when run from elsewhere
    work = Path(options["work"])
    result: dict[str, Any]
    if mode == "setup":
        result = asyncio.run(child_setup(work, options["count"], options["seed"]))
    elif mode == "transport":
        result = asyncio.run(
            child_transport(
                work, options["port"], options["count"], options.get("pipelining", True)
            )
        )
    elif mode == "e2e":
        result = asyncio.run(
            child_e2e(
                work,
                options["port"],
                options["send_id"],
                options["count"],
                options["profile"],
                options.get("render_workers"),
            )
        )
    elif mode == "daemon_setup":
        result = child_daemon_setup(work, options["count"], options["seed"], options["size_kb"])
    elif mode == "daemon_message":
        result = asyncio.run(child_daemon_message(work))
    elif mode == "stages":
        result = asyncio.run(child_stages(work, options["send_id"]))
    elif mode == "baseline":
        result = child_baseline(work, options["port"], options["count"])
    else:
        raise SystemExit(f"unknown child mode {mode}")
    print(json.dumps(result, default=str))


# --- the parent ----------------------------------------------------------------------------


def child(mode: str, **options: Any) -> dict[str, Any]:
    """Run this script in ``--child`` mode in a fresh interpreter; return its JSON."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", mode,
        "--options", json.dumps(options, default=str),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False, cwd=ROOT
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or not done.stdout.strip():
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {mode} child failed (exit status {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["parent_kib"] = _maxrss_kib()  # what the child's ru_maxrss started from
    result["process_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result["stderr"] = done.stderr.strip()[-2000:]
    return result


def run_ceiling(
    tools: Tools, sink: Sink, work: Path, count: int, sessions: int = POOL
) -> dict[str, Any]:
    """smtp-source, ``sessions`` sessions reused (10), our message (-F), a distinct recipient
    each (-N)."""
    command = [
        str(tools.source), "-s", str(sessions), "-d", "-m", str(count), "-N",
        "-f", SENDER_ADDRESS, "-t", "reader@example.org", "-M", "bench.example.org",
        "-F", str(work / "message-lf.eml"), f"127.0.0.1:{sink.port}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command, env=tools.env, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise ToolError(f"smtp-source failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"messages": count, "sent": count, "seconds": seconds, "cpu": cpu}


@dataclass
class Line:
    key: str
    label: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [r["messages"] / r["seconds"] for r in self.runs]

    def rate(self) -> float:
        return statistics.median(self.rates())

    def cpu_us(self) -> float:
        return statistics.median(r["cpu"] / r["messages"] * 1e6 for r in self.runs)

    def sink_us(self) -> float | None:
        values = [r["sink_cpu"] / r["messages"] * 1e6 for r in self.runs if r["sink_cpu"]]
        return statistics.median(values) if values else None


def measure(
    line: Line, sink: Sink, run: Callable[[Sink], dict[str, Any]], problems: list[str]
) -> dict[str, Any]:
    """One measurement against a fresh sink; its counts checked."""
    with sink:
        cpu0 = sink.cpu()
        result = run(sink)
        cpu1 = sink.cpu()
        received = sink.messages(result["messages"])
    result["sink_cpu"] = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    result["received"] = received
    if result["sent"] != result["messages"] or received != result["messages"]:
        problems.append(
            f"{line.label}: {result['messages']:,} messages, the client reports "
            f"{result['sent']:,} accepted, the sink counted {received:,} "
            f"({result.get('counts') or result.get('outcomes') or ''} {result.get('reason') or ''})"
        )
        if result.get("stderr"):
            problems.append(f"  its stderr: {result['stderr'][-600:]}")
    line.runs.append(result)
    return result


def _span(values: list[float], fmt: str = ",.0f") -> str:
    return f"{min(values):{fmt}}–{max(values):{fmt}}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --- end to end through `mailer run` (--mode daemon) ---------------------------------------


def _daemon_env(folder: Path, data: Path, port: int, workers: str | None) -> dict[str, str]:
    """The environment of the CLI and the daemon: the same values as ``_settings`` (so the
    Engine.run_send runs of the same folder compose the same messages), no MAILER_* of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_PATHS__DATA_DIR=str(data),
        MAILER_PATHS__LISTS_DIR=str(folder / "lists"),
        MAILER_PATHS__TEMPLATES_DIR=str(ROOT / "templates"),
        MAILER_SMTP__HOST="127.0.0.1",
        MAILER_SMTP__PORT=str(port),
        MAILER_SMTP__SECURITY="none",
        MAILER_SMTP__POOL_SIZE=str(POOL),
        MAILER_SMTP__LOCAL_HOSTNAME="bench.example.org",
        MAILER_SENDER__FROM_ADDRESS=SENDER_ADDRESS,
        MAILER_SENDER__FROM_NAME=SENDER_NAME,
        MAILER_SENDER__DOMAIN=DOMAIN,
        MAILER_WEB__BASE_URL=BASE_URL,
        MAILER_WEB__PORT="0",  # the web pages on, as an operator has them, on a free port
        MAILER_SECRET_KEYS=SECRET,
        MAILER_LOG__LEVEL="INFO",
        PYTHONPATH=str(ROOT),
    )
    if workers is not None:
        env["MAILER_DELIVERY__RENDER_WORKERS"] = workers
    return env


def _cli(arguments: list[str], folder: Path, env: dict[str, str]) -> float:
    """``mailer ARGUMENTS`` in ``folder``; its wall seconds (a failure ends the benchmark)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mailer", *arguments], cwd=folder, env=env,
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
        raise SystemExit(f"mailer {' '.join(arguments)} failed (exit status {done.returncode})")
    return time.perf_counter() - start


@dataclass
class Prepared:
    """One message size's folder: the template database with the send, the ceiling's file."""

    size: int
    folder: Path
    send_id: int
    message_bytes: int
    encodings: list[str]
    body_bytes: int
    seconds: dict[str, float]


def prepare_size(work: Path, size: int, count: int, seed: int) -> Prepared:
    """Files, ``mailer init`` (the list imported), ``mailer campaign create`` (the send due
    now), then one consistent copy of the database: the template of every run of this size."""
    import sqlite3

    folder = work / f"size-{size}"
    setup = child("daemon_setup", work=folder, count=count, seed=seed, size_kb=size)
    data = folder / "data"
    env = _daemon_env(folder, data, 25, None)
    seconds = {"init": _cli(["init"], folder, env)}
    campaign = folder / "campaigns" / f"{DAEMON_CAMPAIGN}.toml"
    seconds["create"] = _cli(["campaign", "create", str(campaign)], folder, env)
    with (
        sqlite3.connect(data / "mailer.sqlite3") as source,
        sqlite3.connect(folder / "template.sqlite3") as target,
    ):
        source.backup(target)
    source.close()
    target.close()
    shutil.rmtree(data)
    message = child("daemon_message", work=folder)
    return Prepared(
        size, folder, message["send_id"], message["message_bytes"], message["encodings"],
        setup["body_bytes"], seconds,
    )  # fmt: skip


def _stat(pid: int) -> tuple[float, float] | None:
    """(own CPU, CPU of its reaped children) in seconds from /proc/PID/stat; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _hwm_kib(pid: int) -> int:
    """The peak resident set (VmHWM) of a live process, in KiB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _rss_kib(pid: int) -> int:
    """The resident set (VmRSS) of a live process now, in KiB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    """The live children of a process (every thread's /proc children list)."""
    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            found += [int(word) for word in Path(path).read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def _kind(pid: int, parent: str) -> str:
    """What a process of the daemon's tree is: a child of the fork server is a render worker."""
    if parent == "forkserver":
        return "render"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "other"
    if b"forkserver" in command:
        return "forkserver"
    return "tracker" if b"resource_tracker" in command else "other"


@dataclass
class Seen:
    """One process of the daemon's tree as last seen: its CPU, its peak RSS."""

    kind: str
    cpu: float = 0.0
    reaped: float = 0.0  # CPU of its children it has reaped (the fork server: the workers)
    hwm_kib: int = 0
    alive: bool = False


class Watch:
    """The daemon's processes, looked at in /proc: the main one, the fork server, the render
    workers (the fork server's children), the resource tracker."""

    def __init__(self, main: int) -> None:
        self.main = main
        self.seen: dict[int, Seen] = {}

    def sample(self) -> None:
        for seen in self.seen.values():
            seen.alive = False
        stack = [(self.main, "main")]
        while stack:
            pid, kind = stack.pop()
            stat = _stat(pid)
            if stat is None:
                continue
            seen = self.seen.setdefault(pid, Seen(kind))
            seen.cpu, seen.reaped = stat
            seen.hwm_kib = max(seen.hwm_kib, _hwm_kib(pid))
            seen.alive = True
            for child_pid in _children(pid):
                known = self.seen.get(child_pid)
                stack.append((child_pid, known.kind if known else _kind(child_pid, seen.kind)))

    def of(self, kind: str) -> list[Seen]:
        return [seen for seen in self.seen.values() if seen.kind == kind]

    def render_cpu(self) -> float:
        """The render workers' CPU: those the fork server reaped plus the live ones; at least
        the sum of what each was last seen with (a worker ends between two looks)."""
        reaped = sum(s.reaped for s in self.of("forkserver"))
        live = sum(s.cpu for s in self.of("render") if s.alive)
        return max(reaped + live, sum(s.cpu for s in self.of("render")))


FINISHED = re.compile(
    r"send (\d+) \([^)]*\): (\w+); sent (\d+), deferred (\d+), failed (\d+), skipped (\d+)"
)
PREFLIGHT = re.compile(r"pre-flight check of .*")


def run_daemon(
    sink: Sink, prepared: Prepared, count: int, workers: str, number: int
) -> dict[str, Any]:
    """``mailer run`` on a fresh data folder holding the prepared database, until the sink
    has ``count`` messages (the clock) and the daemon has logged the send's end; then
    SIGTERM. CPU and peak RSS of each of its processes from /proc."""
    folder = prepared.folder / f"run-{number}-{workers}"
    data = folder / "data"
    data.mkdir(parents=True)
    shutil.copyfile(prepared.folder / "template.sqlite3", data / "mailer.sqlite3")
    env = _daemon_env(prepared.folder, data, sink.port, workers)
    log = folder / "daemon.log"
    with log.open("wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "run"], cwd=folder, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    watch = Watch(process.pid)
    first = seconds = ready = None
    ready_kib, ready_cpu = 0, 0.0
    finished: re.Match[str] | None = None
    looked = 0.0
    deadline = time.monotonic() + CHILD_TIMEOUT
    try:
        while finished is None:
            now = time.perf_counter()
            if seconds is None:
                received = sink.count()
                if received and first is None:
                    first = now - start
                if received >= count:
                    seconds = now - start
            if now - looked >= SAMPLE_EVERY:
                looked = now
                watch.sample()
                text = log.read_text(encoding="utf-8", errors="replace")
                if ready is None and "waiting for work" in text:
                    ready, ready_kib = now - start, _rss_kib(process.pid)
                    ready_cpu = watch.seen[process.pid].cpu
                finished = FINISHED.search(text)  # the send's end: logged after its last record
                if finished is not None and seconds is None:
                    if sink.messages(count, wait=2.0) >= count:
                        seconds = time.perf_counter() - start  # a late look: slightly long
                    else:  # paused or stopped short: the check of the counts will say it
                        seconds = now - start
                        first = first or seconds
            if process.poll() is not None:
                raise SystemExit(f"mailer run exited ({process.returncode}); its log: {log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"mailer run: no end after {CHILD_TIMEOUT} s; its log: {log}")
            time.sleep(0.01 if seconds is None else 0.05)
        watch.sample()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    text = log.read_text(encoding="utf-8", errors="replace")
    preflight = PREFLIGHT.search(text)
    assert seconds is not None
    assert first is not None
    main = watch.seen[process.pid]
    renders = watch.of("render")
    helpers = watch.of("forkserver") + watch.of("tracker")
    result = {
        "messages": count,
        "sent": int(finished.group(3)),
        "counts": dict(
            zip(
                ("sent", "deferred", "failed", "skipped"),
                map(int, finished.groups()[2:]),
                strict=True,
            )
        ),
        "reason": f"status {finished.group(2)}",
        "status": finished.group(2),
        "seconds": seconds,
        "first": first,
        "ready": ready or 0.0,
        "ready_kib": ready_kib,
        "ready_cpu": ready_cpu,
        "main_cpu": main.cpu,
        "render_cpu": watch.render_cpu(),
        "helper_cpu": sum(s.cpu for s in helpers),
        "main_kib": main.hwm_kib,
        "render_kib": max((s.hwm_kib for s in renders), default=0),
        "renders": len(renders),
        "helper_kib": max((s.hwm_kib for s in helpers), default=0),
        "preflight": preflight.group(0) if preflight else "",
        "cpu": main.cpu + watch.render_cpu(),
        "exit": process.returncode,
        "stopped_cleanly": "mailer stopped cleanly" in text,
        "stderr": text[-2000:],
    }
    shutil.rmtree(data, ignore_errors=True)  # the log stays (--keep)
    return result


def daemon_section(
    tools: Tools, work: Path, args: argparse.Namespace, count: int, repetitions: int,
    say: Callable[[str], None], problems: list[str],
) -> None:  # fmt: skip
    """Per message size: the ceiling (smtp-source, 20 sessions, that message), Engine.run_send
    and ``mailer run`` with each render-worker count, interleaved; then the report."""
    sink = Sink(tools, work)
    workers: list[str] = args.workers
    sizes: list[int] = args.sizes
    lines: dict[tuple[int, str, str], Line] = {}
    prepared: dict[int, Prepared] = {}
    for size in sizes:
        say(f"{size} KB: {count:,} subscribers, `mailer init`, `mailer campaign create`")
        ready = prepared[size] = prepare_size(work / "daemon", size, count, args.seed)
        say(
            f"  message {ready.message_bytes:,} bytes ({'/'.join(ready.encodings)}; Markdown "
            f"body {ready.body_bytes:,} bytes); init {ready.seconds['init']:.1f} s, campaign "
            f"create {ready.seconds['create']:.1f} s"
        )
        ceiling = lines[size, "ceiling", ""] = Line(
            "ceiling", f"ceiling: smtp-source -s {CEILING_SESSIONS} -d"
        )
        for repetition in range(1, repetitions + 1):
            result = measure(
                ceiling,
                sink,
                lambda s, r=ready: run_ceiling(tools, s, r.folder, count, CEILING_SESSIONS),
                problems,
            )
            shown = [f"ceiling {result['messages'] / result['seconds']:,.0f}/s"]
            for worker in workers:
                engine = lines.setdefault(
                    (size, "engine", worker),
                    Line("engine", f"Engine.run_send, {worker} render worker(s)"),
                )
                result = measure(
                    engine,
                    sink,
                    lambda s, r=ready, w=worker: child(
                        "e2e",
                        work=r.folder,
                        port=s.port,
                        send_id=r.send_id,
                        count=count,
                        profile=False,
                        render_workers=w,
                    ),
                    problems,
                )
                shown.append(f"engine/{worker} {result['messages'] / result['seconds']:,.0f}/s")
                daemon = lines.setdefault(
                    (size, "daemon", worker),
                    Line("daemon", f"mailer run, {worker} render worker(s)"),
                )
                result = measure(
                    daemon,
                    sink,
                    lambda s, r=ready, w=worker, n=repetition: run_daemon(s, r, count, w, n),
                    problems,
                )
                if not result["stopped_cleanly"] or result["exit"] != 0:
                    problems.append(
                        f"{daemon.label}: exit status {result['exit']} after SIGTERM, "
                        f"{'' if result['stopped_cleanly'] else 'no '}'mailer stopped cleanly'"
                    )
                shown.append(f"daemon/{worker} {result['messages'] / result['seconds']:,.0f}/s")
            say(f"  repetition {repetition}: " + " | ".join(shown))
    daemon_report(lines, prepared, count, repetitions, workers, say)


def _med(line: Line, key: str) -> float:
    return statistics.median(float(r[key]) for r in line.runs)


def _ratio(line: Line, ceiling: Line) -> float:
    pairs = zip(line.rates(), ceiling.rates(), strict=True)
    return statistics.median(rate / top for rate, top in pairs)


def daemon_report(
    lines: dict[tuple[int, str, str], Line], prepared: dict[int, Prepared], count: int,
    repetitions: int, workers: list[str], say: Callable[[str], None],
) -> None:  # fmt: skip
    say("")
    say(
        f"end to end through `mailer run` and Engine.run_send: {count:,} recipients, "
        f"{repetitions} interleaved repetitions, SQLite, SMTP pool {POOL}; the ceiling "
        f"smtp-source -s {CEILING_SESSIONS} -d with the same message, in the same repetition"
    )
    say(
        "  (mailer run: the clock from the daemon's start (Popen) to smtp-sink's last message; "
        "a fresh data folder each run; CPU and peak RSS (VmHWM) of each process from /proc)"
    )
    head = (
        f"  {'size / measurement':<36} {'msgs/s':>7} {'min–max':>13} {'÷ ceiling':>9} "
        f"{'1st msg s':>9} {'main µs':>8} {'render µs':>9} {'sink µs':>7} {'main MiB':>8} "
        f"{'render MiB':>10}"
    )
    say(head)
    say("  " + "-" * (len(head) - 2))
    for size, ready in prepared.items():
        ceiling = lines[size, "ceiling", ""]
        say(
            f"  {size} KB ({ready.message_bytes:,} bytes) {ceiling.label:<12} "
            f"{ceiling.rate():>7,.0f} {_span(ceiling.rates()):>13} {'1.000':>9}"
        )
        for mode in ("engine", "daemon"):
            for worker in workers:
                line = lines[size, mode, worker]
                per = 1e6 / line.runs[0]["messages"]
                if mode == "daemon":
                    main_us, render_us = (
                        _med(line, "main_cpu") * per,
                        _med(line, "render_cpu") * per,
                    )
                    main_kib, render_kib = _med(line, "main_kib"), _med(line, "render_kib")
                    first = f"{_med(line, 'first'):.1f}"
                else:
                    render_us = _med(line, "worker_cpu") * per
                    main_us = _med(line, "cpu") * per - render_us
                    main_kib, render_kib = _med(line, "peak_kib"), _med(line, "worker_peak_kib")
                    first = ""
                sink_us = line.sink_us()
                say(
                    f"    {line.label:<34} {line.rate():>7,.0f} {_span(line.rates()):>13} "
                    f"{_ratio(line, ceiling):>9.3f} {first:>9} {main_us:>8,.0f} "
                    f"{render_us:>9,.0f} {'' if sink_us is None else f'{sink_us:,.0f}':>7} "
                    f"{_mib(main_kib):>8} {_mib(render_kib):>10}"
                )
    say(
        "  (medians over the repetitions; each ratio against its own repetition's ceiling; "
        "µs: CPU per message, main = the sending process (the daemon's main process, start-up "
        "included), render = its render workers together; MiB: peak RSS (VmHWM), render = the "
        "largest worker)"
    )
    say("  where the time to the first message goes, and the daemon's main process at start-up:")
    for size in prepared:
        for worker in workers:
            line = lines[size, "daemon", worker]
            ready_mib, helper_mib = _mib(_med(line, "ready_kib")), _mib(_med(line, "helper_kib"))
            say(
                f"    {size} KB, {worker} worker(s): 'waiting for work' logged after "
                f"{_med(line, 'ready'):.1f} s (main RSS then {ready_mib} MiB), "
                f"first message after {_med(line, 'first'):.1f} s, the last after "
                f"{_med(line, 'seconds'):.1f} s; fork server {helper_mib} MiB and "
                f"{_med(line, 'helper_cpu'):.2f} s CPU (with the resource tracker), "
                f"{line.runs[-1]['renders']} render process(es); its log: "
                f"{line.runs[-1]['preflight']}"
            )

    say("")
    say(
        "derived for more cores, from the `mailer run` lines: with c_main and c_render the CPU "
        "ms per message of the main process (its start-up, until 'waiting for work', left out) "
        "and of the render workers together (the pre-flight's render and the message's), k "
        "cores give k - 1 workers beside the main process, so the send runs at rate(k) ≈ "
        "min(1000 / c_main, (k - 1) · 1000 / c_render) msgs/s, after the start-up (the relay "
        "on another machine, the work spread evenly over the workers)"
    )
    for size in prepared:
        for worker in workers:
            line = lines[size, "daemon", worker]
            started, boot = _med(line, "ready"), _med(line, "ready_cpu")
            c_main = (_med(line, "main_cpu") - boot) * 1e3 / count
            c_render = _med(line, "render_cpu") * 1e3 / count
            rates = {
                k: min(1000 / c_main, (k - 1) * 1000 / c_render) if c_render else 1000 / c_main
                for k in (2, 4, 8)
            }
            bound = "the main process" if rates[8] == 1000 / c_main else "the render workers"
            seen = ", ".join(
                f"{k} cores {rates[k]:,.0f} ({count / (started + count / rates[k]):,.0f} with "
                "the start-up)"
                for k in rates
            )
            say(
                f"  {size} KB, measured with {worker} worker(s): start-up {started:.1f} s and "
                f"{boot:.2f} s CPU, then c_main {c_main:.3f} ms, c_render {c_render:.3f} ms -> "
                f"{seen} msgs/s; bound by {bound} at 8 (measured here: {line.rate():,.0f} with "
                "the start-up, smtp-sink sharing the 2 cores)"
            )

    say("")
    say("against issue 18's targets")
    size = 20 if 20 in prepared else next(iter(prepared))
    for worker in workers:
        ceiling = lines[size, "ceiling", ""]
        daemon, engine = lines[size, "daemon", worker], lines[size, "engine", worker]
        ratio, engine_ratio = _ratio(daemon, ceiling), _ratio(engine, ceiling)
        main_mib = _med(daemon, "main_kib") / 1024
        say(
            f"  {size} KB, {worker} worker(s): mailer run / ceiling {ratio:.3f} target ≥ "
            f"{DAEMON_TARGETS['daemon']} ({_verdict(ratio >= DAEMON_TARGETS['daemon'])}), "
            f"stretch ≥ {DAEMON_TARGETS['stretch']} "
            f"({_verdict(ratio >= DAEMON_TARGETS['stretch'])}); Engine.run_send / ceiling "
            f"{engine_ratio:.3f} target ≥ {DAEMON_TARGETS['engine']} "
            f"({_verdict(engine_ratio >= DAEMON_TARGETS['engine'])}); the daemon's main process "
            f"peak {main_mib:.1f} MiB target < {DAEMON_TARGETS['mib']:.0f} "
            f"({_verdict(main_mib < DAEMON_TARGETS['mib'])})"
        )


def engine_section(
    tools: Tools, work: Path, args: argparse.Namespace, count: int, repetitions: int,
    baseline_count: int, say: Callable[[str], None], problems: list[str],
) -> None:  # fmt: skip
    """The measurements of ``--mode engine``: ceiling, transport, Engine.run_send, baseline,
    interleaved, with the stages alone, the optional profile and memory check; the report."""
    work.mkdir(parents=True)
    say(f"preparing {count:,} subscribers, the campaign and the send (SQLite, in {work})")
    setup = child("setup", work=work, count=count, seed=args.seed)
    if setup["added"] != count:
        problems.append(f"setup: {setup['added']:,} subscribers imported of {count:,}")
    encodings = "/".join(setup["encodings"])
    say(
        f"  {setup['rows']:,} rows imported in {setup['import_seconds']:.1f} s; one message "
        f"{setup['message_bytes']:,} bytes (HTML {setup['html_chars']:,} + text "
        f"{setup['text_chars']:,} characters, {encodings}); Markdown body "
        f"{setup['body_bytes']:,} bytes"
    )
    lines = {
        "ceiling": Line("ceiling", f"ceiling: smtp-source -s {POOL} -d, same message"),
        "transport": Line("transport", f"transport only: SmtpTransport pool {POOL}, {TASKS} tasks"),
        "transport1": Line("transport1", "transport only, no PIPELINING: one command at a time"),
        "e2e": Line("e2e", f"end to end: Engine.run_send, SQLite, pool {POOL}"),
        "baseline": Line("baseline", "baseline: Jinja2 + EmailMessage + 1 smtplib"),
    }
    sink = Sink(tools, work)
    send_id = setup["send_id"]
    say(
        f"{repetitions} repetitions, interleaved (ceiling, transport with and without "
        f"PIPELINING, end to end, baseline); "
        f"{count:,} messages each, {baseline_count:,} for the baseline"
    )
    for repetition in range(1, repetitions + 1):
        shown = []
        for key, run in (
            ("ceiling", lambda s: run_ceiling(tools, s, work, count)),
            ("transport", lambda s: child("transport", work=work, port=s.port, count=count)),
            (
                "transport1",
                lambda s: child("transport", work=work, port=s.port, count=count, pipelining=False),
            ),
            (
                "e2e",
                lambda s: child(
                    "e2e",
                    work=work,
                    port=s.port,
                    send_id=send_id,
                    count=count,
                    profile=False,
                    render_workers=args.render_workers,
                ),
            ),
            (
                "baseline",
                lambda s: child("baseline", work=work, port=s.port, count=baseline_count),
            ),
        ):
            result = measure(lines[key], sink, run, problems)
            shown.append(f"{key} {result['messages'] / result['seconds']:,.0f}/s")
        say(f"  repetition {repetition}: " + " | ".join(shown))

    say("stage costs measured alone (one child, the same recipients, no SMTP)")
    stages = child("stages", work=work, send_id=send_id)
    if stages["sent"] != count:
        problems.append(f"stages: {stages['sent']:,} recorded sent of {count:,}")

    profile = None
    if args.render_workers is not None:
        say(f"end to end with MAILER_DELIVERY__RENDER_WORKERS={args.render_workers}")
    if args.profile:
        say("one more end-to-end run under cProfile")
        profile = measure(
            Line("profile", "profiled end to end"),
            sink,
            lambda s: child(
                "e2e",
                work=work,
                port=s.port,
                send_id=send_id,
                count=count,
                profile=True,
                render_workers=args.render_workers,
            ),
            problems,
        )

    memory = None
    if args.memory_check:
        big = 100_000
        folder = work / "memory"
        folder.mkdir()
        say(f"memory check: preparing {big:,} subscribers, then one end-to-end run")
        big_setup = child("setup", work=folder, count=big, seed=args.seed)
        memory = measure(
            Line("memory", f"end to end, {big:,} recipients"),
            sink,
            lambda s: child(
                "e2e",
                work=folder,
                port=s.port,
                send_id=big_setup["send_id"],
                count=big,
                profile=False,
                render_workers=args.render_workers,
            ),
            problems,
        )
    # --- the report ---------------------------------------------------------------------
    say("")
    say(
        f"mailer send benchmark: {count:,} recipients, {repetitions} interleaved repetitions, "
        f"seed {args.seed}; loopback, Postfix smtp-sink (discards)"
    )
    say(
        f"  Python {platform.python_version()} on {platform.machine()}, {_cpu_model()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )
    say(
        f"  message {setup['message_bytes']:,} bytes ({encodings}); pool_size {POOL}, "
        f"batch_size {setup['batch_size']}, record_batch {setup['record_batch']}"
    )
    say("")
    head = (
        f"  {'measurement':<50} {'msgs/s':>7} {'min–max':>13} {'CPU µs/msg':>10} "
        f"{'sink µs/msg':>11} {'÷ ceiling':>9}"
    )
    say(head)
    say("  " + "-" * (len(head) - 2))
    ceilings = lines["ceiling"].rates()
    for line in lines.values():
        ratios = [rate / ceiling for rate, ceiling in zip(line.rates(), ceilings, strict=True)]
        sink_us = line.sink_us()
        say(
            f"  {line.label:<50} {line.rate():>7,.0f} {_span(line.rates()):>13} "
            f"{line.cpu_us():>10,.0f} {'' if sink_us is None else f'{sink_us:,.0f}':>11} "
            f"{statistics.median(ratios):>9.3f}"
        )
    say(
        "  (msgs/s and ÷ ceiling: medians over the repetitions, each ratio against the "
        "ceiling of its own repetition; CPU: the client process, smtp-source for the ceiling)"
    )

    piped, serial = lines["transport"], lines["transport1"]
    say(
        f"  PIPELINING: the transport alone at {piped.rate():,.0f} msgs/s against "
        f"{serial.rate():,.0f} one command at a time (x{piped.rate() / serial.rate():.2f}); "
        f"CPU {piped.cpu_us():,.0f} against {serial.cpu_us():,.0f} µs/msg"
    )

    e2e, baseline = lines["e2e"], lines["baseline"]
    ratio = statistics.median(rate / c for rate, c in zip(e2e.rates(), ceilings, strict=True))
    versus = statistics.median(
        rate / b for rate, b in zip(e2e.rates(), baseline.rates(), strict=True)
    )
    cpu_ms = e2e.cpu_us() / 1000
    peak20 = statistics.median(r["peak_kib"] for r in e2e.runs)
    worker20 = statistics.median(r.get("worker_peak_kib", 0) for r in e2e.runs)
    base20 = statistics.median(r["baseline_kib"] for r in e2e.runs)
    say("")
    say("against the targets")
    say(
        f"  end to end / ceiling    {ratio:6.3f}   target ≥ {TARGETS['ratio']} "
        f"({_verdict(ratio >= TARGETS['ratio'])}), stretch ≥ {TARGETS['stretch']} "
        f"({_verdict(ratio >= TARGETS['stretch'])})"
    )
    say(
        f"  end to end / baseline   {versus:6.2f}x  target ≥ {TARGETS['baseline']:.0f}x "
        f"({_verdict(versus >= TARGETS['baseline'])})"
    )
    say(
        f"  CPU per message         {cpu_ms:6.2f} ms target ≤ {TARGETS['cpu_ms']} ms "
        f"({_verdict(cpu_ms <= TARGETS['cpu_ms'])}); the sink used "
        f"{e2e.sink_us() or 0:,.0f} µs/msg more"
    )
    if worker20:
        worker_us = statistics.median(r["worker_cpu"] / r["messages"] * 1e6 for r in e2e.runs)
        say(
            f"  render worker           {worker_us:6.0f} µs CPU/msg of the above, peak RSS "
            f"{_mib(worker20)} MiB (its own process, not in the peak RSS below)"
        )
    if memory is not None:
        peak100 = memory["peak_kib"]
        growth = (peak100 - peak20) / peak20
        ok = peak100 / 1024 < TARGETS["mib"] and peak20 / 1024 < TARGETS["mib"] and growth <= 0.2
        say(
            f"  peak RSS {count:,} / 100,000  {_mib(peak20)} / {_mib(peak100)} MiB "
            f"(+{growth:.0%}; after imports {_mib(base20)} / {_mib(memory['baseline_kib'])} "
            f"MiB)  target < {TARGETS['mib']:.0f} MiB, within 20 % ({_verdict(ok)}); the "
            f"100,000 run: {memory['messages'] / memory['seconds']:,.0f} msgs/s, "
            f"{memory['cpu'] / memory['messages'] * 1e3:.2f} ms CPU/msg"
        )
    else:
        say(
            f"  peak RSS {count:,}         {_mib(peak20)} MiB (after imports {_mib(base20)} MiB); "
            "100,000: run with --memory-check"
        )

    # Where the end-to-end CPU goes.
    say("")
    say("where the end-to-end CPU goes (µs per message)")
    per = 1e6 / count
    phases = {
        name: statistics.median(r["phases"][name][1] for r in e2e.runs)
        for name in ("preflight", "pass")
        if all(name in r["phases"] for r in e2e.runs)
    }
    walls = {name: statistics.median(r["phases"][name][0] for r in e2e.runs) for name in phases}
    total = statistics.median(r["cpu"] for r in e2e.runs)
    pooled = statistics.median(r["worker_cpu"] for r in e2e.runs)
    rest = total - pooled - sum(phases.values())
    if phases:
        say(
            f"  run_send phases in the sending process (median of the runs): pre-flight "
            f"{phases['preflight'] * per:,.0f} ({walls['preflight']:.1f} s: every recipient "
            f"rendered, nothing sent; in the render pool for a large send), sending pass "
            f"{phases['pass'] * per:,.0f} ({walls['pass']:.1f} s), claim + materialise + finish "
            f"{rest * per:,.0f}; the render pool {pooled * per:,.0f}; total {total * per:,.0f}"
        )
    fetch, compose, record = (
        stages[k] * 1e6 / stages["messages"] for k in ("fetch", "compose", "record")
    )
    transport_us = lines["transport"].cpu_us()
    say(
        f"  stages alone: fetch due rows {fetch:,.0f}, Composer.compose {compose:,.0f}, record "
        f"(group commits of {setup['record_batch']}) {record:,.0f}, transport alone "
        f"{transport_us:,.0f}; materialise {stages['materialise'] * per:,.0f}"
    )
    if phases:
        pool = pooled > 0  # the render pool composed: its CPU is not the sending process's
        expected_pass = fetch + (0 if pool else compose) + transport_us + record
        say(
            f"  so the sending pass ≈ fetch + {'' if pool else 'compose + '}transport + record "
            f"= {expected_pass:,.0f} of its {phases['pass'] * per:,.0f} (the rest: queues, "
            "tasks, results, event loop); "
            + (
                f"the render pool ≈ 2 × compose (the pre-flight's render, then the message) = "
                f"{2 * compose:,.0f} of its {pooled * per:,.0f}"
                if pool
                else f"the pre-flight ≈ fetch + compose = {fetch + compose:,.0f} of its "
                f"{phases['preflight'] * per:,.0f}"
            )
        )
    if profile is not None:
        say("")
        say(
            f"cProfile of one end-to-end run ({profile['messages'] / profile['seconds']:,.0f} "
            "msgs/s under the profiler; the main thread only: SQLite runs in aiosqlite's thread)"
        )
        say("  by cumulative time")
        for text in profile["profile_cumulative"]:
            say(text)
        say("  by own time")
        for text in profile["profile_self"]:
            say(text)

    # Checks.
    say("")
    spread = (max(ceilings) - min(ceilings)) / statistics.median(ceilings)
    if spread > CEILING_SPREAD:
        say(
            f"note: the ceiling moved by {spread:.0%} between repetitions (more than "
            f"{CEILING_SPREAD:.0%}): a noisy machine; compare ratios, not absolute rates"
        )
    children = [r for line in lines.values() for r in line.runs if "baseline_kib" in r]
    for r in children:
        if r["parent_kib"] >= r["baseline_kib"]:
            problems.append(
                f"the parent's peak RSS ({_mib(r['parent_kib'])} MiB) reached a child's "
                f"baseline ({_mib(r['baseline_kib'])} MiB): its ru_maxrss may be the parent's"
            )
            break
    if not problems:
        measured = sum(len(line.runs) for line in lines.values())
        say(
            f"checks: all {measured} measurements delivered every message (the client's "
            f"results and smtp-sink's own counter agree); the parent stayed at "
            f"{_mib(_maxrss_kib())} MiB, under every child's baseline"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--recipients", type=int, default=20_000, help="subscribers of the send (default 20000)"
    )
    parser.add_argument(
        "--repetitions", type=int, default=5, help="interleaved repetitions (default 5)"
    )
    parser.add_argument(
        "--baseline-messages",
        type=int,
        default=4000,
        help="messages of the hand-written baseline per repetition (default 4000: it is slow)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 recipients, 2 repetitions: a smoke run"
    )
    parser.add_argument(
        "--memory-check",
        action="store_true",
        help="also one end-to-end run of 100,000 recipients for peak RSS (a few minutes)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also one end-to-end run under cProfile; prints the top functions",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generators (default 1)")
    parser.add_argument(
        "--tools", help="folder holding smtp-sink and smtp-source (default: found or fetched)"
    )
    parser.add_argument(
        "--render-workers",
        default=None,
        help="MAILER_DELIVERY__RENDER_WORKERS for the end-to-end send: auto or a number "
        "(default: the setting's, auto)",
    )
    parser.add_argument(
        "--mode",
        choices=("all", "engine", "daemon"),
        default="all",
        help="engine: the measurements from a warm process (ceiling, transport, "
        "Engine.run_send, baseline); daemon: end to end through `mailer run` beside "
        "Engine.run_send, per message size and render-worker count; all (default): both",
    )
    parser.add_argument(
        "--size", type=int, default=20, help="daemon mode: the message's size in KB (default 20)"
    )
    parser.add_argument(
        "--sizes", help="daemon mode: several sizes in KB, comma-separated (10,20,50)"
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="daemon mode: MAILER_DELIVERY__RENDER_WORKERS values, comma-separated (default 1,2)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, json.loads(args.options))
        return
    count, repetitions, baseline_count = args.recipients, args.repetitions, args.baseline_messages
    if args.quick:
        count, repetitions, baseline_count = 2000, 2, 500
    baseline_count = min(baseline_count, count)
    if count < 1 or repetitions < 1 or baseline_count < 1:
        parser.error("--recipients, --repetitions and --baseline-messages must be at least 1")
    try:
        args.sizes = [int(word) for word in (args.sizes or str(args.size)).split(",")]
    except ValueError:
        parser.error(f"--sizes: expected KB numbers separated by commas, got {args.sizes!r}")
    if any(size < 1 or size > 10_000 for size in args.sizes):
        parser.error("--size, --sizes: each size from 1 to 10000 KB")
    args.workers = [word.strip() for word in args.workers.split(",") if word.strip()]
    if not args.workers or not all(w == "auto" or w.isdigit() for w in args.workers):
        parser.error("--workers: expected auto or numbers separated by commas (1,2)")

    def say(text: str) -> None:
        print(text, flush=True)

    began = time.perf_counter()
    say("smtp-sink and smtp-source (Postfix test programs):")
    try:
        tools = find_tools(args.tools, say)
    except ToolError as exc:
        raise SystemExit(f"cannot get smtp-sink and smtp-source: {exc}") from None
    say(f"  using {tools.sink} and {tools.source}")
    say(f"  from {tools.how}")

    work = Path(tempfile.mkdtemp(prefix="mailer-bench-send-"))
    problems: list[str] = []
    try:
        if args.mode in ("engine", "all"):
            engine_section(
                tools, work / "engine", args, count, repetitions, baseline_count, say, problems
            )
        if args.mode in ("daemon", "all"):
            if args.mode == "all":
                say("")
            daemon_section(tools, work, args, count, repetitions, say, problems)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    say("")
    for problem in problems:
        say(f"CHECK FAILED: {problem}")
    if args.keep:
        say(f"kept: {work}")
    say(f"total {time.perf_counter() - began:.0f} s")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
