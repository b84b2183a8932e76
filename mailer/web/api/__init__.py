"""The REST API under ``/api/v1/``: JSON, key-authenticated, described by an OpenAPI 3.1
document (``/api/v1/openapi.json``) built from the routes' own pydantic models, browsable at
``/api/v1/docs``.

- :mod:`~mailer.web.api.app`: the Starlette app the factory mounts;
- :mod:`~mailer.web.api.routes`: the route table (each resource module's ``ROUTES``);
- :mod:`~mailer.web.api.core`: a route (:class:`ApiRoute`), what a view is handed
  (:class:`Call`) and returns (:class:`Answer`), the endpoint that runs it (key, scope, rate
  limit, body, query, idempotency, problems);
- :mod:`~mailer.web.api.auth` (Bearer keys and scopes), :mod:`~mailer.web.api.problems` (RFC
  9457), :mod:`~mailer.web.api.paging` (cursors), :mod:`~mailer.web.api.idempotency`
  (``Idempotency-Key``, ``ETag``/``If-Match``), :mod:`~mailer.web.api.openapi` (the document),
  :mod:`~mailer.web.api.docs` (Swagger UI, vendored in ``static/``);
- the resources: :mod:`~mailer.web.api.people` (lists, subscribers, suppressions), with their
  models in :mod:`~mailer.web.api.schemas`.

Like the rest of ``mailer.web``, it never sends mail and never writes SQL: it calls the
store's nouns, and hands a confirmation send to ``on_send``.
"""

from mailer.web.api.app import api_app
from mailer.web.api.core import Answer, ApiRoute, Call
from mailer.web.api.problems import Problem
from mailer.web.api.routes import api_routes

__all__ = ["Answer", "ApiRoute", "Call", "Problem", "api_app", "api_routes"]
