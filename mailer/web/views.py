"""The page templates and their words, per language: ``templates/web/*.html`` and
``templates/web/strings.toml``, read and checked once when the app is built.

Turns a template name, a language and values into an HTML response; decides nothing (which
page, which status and which language are the callers' choice).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from mailer.errors import ConfigError
from mailer.web.headers import NO_STORE
from mailer.web.locales import LOCALES


class Views:
    """The page templates and their words, per language."""

    def __init__(self, templates_dir: Path) -> None:
        folder = templates_dir / "web"
        strings = folder / "strings.toml"
        try:
            table = tomllib.loads(strings.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"{strings}: cannot read the words of the web pages ({exc.strerror}); "
                "check MAILER_PATHS__TEMPLATES_DIR"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{strings}: {exc}") from None
        missing = [lang for lang in LOCALES if lang not in table]
        if missing:
            raise ConfigError(f"{strings}: no [{missing[0]}] table")
        keys = set(table[LOCALES[0]])
        for lang in LOCALES[1:]:
            if set(table[lang]) != keys:
                diff = sorted(keys ^ set(table[lang]))
                raise ConfigError(f"{strings}: [{lang}] and [{LOCALES[0]}] differ on {diff}")
        self.words: dict[str, dict[str, str]] = {lang: table[lang] for lang in LOCALES}
        self.env = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(default=True),
            auto_reload=False,
        )

    def render(
        self, template: str, lang: str, /, *, title: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            lang=lang,
            t=self.words[lang],
            title=title,
            languages=[(code, self.words[code]["lang_name"]) for code in LOCALES],
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=NO_STORE)

    def say(self, lang: str, key: str, **values: str) -> str:
        return self.words[lang][key].format(**values)

    def message(
        self, lang: str, key: str, *, status: int, notice: str | None = None, **values: str
    ) -> HTMLResponse:
        """A page of one title and one paragraph (``KEY_title``, ``KEY_text``)."""
        return self.render(
            "message.html",
            lang,
            title=self.say(lang, f"{key}_title", **values),
            status=status,
            notice=notice,
            paragraphs=[self.say(lang, f"{key}_text", **values)],
        )
