"""``mailer bounces``: bounce messages read from files. ``parse FILE... [--json]`` says, for
each recipient a file reports on, the enhanced status code, the kind (hard, soft, complaint,
policy, auto-reply, unknown), whether the address would be suppressed, the delivery its
return path names (with ``MAILER_BOUNCES__DOMAIN``) and the server's words.

Offline: no store is opened and nothing is recorded; the reading is :mod:`mailer.bounces`'.
A file in mbox form (a ``From `` line first) is read as the messages it holds. The commands
that store bounces are in ``bounce_store``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from mailer.bounces import Finding, Report, parse, split_messages
from mailer.cli.support import EXIT_ERROR, EXIT_REJECTED, current_settings, err, out, safe
from mailer.tokens import Signer, load_signer, read_return_path

Verp = tuple[Signer, str] | None  # the keys and the bounce domain, to read return paths

MAX_FILE_BYTES = 10 * 1024 * 1024  # a bounce is kilobytes; more is not a bounce to read


@click.group("bounces")
def bounces_group() -> None:
    """Bounces, complaints and auto-replies."""


@bounces_group.command("parse")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line and recipient.")
def bounces_parse(files: tuple[Path, ...], as_json: bool) -> int:
    """Read bounce messages (one per file, or an mbox of a few) and say what each reports.

    A file where no recipient is found gives one line with recipient null and kind unknown,
    so that every file read answers."""
    status = 0
    rows: list[dict[str, object]] = []
    settings = current_settings()
    domain = settings.bounces.domain
    verp = (load_signer(settings.secret_keys, settings.paths.data_dir), domain) if domain else None
    for path in files:
        raw, problem, code = _read(path)
        if raw is None:
            err.print(f"[red]error[/]: {safe(f'{path}: {problem}')}", highlight=False)
            status = max(status, code)
            continue
        for report in (parse(message) for message in split_messages(raw)):
            rows.extend(_rows(path, report, verp))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))  # ASCII: no control or bidi character reaches a terminal
    elif rows:
        _table(rows)
    return status


def _read(path: Path) -> tuple[bytes | None, str, int]:
    """The bytes of ``path``, or why not and the exit status that says it."""
    try:
        if not path.is_file():
            reason = "no such file" if not path.exists() else "not a file"
            return None, reason, EXIT_ERROR
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            mib = MAX_FILE_BYTES // (1024 * 1024)
            return None, f"{size / 1024 / 1024:.1f} MiB, over {mib} MiB: not read", EXIT_REJECTED
        return path.read_bytes(), "", 0
    except OSError as exc:
        return None, exc.strerror or str(exc), EXIT_ERROR


def _rows(path: Path, report: Report, verp: Verp) -> list[dict[str, object]]:
    """One row per finding of ``report``; one row with no recipient when it has none."""
    if not report.findings:
        return [_row(path, report, None, verp)]
    return [_row(path, report, finding, verp) for finding in report.findings]


def _row(path: Path, report: Report, finding: Finding | None, verp: Verp) -> dict[str, object]:
    return {
        "file": str(path),
        "recipient": finding.recipient if finding else None,
        "status": finding.status if finding else None,
        "kind": str(finding.kind) if finding else "unknown",
        "suppress": finding.suppress if finding else False,
        "delivery": _delivery(report, verp),
        "diagnostic": finding.diagnostic if finding else "",
    }


def _delivery(report: Report, verp: Verp) -> int | None:
    """The delivery the bounce's return path names, its signature checked (offline: the
    Message-ID and X-Mailer-Send ties need the database; ``bounces import`` makes them)."""
    if verp is None or not report.bounce_to:
        return None
    signer, domain = verp
    return read_return_path(signer, report.bounce_to, domain)


def _table(rows: list[dict[str, object]]) -> None:
    table = Table("file", "recipient", "status", "kind", "suppress", "diagnostic", box=None)
    for row in rows:
        table.add_row(
            safe(row["file"]), safe(row["recipient"] or "-"), safe(row["status"] or "-"),
            safe(row["kind"]), "yes" if row["suppress"] else "no", safe(row["diagnostic"]),
        )  # fmt: skip
    out.print(table)


__all__ = ["MAX_FILE_BYTES", "bounces_group"]
