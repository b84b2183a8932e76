"""What an approval freezes: a snapshot of the content and template versions (by hash), the
lists with their audience, the languages, the pre-flight's result, who and when.

The snapshot is a plain dict (JSON), stored with the approval (``campaigns.approval``)::

    {"version": 3, "content_sha256": "...", "templates_sha256": "...",
     "lists": {"researchers": 1200}, "audience": 1350, "languages": ["fr", "en"],
     "preflight": {"total": 1350, "failed": 0} | None, "by": "boss@example.org",
     "at": "2026-12-02T10:00:00+00:00", "note": ""}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from mailer import campaigns
from mailer.storage import Store
from mailer.workflow.specs import spec_of

NOTE_NOT_REQUIRED = "approval not required (MAILER_CONSOLE__REQUIRE_APPROVAL=false)"
NOTE_FILE = "campaign create of a file: the operator's approval"


class Audience(dict[str, int]):
    """Members who would get mail now, per list (slug -> count), and ``total``: the distinct
    people across the lists (someone on two lists gets one mail)."""

    def __init__(self, counts: Mapping[str, int], total: int) -> None:
        super().__init__(counts)
        self.total = total


def content_hash(spec: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of the spec's canonical JSON (keys sorted, no spaces)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def templates_hash(templates_dir: Path) -> str:
    """The SHA-256 (hex) over every file under ``templates_dir/email``, in the order of their
    relative paths, each path and content length-prefixed (so no two folders hash alike):
    any change to a mail template or a shared layout changes it."""
    digest = hashlib.sha256()
    root = templates_dir / "email"
    files = sorted(
        (p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()
    ) if root.is_dir() else []  # fmt: skip
    for relative, path in files:
        for part in (relative.encode("utf-8"), path.read_bytes()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


async def audience(store: Store, slugs: Iterable[str]) -> Audience:
    """How many members of each list would get mail now (subscribed, active, not
    suppressed), and how many people that is across the lists, counted in the database;
    NotFoundError for a list that does not exist (any more)."""
    counts, total = await store.lists.audience(list(slugs))
    return Audience(counts, total)


def snapshot(
    campaign: campaigns.Campaign,
    *,
    templates_dir: Path,
    audience: Mapping[str, int],
    version: int,
    by: str,
    now: datetime,
    note: str = "",
    preflight: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The snapshot an approval of ``campaign`` at ``version`` freezes (see the module)."""
    total = audience.total if isinstance(audience, Audience) else sum(audience.values())
    return {
        "version": version,
        "content_sha256": content_hash(spec_of(campaign)),
        "templates_sha256": templates_hash(templates_dir),
        "lists": dict(audience),
        "audience": total,
        "languages": list(campaign.data.languages()),
        "preflight": None if preflight is None else {
            "total": int(preflight["total"]), "failed": int(preflight["failed"])
        },
        "by": by,
        "at": now.isoformat(),
        "note": note,
    }  # fmt: skip
