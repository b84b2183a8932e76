"""The IMAP wire for the bounce reader (``mailer.inbound.imap``), pure: what a UID FETCH's
answer holds, how UIDs, folder names and strings are written, how a batch is cut."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

MAX_MESSAGE = 10 * 1024 * 1024  # bytes; a bounce is kilobytes, more is not one to read
BATCH_MESSAGES = 50  # messages fetched by one UID FETCH
BATCH_BYTES = 16 * 1024 * 1024  # and at most this many bytes of them (one at least)
FETCH_LINE = re.compile(rb"\d+ FETCH \(")
UID = re.compile(rb"\bUID (\d+)")
SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def batch(uids: Sequence[int], sizes: dict[int, int]) -> list[int]:
    """The first messages of ``uids`` (those still there) up to BATCH_BYTES, one at least;
    a message over MAX_MESSAGE weighs nothing (it is not fetched)."""
    chosen: list[int] = []
    total = 0
    for uid in uids:
        if uid not in sizes:
            continue
        weight = sizes[uid] if sizes[uid] <= MAX_MESSAGE else 0
        if chosen and total + weight > BATCH_BYTES:
            break
        chosen.append(uid)
        total += weight
    return chosen


def bodies(lines: Sequence[Any]) -> dict[int, bytes]:
    """Each message's BODY[] from a UID FETCH's lines: ``N FETCH (... {size}``, the literal
    (a bytearray), then the rest (``UID n)`` may come after the literal); other FETCH
    responses (flags changed meanwhile) carry no literal and are passed over."""
    found: dict[int, bytes] = {}
    head, body = b"", None
    for line in [*lines, b"0 FETCH ("]:  # the sentinel closes the last one
        if isinstance(line, bytearray):
            body = bytes(line)
        elif FETCH_LINE.match(line):
            uid = UID.search(head)
            if uid and body is not None:
                found[int(uid[1])] = body
            head, body = bytes(line), None
        else:
            head += bytes(line)
    return found


def uid_set(uids: Sequence[int]) -> str:
    """``1:3,7,9:10`` for [1, 2, 3, 7, 9, 10] (sorted)."""
    runs: list[list[int]] = []
    for uid in sorted(uids):
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


def mailbox(name: str) -> str:
    """A folder name as IMAP writes it: modified UTF-7 (RFC 3501, 5.1.3), quoted."""
    out: list[str] = []
    wide: list[str] = []

    def flush() -> None:
        if wide:
            data = base64.b64encode("".join(wide).encode("utf-16-be")).decode()
            out.append("&" + data.rstrip("=").replace("/", ",") + "-")
            wide.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            wide.append(char)
    flush()
    return quoted("".join(out))


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def said(response: Any) -> str:
    """The server's words in a tagged answer (its last line)."""
    lines = [bytes(line) for line in response.lines if isinstance(line, bytes | bytearray)]
    return lines[-1].decode(errors="replace") if lines else str(response.result)


def sizes(lines: Sequence[Any]) -> dict[int, int]:
    """Each message's RFC822.SIZE from a UID FETCH's lines."""
    found = {}
    for line in lines:
        uid, size = UID.search(bytes(line)), SIZE.search(bytes(line))
        if uid and size:
            found[int(uid[1])] = int(size[1])
    return found


def search(lines: Sequence[Any]) -> list[int]:
    """The UIDs of a UID SEARCH's lines, in order."""
    return sorted({int(t) for line in lines for t in bytes(line).split() if t.isdigit()})


__all__ = [
    "BATCH_BYTES", "BATCH_MESSAGES", "MAX_MESSAGE", "batch", "bodies", "mailbox", "quoted",
    "said", "search", "sizes", "uid_set",
]  # fmt: skip
