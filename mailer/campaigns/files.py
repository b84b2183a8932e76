"""Campaign files read and planned: :func:`load` validates a TOML file with the model and
reads its bodies, :class:`Campaign` makes its times aware, :func:`plan` says when its sends
are due."""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from mailer import schedule
from mailer.campaigns.model import (
    EARLIEST,
    MAX_AHEAD,
    CampaignFile,
    CampaignFileError,
)
from mailer.models import CampaignKind, Content, EventInfo, EventText, LocaleText


class Campaign:
    """A validated campaign file, with its body loaded and its times made aware."""

    def __init__(
        self, path: Path, data: CampaignFile, bodies: dict[str, str], *, zone: str
    ) -> None:
        self.path = path
        self.data = data
        self.bodies = dict(bodies)
        self.zone = ZoneInfo(data.timezone or zone)
        sections = data.sections()
        # A file with no words at all (a template-only newsletter, say) is neutral: every
        # recipient gets their own language's template, as before languages.
        wordless = (
            not data.content
            and not data.language
            and not any((data.subject, data.body, data.body_file, data.preheader))
        )
        texts = () if wordless else tuple(
            LocaleText(
                locale, subject=section.subject, body=bodies.get(locale, section.body),
                preheader=section.preheader,
            )
            for locale, section in sections.items()
        )  # fmt: skip
        self.content = Content(
            name=data.name,
            kind=data.kind.value,
            subject=texts[0].subject if texts else "",
            body=texts[0].body if texts else "",
            body_format=data.body_format,
            timezone=self.zone.key,
            template=data.template,
            texts=texts,
        )
        self.event_texts = tuple(
            EventText(locale, s.event.title, s.event.place, s.event.description)
            for locale, s in sections.items()
            if s.event is not None
        )

    def spec(self) -> dict[str, Any]:
        """The campaign as data (JSON types), every body inlined (``body_file`` replaced by
        the text read): what is stored, shown in the console, and validated again by
        :func:`from_data` into the same campaign."""
        data = self.data.model_dump(mode="json", exclude_none=True)
        for locale, text in self.bodies.items():
            if data.get("content"):
                data["content"][locale].pop("body_file", None)
                data["content"][locale]["body"] = text
            else:
                data.pop("body_file", None)
                data["body"] = text
        return data

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages it is written in; () for a file with no words (every template's)."""
        return self.content.languages

    @property
    def name(self) -> str:
        return self.data.name

    def local(self, value: datetime, what: str) -> tuple[datetime, str]:
        """A time from the file as UTC (naive means the campaign's zone); DST-checked."""
        if value.replace(tzinfo=None) < EARLIEST:
            raise CampaignFileError(
                f"{self.path}: {what}: {value:%Y-%m-%d} has passed long ago; check the year"
            )
        try:
            return schedule.resolve(value, self.zone, ambiguous=self.data.ambiguous, what=what)
        except schedule.ScheduleError as exc:
            raise CampaignFileError(f"{self.path}: {exc}") from None
        except OverflowError:
            raise CampaignFileError(
                f"{self.path}: {what}: {value:%Y-%m-%d %H:%M} is out of range; check the year"
            ) from None

    def ahead(self, due: datetime, what: str, *, now: datetime) -> datetime:
        """``due``, if it is not more than :data:`MAX_AHEAD` after ``now``."""
        if due - now > MAX_AHEAD:
            raise CampaignFileError(
                f"{self.path}: {what}: {due.astimezone(self.zone):%Y-%m-%d} is more than "
                f"{MAX_AHEAD.days // 365} years ahead; check the year"
            )
        return due

    def event(
        self,
        *,
        domain: str,
        sequence: int = 0,
        status: str = "confirmed",
        shift: timedelta | None = None,
    ) -> EventInfo | None:
        section = self.data.event
        if section is None:
            return None
        start, _ = self.local(section.start, "event.start")
        end = self.local(section.end, "event.end")[0] if section.end else None
        if shift is not None:
            start, end = start + shift, (end + shift if end else None)
        return EventInfo(
            uid=f"{self.data.name}@{domain}",
            title=section.title,
            start=start,
            end=end,
            timezone=self.zone.key,
            place=section.place,
            link=section.link,
            description=section.description,
            sequence=sequence,
            status=status,
            texts=self.event_texts,
            invite=section.invite.value,
            rsvp=section.rsvp,
        )


DEMO_DAY = 20  # seconds: how long a day of reminder offset lasts in a rehearsal (--demo)


def demo_start(now: datetime) -> datetime:
    """Where --demo puts an event: three to four minutes from now, on a whole minute."""
    return now.replace(second=0, microsecond=0) + timedelta(minutes=4)


def plan(
    campaign: Campaign, *, now: datetime, domain: str, demo: bool = False, horizon: int = 3
) -> tuple[list[schedule.Planned], list[str]]:
    """The sends of a campaign with their due times (UTC), and notes on choices made.

    With ``demo`` an event starts three to four minutes from now and a day of reminder offset lasts
    twenty seconds, so a newcomer sees the invitation and the reminders go out.
    """
    data = campaign.data
    notes: list[str] = []
    path = campaign.path
    if data.kind == CampaignKind.ANNOUNCEMENT:
        if data.send_at in (None, "now"):
            return [schedule.Planned("announce", "announcement", now)], notes
        if isinstance(data.send_at, str):
            raise CampaignFileError(f'{path}: send_at: expected a local time or "now"')
        due, note = campaign.local(data.send_at, "send_at")
        campaign.ahead(due, "send_at", now=now)
        return [schedule.Planned("announce", "announcement", due, note)], [n for n in [note] if n]
    if data.kind == CampaignKind.NEWSLETTER:
        assert data.newsletter is not None
        until = (
            campaign.local(data.newsletter.until, "newsletter.until")[0]
            if data.newsletter.until
            else None
        )
        try:
            issues = schedule.newsletter_issues(
                data.newsletter.cron, campaign.zone, after=now, until=until, count=horizon
            )
        except schedule.ScheduleError as exc:
            raise CampaignFileError(f"{path}: newsletter.{exc}") from None
        return issues, notes
    section = data.event
    assert section is not None
    shift = None
    if demo:
        real = campaign.event(domain=domain)
        assert real is not None
        shift = demo_start(now) - real.start
    event = campaign.event(domain=domain, shift=shift)
    assert event is not None
    for value, what in ((section.start, "event.start"), (section.end, "event.end")):
        fold = campaign.local(value, what)[1] if value is not None and not demo else None
        notes += [fold] if fold else []
    campaign.ahead(event.start, "event.start", now=now)
    if event.end is not None:
        campaign.ahead(event.end, "event.end", now=now)
    if event.start <= now:
        raise CampaignFileError(
            f"{path}: event.start: {event.start.astimezone(campaign.zone):%Y-%m-%d %H:%M} has "
            "passed; an event campaign is for an event ahead (try --demo to rehearse it)"
        )
    if section.announce == "now" or demo:
        invitation = schedule.Planned("invitation", "invitation", now)
    elif isinstance(section.announce, str):
        raise CampaignFileError(f'{path}: event.announce: expected a local time or "now"')
    else:
        due, note = campaign.local(section.announce, "event.announce")
        if due >= event.start:
            raise CampaignFileError(
                f"{path}: event.announce: the invitation must go before the start"
            )
        invitation = schedule.Planned("invitation", "invitation", due, note)
        notes += [note] if note else []
    try:
        reminders, skipped = schedule.reminders(
            event.start,
            section.reminders,
            now=now,
            zone=campaign.zone,
            scale=DEMO_DAY / 86400 if demo else 1.0,
        )
    except schedule.ScheduleError as exc:
        raise CampaignFileError(f"{path}: event.{exc}") from None
    return [invitation, *reminders], notes + skipped


def load(
    path: Path, *, default_zone: str = "Europe/Paris", templates_dir: Path | None = None
) -> Campaign:
    """Read and validate a campaign file; :class:`CampaignFileError` names file and field.

    A file without ``timezone`` is in ``default_zone`` (MAILER_SCHEDULER__TIMEZONE).
    ``body_file`` is read only from the campaign file's folder or below (links resolved);
    with ``templates_dir``, a ``template`` must exist there (and not link out of it)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CampaignFileError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise CampaignFileError(
            f"{path}: not valid TOML for a campaign (arrays or tables nested too deeply)"
        ) from None
    return from_data(
        raw, source=path, default_zone=default_zone, templates_dir=templates_dir, folder=path.parent
    )


def from_data(
    raw: dict[str, Any],
    *,
    source: Path,
    default_zone: str = "Europe/Paris",
    templates_dir: Path | None = None,
    folder: Path | None = None,
) -> Campaign:
    """Validate a campaign given as data (a file's tables, a stored spec, the console's
    form) with :class:`CampaignFile`; :class:`CampaignFileError` names ``source`` and the field,
    one line per error (``source: field: message``), the same words wherever it comes from.

    ``body_file`` is read from ``folder`` (refused without one: data from the console or the
    API carries its bodies). A local time given as text (``"2027-01-15T09:00"``, as JSON and
    HTML forms give them) is read as one."""
    try:
        data = CampaignFile.model_validate(_times_read(raw))
    except RecursionError:
        raise CampaignFileError(f"{source}: values nested too deeply for a campaign") from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "(file)"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{source}: {field}: {message}")
        raise CampaignFileError("\n".join(lines)) from None
    bodies: dict[str, str] = {}
    for locale, section in data.sections().items():
        if not section.body_file:
            continue
        field = f"content.{locale}.body_file" if data.content else "body_file"
        if folder is None:
            raise CampaignFileError(f"{source}: {field}: give the body itself, not a file name")
        body_path = _inside(source, folder, section.body_file, field, "the campaign's folder")
        try:
            bodies[locale] = body_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CampaignFileError(f"{source}: {field}: cannot read {body_path} ({exc})") from None
    if templates_dir is not None:
        _check_template(source, templates_dir, data.template or data.kind.value, data.languages())
    return Campaign(source, data, bodies, zone=default_zone)


def _times_read(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``send_at`` and ``event.announce`` read as local times when they are text
    in ISO form (a union of text and time would otherwise keep the text)."""
    out = dict(raw)

    def read(value: Any) -> Any:
        if isinstance(value, str) and value not in ("", "now"):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                return value
        return value

    if "send_at" in out:
        out["send_at"] = read(out["send_at"])
    event = out.get("event")
    if isinstance(event, dict) and "announce" in event:
        out["event"] = {**event, "announce": read(event["announce"])}
    return out


def _inside(path: Path, folder: Path, name: str, field: str, what: str) -> Path:
    """``folder / name`` with links resolved, if it is inside ``folder`` (links resolved)."""
    root = folder.resolve()
    try:
        target = (folder / name).resolve()
    except (OSError, RuntimeError) as exc:  # a link loop
        raise CampaignFileError(f"{path}: {field}: cannot resolve {name!r} ({exc})") from None
    if not target.is_relative_to(root):
        raise CampaignFileError(
            f"{path}: {field}: {name!r} is outside {what} ({root}); keep the file there"
        )
    return target


def _check_template(path: Path, templates_dir: Path, template: str, languages: list[str]) -> None:
    """The template kind exists in the templates folder in each of the campaign's languages,
    and none of its files links out."""
    email = templates_dir / "email"
    found = sorted(email.glob(f"{template}.*.html")) + sorted(email.glob(f"{template}.*.txt"))
    have = sorted(f.name.split(".")[1] for f in found if f.name.endswith(".html"))
    if not have:
        raise CampaignFileError(
            f"{path}: template: no {email}/{template}.fr.html (or another locale) in the "
            "templates folder"
        )
    for language in languages:
        if language not in have:
            field = "template" if template not in {k.value for k in CampaignKind} else "content"
            raise CampaignFileError(
                f"{path}: {field}: the campaign is written in {language!r} but there is no "
                f"{email}/{template}.{language}.html (templates exist for: {', '.join(have)}); "
                "add it or write the campaign in one of those"
            )
    for file in found:
        _inside(path, templates_dir, str(file.relative_to(templates_dir)), "template",
                "the templates folder")  # fmt: skip
