"""The staff console: server-rendered pages under ``/admin/`` (Jinja templates in
``templates/console/``, htmx and Pico.css vendored in ``static/``, no build step, nothing
loaded from elsewhere), in French and English.

- :mod:`~mailer.web.console.routes`: the route table, mounted by the app factory (or served
  on its own listener, ``MAILER_CONSOLE__HOST``/``PORT``);
- :mod:`~mailer.web.console.guard`: the gate of every route (session, role, CSRF);
- :mod:`~mailer.web.console.session`: the session cookie, CSRF tokens, the trusted proxy header;
- :mod:`~mailer.web.console.login`: signing in and out, one's own account;
- :mod:`~mailer.web.console.throttle`: failed sign-ins per account and per address;
- :mod:`~mailer.web.console.context`: what every page is handed, and the audit log call;
- :mod:`~mailer.web.console.views` and :mod:`~mailer.web.console.static`: templates, words,
  filters, and the static files;
- the pages: :mod:`~mailer.web.console.dashboard`, :mod:`~mailer.web.console.sends`,
  :mod:`~mailer.web.console.people` (lists, members, a subscriber),
  :mod:`~mailer.web.console.imports`, :mod:`~mailer.web.console.suppressions`,
  :mod:`~mailer.web.console.audit`, :mod:`~mailer.web.console.users` (staff accounts).

Roles (``models.Role``) are hierarchical: viewer < editor < sender < admin; each route names
the role its ``GET`` and its ``POST`` need. Like the rest of ``mailer.web``, the console never
imports dispatch or transport: a retried or resumed send is handed to ``on_send``.
"""

from mailer.web.console.routes import CONSOLE_ROUTES, console_routes

__all__ = ["CONSOLE_ROUTES", "console_routes"]
