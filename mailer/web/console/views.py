"""The console's templates (``templates/console/*.html``) and words
(``templates/console/strings/*.toml``, one file per part of the console, each with a ``[fr]``
and an ``[en]`` table holding the same keys), read and checked once when the app is built;
and the filters the templates share: a time in its zone, a count, a percentage.

Turns a template, a language and values into an HTML response; decides nothing.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from mailer.errors import ConfigError
from mailer.web.console.static import STATIC, asset_url
from mailer.web.headers import NO_STORE

LANGUAGES = ("fr", "en")
BABEL = {"fr": "fr_FR", "en": "en_GB"}


def read_words(folder: Path) -> dict[str, dict[str, str]]:
    """Every ``strings/*.toml`` merged, per language; a key defined twice, or in one language
    only, is refused with the file that holds it."""
    words: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
    where: dict[str, Path] = {}
    files = sorted((folder / "strings").glob("*.toml"))
    if not files:
        raise ConfigError(
            f"{folder / 'strings'}: no words for the console (*.toml); a templates folder of "
            "your own (MAILER_PATHS__TEMPLATES_DIR) needs the console/ folder of this release "
            "copied into it, or turn the console off with MAILER_CONSOLE__ENABLED=false"
        )
    for path in files:
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for lang in LANGUAGES:
            if lang not in table:
                raise ConfigError(f"{path}: no [{lang}] table")
        keys = set(table[LANGUAGES[0]])
        for lang in LANGUAGES[1:]:
            if set(table[lang]) != keys:
                diff = sorted(keys ^ set(table[lang]))
                raise ConfigError(f"{path}: [{lang}] and [{LANGUAGES[0]}] differ on {diff}")
        for key in keys:
            if key in where:
                raise ConfigError(f"{path}: the key {key!r} is already in {where[key]}")
            where[key] = path
        for lang in LANGUAGES:
            words[lang].update({k: str(v) for k, v in table[lang].items()})
    return words


class ConsoleViews:
    """The console's templates and words, per language, and the default time zone."""

    def __init__(self, templates_dir: Path, *, zone: str) -> None:
        folder = templates_dir / "console"
        self.words = read_words(folder)
        self.zone = zone
        self.env = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(default=True),
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["asset"] = asset_url
        self.env.filters["pct"] = _pct
        self.version = hashlib.sha256(repr(sorted(STATIC)).encode()).hexdigest()[:8]

    def render(
        self,
        template: str,
        lang: str,
        /,
        *,
        title: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            lang=lang,
            t=self.words[lang],
            title=title,
            when=lambda moment, zone=None: self.when(moment, lang, zone),
            number=lambda value: self.number(value, lang),
            zone=self.zone,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={**NO_STORE, **(headers or {})})

    def say(self, lang: str, key: str, **values: Any) -> str:
        return self.words[lang][key].format(**values)

    def when(self, moment: datetime | None, lang: str, zone: str | None = None) -> str:
        """A moment in the zone (the console's by default), with the zone named:
        ``15 janv. 2027, 09:00 CET``."""
        if moment is None:
            return "—"
        tz = ZoneInfo(zone or self.zone)
        local = moment.astimezone(tz)
        text = format_datetime(local, "d MMM y, HH:mm", tzinfo=tz, locale=BABEL[lang])
        return f"{text}\u00a0{local.tzname()}"

    def number(self, value: int | float, lang: str) -> str:
        """A count with the language's grouping (French: a narrow no-break space)."""
        text = format_decimal(value, locale=BABEL[lang], format="#,##0.#")
        return text.replace("\u00a0", "\u202f") if lang == "fr" else text


def _pct(part: int, whole: int) -> int:
    return 0 if whole <= 0 else min(100, round(100 * part / whole))
