"""The Maildir capture: the transport used when no relay is set, for development and
previews; each message becomes one file of ``folder/new``, nothing is sent.

It must not alter the message beyond its line ends (LF, as local mail files have them).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Self

from mailer.message import Built
from mailer.transport.contract import Outcome, Result, TransportFatal

log = logging.getLogger("mailer.transport")


class CaptureTransport:
    """Writes each message into a Maildir (``folder/{tmp,new,cur}``) instead of sending it.

    For development and previews without a relay: ``mutt -f folder`` or Python's
    ``mailbox.Maildir`` reads it. The bytes are stored as built, nothing prepended, but with
    LF line ends as local mail files have them (mutt would show CRLF's CR as ``^M``); the
    wire form (SMTP) stays CRLF.
    Each file is written in ``tmp/`` and renamed into ``new/``, so a reader never sees half a
    message; it is not fsynced (a capture folder is not a mail queue).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.eight_bit = True
        self.smtputf8 = True
        self._counter = itertools.count(1)
        # Maildir file names must not hold "/" or ":"; the spec escapes them in octal.
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._open = False

    @property
    def current_rate(self) -> float | None:
        return None

    async def __aenter__(self) -> Self:
        try:
            await asyncio.to_thread(self._make_folders)
        except OSError as exc:
            raise TransportFatal(
                f"cannot create the capture Maildir {self.folder}: {exc}"
            ) from None
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open = False

    def _make_folders(self) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    async def send(self, message: Built) -> Result:
        if not self._open:
            raise RuntimeError("the capture transport is not open; use it inside `async with`")
        name = f"{time.time_ns()}.{os.getpid()}_{next(self._counter)}.{self._host}"
        try:
            path = await asyncio.to_thread(self._deliver, name, message.data)
        except OSError as exc:
            return Result(Outcome.DEFERRED, None, f"cannot write to {self.folder}: {exc}")
        log.debug("%s to %s captured to %s", message.message_id, message.recipient, path)
        return Result(Outcome.SENT, 250, f"captured to {path}")

    def _deliver(self, name: str, data: bytes) -> Path:
        temporary = self.folder / "tmp" / name
        final = self.folder / "new" / name
        with temporary.open("xb") as file:
            file.write(data.replace(b"\r\n", b"\n"))  # a Maildir is a local file: LF
        os.rename(temporary, final)  # atomic within one file system
        return final
