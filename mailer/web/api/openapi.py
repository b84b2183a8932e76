"""The OpenAPI 3.1 document of the REST API, built from the route table itself: each
:class:`~mailer.web.api.core.ApiRoute`'s method, path, scope and pydantic models (the same
models the routes validate with, the campaign model of campaign files and the console among
them), so there is no second copy of a schema. Components come from
``pydantic.json_schema.models_json_schema`` with ``#/components/schemas/{model}`` refs.

Every protected operation names its scope in ``security`` (``bearer: [scope]``) and in its
description; every error is the one ``Problem`` schema, ``application/problem+json``. The
public routes (this document, the docs page) are left out of the document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from mailer import __version__
from mailer.web.api.core import BODIES, JSON, ApiRoute
from mailer.web.api.problems import PROBLEM_JSON, TITLES, ProblemBody

PREFIX = "/api/v1"
REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{(\w+)(?::(\w+))?}")
ALWAYS = (400, 401, 403, 429, 503)  # any protected operation may answer these
WITH_BODY = (413, 415, 422)
# A path parameter: one URL segment, never "." or ".." (which a client folds away).
SEGMENT = r"^[A-Za-z0-9_@+~-][A-Za-z0-9_@.+~-]{0,199}$"
DESCRIPTION = """The REST API of mailer: lists, subscribers, suppressions, campaigns, sends,
bounces and webhooks.

Authenticate with `Authorization: Bearer mlr_...` (keys from `mailer api-keys create`); each
operation names the scope it needs. Errors are RFC 9457 problems
(`application/problem+json`; validation problems list each field refused in `errors`). Lists
are paginated by an opaque `cursor` (`next` of the previous page, also in the `Link` header)
and `limit` (default 50, at most 500). Every POST takes an `Idempotency-Key`: the same key and
body get the first answer again for 24 hours, another body with the same key is a 422.
Updates answer an `ETag`; send it back as `If-Match` to be refused with 412 if the resource
changed meanwhile. Times are ISO 8601 with their offset (UTC). Each key may make
MAILER_API__RATE_PER_MINUTE requests a minute per daemon, then gets 429 with `Retry-After`."""


def documented(routes: Sequence[ApiRoute]) -> list[ApiRoute]:
    return [r for r in routes if r.scope is not None]


def document(routes: Sequence[ApiRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (a JSON-ready dict)."""
    shown = documented(routes)
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ProblemBody, "serialization")]
    for route in shown:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.answer is not None:
            wanted.append((route.answer, "serialization"))
    wanted = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(wanted, ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for route in shown:
        operation = _operation(route, refs, schemas)
        paths.setdefault(_PARAM.sub(r"{\1}", route.path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "mailer", "version": __version__, "description": DESCRIPTION},
        "servers": [{"url": PREFIX}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`mlr_...`) from `mailer api-keys create`.",
                }
            },
        },
        "tags": _tags(shown),
    }


def _tags(routes: Sequence[ApiRoute]) -> list[dict[str, str]]:
    return [{"name": t} for t in dict.fromkeys(r.tag for r in routes if r.tag)]


def _operation(route: ApiRoute, refs: dict[Any, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    assert route.scope is not None
    scope = route.scope.value
    text = (route.description + "\n\n" if route.description else "") + f"Scope: `{scope}`."
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "description": text,
        "security": [{"bearer": [scope]}],
        "x-scope": scope,
        "parameters": _parameters(route, schemas),
        "responses": _responses(route, refs),
    }
    if route.tag:
        operation["tags"] = [route.tag]
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": refs[(route.body, "validation")]}},
        }
    return operation


def _parameters(route: ApiRoute, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for name, kind in _PARAM.findall(route.path):
        schema: dict[str, Any] = (
            {"type": "integer", "minimum": 0, "maximum": 2**53}
            if kind == "int"
            else {"type": "string", "minLength": 1, "maxLength": 200, "pattern": SEGMENT}
        )
        found.append({"name": name, "in": "path", "required": True, "schema": schema})
    if route.query is not None:
        query = route.query.model_json_schema(ref_template=REF)
        schemas.update(query.pop("$defs", {}))
        required = set(query.get("required", []))
        for name, schema in query.get("properties", {}).items():
            parameter: dict[str, Any] = {
                "name": name, "in": "query", "required": name in required,
                "schema": {k: v for k, v in schema.items() if k != "description"},
            }  # fmt: skip
            if schema.get("description"):
                parameter["description"] = schema["description"]
            if schema.get("type") == "array":
                parameter["explode"] = True
            found.append(parameter)
    if route.method == "POST":
        found.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Any unique string (a UUID): the same key and body get the "
                "first answer again for 24 h; another body with it is a 422.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if route.etag and route.method in BODIES | {"DELETE"}:
        found.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": "The ETag you read: the change is refused with 412 if the "
                "resource changed since.",
                "schema": {"type": "string", "maxLength": 200},
            }
        )
    return found


def _responses(route: ApiRoute, refs: dict[Any, Any]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": route.summary}
    if route.answer is not None and route.media == JSON:
        success["content"] = {JSON: {"schema": refs[(route.answer, "serialization")]}}
    elif route.media != JSON:
        success["content"] = {route.media: {"schema": {"type": "string"}}}
    headers: dict[str, Any] = {}
    if route.etag:
        headers["ETag"] = {"description": "The resource's version.", "schema": {"type": "string"}}
    if route.answer is not None and route.answer.__name__.endswith("Page"):
        headers["Link"] = {
            "description": 'The next page: `<URL>; rel="next"` (absent on the last page).',
            "schema": {"type": "string"},
        }
    if headers:
        success["headers"] = headers
    responses: dict[str, Any] = {str(route.status): success}
    codes = set(ALWAYS) | set(route.problems)
    if _PARAM.search(route.path):
        codes.add(404)
    if route.body is not None:
        codes |= set(WITH_BODY)
    if route.query is not None:
        codes.add(422)
    if route.method == "POST":
        codes |= {409, 422}
    if route.etag and route.method in BODIES | {"DELETE"}:
        codes.add(412)
    problem = refs[(ProblemBody, "serialization")]
    for code in sorted(codes):
        entry: dict[str, Any] = {
            "description": TITLES.get(code, "Error"),
            "content": {PROBLEM_JSON: {"schema": problem}},
        }
        if code == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
            }
        if code == 429:
            entry["headers"] = {
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}
            }
        responses[str(code)] = entry
    return responses
