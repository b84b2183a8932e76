"""Console pages: the bounces received (``/admin/bounces``: one row per recipient of a bounce
message, newest first, filtered by kind, address prefix and send, keyset pages, the totals by
kind) and one bounce message (``/admin/bounces/{id}``: how it came and was read, what it is
tied to, each recipient's finding; the raw message as escaped text for admins only).

The raw message is another mail server's answer, which quotes the mail we sent and often a
third party's own words (an auto-reply, a forwarder's notice): shown to admins only, cut at
:data:`RAW_SHOWN` bytes in the database, decoded as text and never rendered as HTML. Reads
``store.bounces`` (the readers ``mailer bounces list|show`` has beside); changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from mailer.models import BounceKind, Role
from mailer.storage.bounces import BounceRow
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import MAX_ID, ConsoleRoute
from mailer.web.console.people import cursor, not_found

HOME = "/admin/bounces"
PAGE = 50
MAX_ADDRESS = 320  # an address filter longer than any address is refused
RAW_SHOWN = 64 * 1024  # the raw message's bytes shown at most
RAW_READER = Role.ADMIN  # who sees the raw message
TOTALS_FRESH = 30.0  # seconds the totals by kind are shown before a new count
KINDS = tuple(k.value for k in BounceKind)
# C0 controls (but tab and line ends) and DEL shown as U+FFFD: the raw message is text on a page
_CONTROLS = dict.fromkeys((*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F), "\ufffd")


@dataclass(frozen=True, slots=True)
class BounceQuery:
    """The list's filter as the query string gives it; ``error`` says what did not parse."""

    kind: str | None
    address: str
    send_id: int | None
    error: str | None

    @classmethod
    def of(cls, ctx: ConsoleContext, request: Request, lang: str) -> BounceQuery:
        params = request.query_params
        say = ctx.views.say
        errors: list[str] = []
        kind: str | None = params.get("kind", "") or None
        if kind is not None and kind not in KINDS:
            errors.append(say(lang, "bounces_bad_kind", value=kind[:40]))
            kind = None
        address = params.get("address", "").strip()
        if len(address) > MAX_ADDRESS:
            errors.append(say(lang, "bounces_bad_address", max=MAX_ADDRESS))
            address = ""
        raw = params.get("send", "").strip()
        send_id = None
        if raw:
            if raw.isascii() and raw.isdigit() and int(raw) <= MAX_ID:
                send_id = int(raw)
            else:
                errors.append(say(lang, "bounces_bad_send", value=raw[:40]))
        return cls(kind, address, send_id, " ".join(errors) or None)

    def url(self, *, kind: str | None = None, before: int | None = None) -> str:
        """This filter's page (another ``kind``, or the page after ``before``)."""
        fields = {
            "kind": kind or self.kind or "",
            "address": self.address,
            "send": "" if self.send_id is None else str(self.send_id),
            "before": "" if before is None else str(before),
        }
        kept = {k: v for k, v in fields.items() if v}
        return HOME + (f"?{urlencode(kept)}" if kept else "")


class Words:
    """A bounce's kind, source, action and report in the staff member's words."""

    def __init__(self, ctx: ConsoleContext, lang: str) -> None:
        self.words = ctx.views.words[lang]

    def _word(self, key: str, fallback: str) -> str:
        return self.words.get(key, fallback)

    def kind(self, kind: str) -> str:
        return self._word(f"bounces_kind_{kind.replace('-', '_')}", kind)

    def source(self, source: str) -> str:
        if source.startswith("webhook:"):
            return self.words["bounces_source_webhook"].format(provider=source[8:])
        return self._word(f"bounces_source_{source}", source)

    def did(self, row: BounceRow) -> str:
        if row.forged:
            return self.words["bounces_did_forged"]
        return self._word(f"bounces_did_{row.action.replace(' ', '_')}", row.action)

    def report(self, report: str) -> str:
        return self._word(f"bounces_report_{report.replace('-', '_')}", report)

    def values(self) -> dict[str, Any]:
        return {"kind_word": self.kind, "source_word": self.source, "did_word": self.did,
                "report_word": self.report}  # fmt: skip


async def bounces_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/bounces``: the page of rows, newest first, with the totals by kind."""
    lang = staff.lang
    query = BounceQuery.of(ctx, request, lang)
    before = cursor(request)
    page = await ctx.store.bounces.rows(
        kind=query.kind, email_prefix=query.address, send_id=query.send_id, before=before,
        limit=PAGE,
    )  # fmt: skip

    async def count() -> dict[str, int]:
        return await ctx.store.bounces.totals(email_prefix=query.address, send_id=query.send_id)

    key = ("bounces", query.address.casefold(), query.send_id)
    totals = await ctx.live.get(key, count, fresh=TOTALS_FRESH)
    return ctx.views.render(
        "bounces.html", lang, title=ctx.views.say(lang, "bounces_title"), staff=staff,
        section="bounces", page=page, query=query, kinds=KINDS, totals=totals,
        total=sum(totals.values()),
        next_url=query.url(before=page.next) if page.next else None,
        first_url=query.url() if before is not None else None,
        error=query.error, status=400 if query.error else 200, **Words(ctx, lang).values(),
    )  # fmt: skip


def raw_text(raw: bytes) -> str:
    """A raw message as text for a page: UTF-8 (a wrong byte as U+FFFD), controls as U+FFFD.
    The template escapes it; nothing in it is ever read as HTML."""
    return raw.decode("utf-8", errors="replace").translate(_CONTROLS)


async def bounce_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/bounces/{id}``: one bounce message; the raw message for admins."""
    lang = staff.lang
    bounce_id = int(request.path_params["bounce_id"])
    shows_raw = staff.can(RAW_READER)
    found = await ctx.store.bounces.detail(bounce_id, raw_limit=RAW_SHOWN if shows_raw else 0)
    if found is None:
        return not_found(ctx, staff, "bounces_not_found", HOME)
    size = found.raw_size
    return ctx.views.render(
        "bounce.html", lang, title=ctx.views.say(lang, "bounce_title", id=bounce_id),
        staff=staff, section="bounces", bounce=found, shows_raw=shows_raw,
        raw=raw_text(found.raw) if shows_raw and found.raw is not None else None,
        cut=size is not None and size > RAW_SHOWN,
        size=None if size is None else ctx.views.number(size, lang),
        shown=ctx.views.number(RAW_SHOWN, lang), webhook=found.source.startswith("webhook:"),
        **Words(ctx, lang).values(),
    )  # fmt: skip


ROUTES = [
    ConsoleRoute("/bounces", bounces_page),
    ConsoleRoute("/bounces/{bounce_id:int}", bounce_page),
]
