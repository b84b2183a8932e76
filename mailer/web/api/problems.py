"""The REST API's errors as RFC 9457 ``application/problem+json``: :class:`Problem` (raise it
from a view, or anywhere under one), its pydantic model :class:`ProblemBody` (described once in
the OpenAPI document), and :func:`field_errors`, which turns pydantic's errors into
``errors: [{field, message}]`` in the words of the validators the CLI shares.

Pure: no storage, no request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import ErrorDetails
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://mailer.invalid/problems/"  # a problem's ``type``: this and its slug
NO_STORE = "no-store"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    412: "Precondition failed",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    428: "Precondition required",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class FieldError(BaseModel):
    """One refused field: where (``email``, ``attributes.team``, ``query.limit``) and why."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="The field refused, dotted (body fields bare, `query.x`).")
    message: str = Field(description="Why, in the words the CLI uses for the same mistake.")


class ProblemBody(BaseModel):
    """An error (RFC 9457 problem details)."""

    model_config = ConfigDict(title="Problem", extra="allow")

    type: str = Field(description="A URI naming the kind of problem.")
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.", ge=100, le=599)
    detail: str = Field(description="What went wrong this time, and what to do.")
    errors: list[FieldError] | None = Field(
        default=None, description="The fields refused (validation problems only)."
    )


class Problem(Exception):
    """An answer that is an error: raise it to stop a view and answer the problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or TITLES.get(status, "error").lower().replace(" ", "-")
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            found["errors"] = [e.model_dump() for e in self.errors]
        return found | self.extra

    def response(self) -> Response:
        return problem_response(self.body(), self.status, self.headers)


def problem_response(
    body: Mapping[str, Any], status: int, headers: Mapping[str, str] | None = None
) -> Response:
    """A problem document as a response (never cached)."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return Response(
        text,
        status_code=status,
        media_type=PROBLEM_JSON,
        headers={"Cache-Control": NO_STORE, **(headers or {})},
    )


def invalid(field: str, message: str, *, status: int = 422) -> Problem:
    """A validation problem about one field."""
    return Problem(
        status,
        f"{field}: {message}",
        slug="validation",
        errors=[FieldError(field=field, message=message)],
    )


def field_errors(errors: Iterable[ErrorDetails], *, prefix: str = "") -> list[FieldError]:
    """pydantic's errors as ``{field, message}``: the location dotted (``prefix`` first, e.g.
    ``query``), a validator's own ``ValueError`` message as it wrote it (the CLI's words)."""
    found: list[FieldError] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part != "__root__"]
        field = ".".join([prefix, *loc] if prefix else loc) or (prefix or "body")
        message = str(error.get("msg", "is not valid"))
        if error.get("type") == "value_error":
            message = message.removeprefix("Value error, ")
        elif error.get("type") == "missing":
            message = "is required"
        elif error.get("type") == "extra_forbidden":
            message = "is not a field of this resource; remove it"
        found.append(FieldError(field=field[:200], message=message[:500]))
    return found


def validation_problem(errors: list[FieldError]) -> Problem:
    """A 422 naming every field refused (the first in ``detail``)."""
    first = errors[0] if errors else FieldError(field="body", message="is not valid")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Problem(422, f"{first.field}: {first.message}{more}", slug="validation", errors=errors)
