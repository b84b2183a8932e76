"""The web app: the subscriber pages, ``/healthz`` and ``/metrics``, a Starlette app served by
uvicorn. Every name imported from ``mailer.web`` before it became a package is importable here.

- ``/u/TOKEN``: unsubscribe. ``GET`` shows a page and changes nothing (link scanners fetch
  URLs); ``POST`` from its buttons, or the RFC 8058 one-click request (a body of
  ``List-Unsubscribe=One-Click``, urlencoded or multipart, no cookie), unsubscribes from
  the link's list (or every list), records when and how, is idempotent and answers 200.
- ``/s/SLUG``: the sign-up form of a public list (double opt-in); ``/c/TOKEN``: the
  confirmation link of the mail it sends (a page with a button: ``GET`` changes nothing).
- ``/p/TOKEN``: preferences (lists and language).
- ``/healthz`` (JSON; 503 when the database or the scheduler is not well) and ``/metrics``
  (Prometheus text format, read from storage, so every daemon reports the same figures).

Only ``POST`` changes anything: ``GET``, ``HEAD`` and ``OPTIONS`` show or refuse, whatever
body they carry. A bad, tampered, foreign, expired or wrong-purpose token, or one naming an
erased subscriber, gets the same generic 404 page and changes nothing; the links of a test
send get a page saying so. Every response, error pages included, carries a CSP that forbids
framing and ``<base>``. Redirects go to ``MAILER_WEB__BASE_URL``, never to the Host header.
Pages speak the subscriber's language, else the browser's ``Accept-Language``, else the
list's. Storage failures answer 503 with nothing half-written (every change is one
transaction). The daemon embeds the server (:class:`WebServer`) and keeps the signals for
itself; ``mailer web`` runs it alone.

The modules, one noun each:

- :mod:`~mailer.web.app`: the app factory (routes, middleware, error pages);
- :mod:`~mailer.web.pages`: the subscriber pages; :mod:`~mailer.web.links`: the token in
  their URL; :mod:`~mailer.web.context`: what every page is handed;
- :mod:`~mailer.web.forms`: the form parsers;
- :mod:`~mailer.web.limits`: body size, client address and trusted proxies, rate limits;
- :mod:`~mailer.web.headers`: the security headers on every response;
- :mod:`~mailer.web.metrics`: ``/healthz``, the Prometheus collector, the loop lag;
- :mod:`~mailer.web.server`: the uvicorn embedding;
- :mod:`~mailer.web.locales` and :mod:`~mailer.web.views`: choosing the language, the page
  templates and their words.

Room is left beside the pages for ``console/`` (the staff console) and ``api/``: each will be a
subpackage with its own routes, mounted by the app factory, sharing the limits, headers,
views and locales.

The web app never sends mail: nothing under ``mailer.web`` imports ``mailer.dispatch`` or
``mailer.transport``, even indirectly (an import-linter contract). A sign-up's confirmation
mail is queued in storage and handed to the daemon through ``on_send``.
"""

from __future__ import annotations

from mailer.web.app import create_app
from mailer.web.context import PageContext
from mailer.web.forms import read_form, read_multi_form
from mailer.web.headers import SECURITY_HEADERS, SecurityHeaders
from mailer.web.limits import MAX_BODY, BodyLimit, IpLimit, TrustedProxies, client_ip
from mailer.web.links import Link, read_token
from mailer.web.locales import LOCALES, pick_locale
from mailer.web.metrics import LoopLag, Monitor, SchedulerProbe
from mailer.web.server import WebServer
from mailer.web.views import Views

__all__ = [
    "LOCALES",
    "MAX_BODY",
    "SECURITY_HEADERS",
    "BodyLimit",
    "IpLimit",
    "Link",
    "LoopLag",
    "Monitor",
    "PageContext",
    "SchedulerProbe",
    "SecurityHeaders",
    "TrustedProxies",
    "Views",
    "WebServer",
    "client_ip",
    "create_app",
    "pick_locale",
    "read_form",
    "read_multi_form",
    "read_token",
]
