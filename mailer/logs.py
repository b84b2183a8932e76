"""Logging for the daemon: text or JSON lines on stderr, one format for every library."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from mailer.settings import LogSettings


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(settings: LogSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.json_lines:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # APScheduler logs every job it adds and runs; our own lines say what matters.
    for noisy, level in (
        ("aiosmtplib", "WARNING"),
        ("apscheduler", "WARNING"),
        ("aioimaplib", "WARNING"),
        ("httpx", "WARNING"),  # a line per webhook POST, with its URL
    ):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
