"""Choosing the language of a page: ``?lang=``, else the subscriber's, else the browser's
``Accept-Language``, else the list's, else the fallback.

Owns the list of languages the pages speak (:data:`LOCALES`); the words themselves are in
``templates/web/strings.toml``, read by :mod:`mailer.web.views`. Reads the request only, never
storage.
"""

from __future__ import annotations

from starlette.requests import Request

from mailer.models import FALLBACK_LOCALE

LOCALES = ("fr", "en")


def pick_locale(request: Request, *preferred: str | None) -> str:
    """``?lang=``, else the first known of ``preferred`` (the subscriber's locale), else the
    browser's Accept-Language, else the fallback."""
    asked = request.query_params.get("lang")
    if asked in LOCALES:
        return str(asked)
    for value in preferred[:1]:
        if value and value.split("-")[0].split("_")[0].lower() in LOCALES:
            return value.split("-")[0].split("_")[0].lower()
    header = request.headers.get("accept-language", "")
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        lang = tag.strip().split("-")[0].lower()
        if lang in LOCALES and quality > 0:
            ranked.append((-quality, position, lang))
    if ranked:
        return min(ranked)[2]
    for value in preferred[1:]:
        if value and value.split("-")[0].lower() in LOCALES:
            return value.split("-")[0].lower()
    return FALLBACK_LOCALE
