"""Choosing the language of a page: ``?lang=``, else the subscriber's, else the browser's
``Accept-Language``, else the list's, else the fallback.

Owns the list of languages the pages speak (:data:`LOCALES`); the words themselves are in
``templates/web/strings.toml``, read by :mod:`mailer.web.views`. Reads the request only, never
storage.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, available_timezones

from babel.dates import get_timezone_location
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


# The time zones the preferences page offers (where the network's readers live: France and its
# overseas departments, Europe, the Americas, Africa, Asia, Oceania); a subscriber's own zone
# is offered too when it is another one.
ZONES = (
    "Europe/Paris", "Europe/London", "Europe/Brussels", "Europe/Zurich", "Europe/Berlin",
    "Europe/Madrid", "Europe/Rome", "Europe/Lisbon", "Europe/Amsterdam", "Europe/Athens",
    "America/Guadeloupe", "America/Martinique", "America/Cayenne", "Indian/Reunion",
    "Indian/Mayotte", "Pacific/Noumea", "Pacific/Tahiti", "America/Montreal",
    "America/New_York", "America/Los_Angeles", "America/Sao_Paulo", "Africa/Casablanca",
    "Africa/Algiers", "Africa/Tunis", "Africa/Dakar", "Africa/Abidjan", "Asia/Tokyo",
    "Asia/Shanghai", "Asia/Kolkata", "Asia/Dubai", "Australia/Sydney", "UTC",
)  # fmt: skip
KNOWN_ZONES = frozenset(available_timezones())


def zone_choices(lang: str, current: str | None) -> list[tuple[str, str]]:
    """(zone, label) for the preferences page, in ``lang``: "Londres (Europe/London)"."""
    zones = list(ZONES)
    if current and current not in zones and current in KNOWN_ZONES:
        zones.insert(0, current)
    out = []
    for key in zones:
        city = "UTC" if key == "UTC" else get_timezone_location(ZoneInfo(key), locale=lang,
                                                                return_city=True)  # fmt: skip
        out.append((key, f"{city} ({key})" if key != "UTC" else "UTC"))
    return out
