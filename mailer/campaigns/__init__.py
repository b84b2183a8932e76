"""Campaign files: a small TOML file per campaign, validated with pydantic at the edge.

```toml
name = "journee-recherche-2024"
kind = "event"                      # announcement, event or newsletter
lists = ["researchers", "clinicians"]
timezone = "Europe/Paris"

[content.fr]                        # one table per language; the first is the fallback
subject = ""                        # empty: the template's subject
body_file = "journee-recherche-2024.fr.md"   # or body = "Markdown text"
preheader = "Le programme et l'inscription"

[content.en]
body_file = "journee-recherche-2024.en.md"
event = { title = "8th CRI-IMIDIATE / FAI²R research day" }   # the event's words in English

[event]
title = "8e journée de recherche CRI-IMIDIATE / FAI²R"
start = 2024-01-15T09:00:00         # local time in the campaign's zone
end = 2024-01-15T17:30:00
place = "Hôpital Pitié-Salpêtrière, Paris"
invite = "request"                  # an invitation card in Outlook and Gmail; or "publish"
```

A file in one language may give ``subject``, ``body`` (or ``body_file``) and ``preheader`` at
the top instead, with ``language`` (French by default). Each recipient gets the language of
the subscriber, else the list's default, else the campaign's first language.

:class:`CampaignFile` is the one model of a campaign: files are validated with it, and the
console and the API describe campaigns with it. Every error names the file, the field and what
is expected.
"""

from mailer.campaigns.files import DEMO_DAY, Campaign, demo_start, from_data, load, plan
from mailer.campaigns.model import (
    EARLIEST,
    MAX_AHEAD,
    NAME,
    CampaignFile,
    CampaignFileError,
    ContentSection,
    EventSection,
    EventWords,
    NewsletterSection,
    SenderOverride,
    header_text,
    language_code,
    one_address,
    one_line,
)

__all__ = [
    "DEMO_DAY",
    "EARLIEST",
    "MAX_AHEAD",
    "NAME",
    "Campaign",
    "CampaignFile",
    "CampaignFileError",
    "ContentSection",
    "EventSection",
    "EventWords",
    "NewsletterSection",
    "SenderOverride",
    "demo_start",
    "from_data",
    "header_text",
    "language_code",
    "load",
    "one_address",
    "one_line",
    "plan",
]
