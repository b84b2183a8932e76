"""Cursor pagination for the REST API's lists: :class:`PageQuery` (``?cursor=&limit=``),
the opaque cursor (URL-safe base64 of ``v1:<value>``, the last item's position in the
storage's keyset order), and :func:`page_model`, the ``{"data": [...], "next": ...}`` model of
a page of some item model (one named class per item, so the OpenAPI document names it).

A cursor that does not decode is a 422 naming ``query.cursor``; the ``Link: <...>;
rel="next"`` header of a page is made by :func:`link_header`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.requests import Request

from mailer.web.api.core import Answer
from mailer.web.api.problems import invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_VERSION = "v1:"
MAX_CURSOR = 200


class PageQuery(BaseModel):
    """The query parameters of every paginated list."""

    model_config = ConfigDict(extra="ignore")

    cursor: str | None = Field(
        default=None,
        max_length=MAX_CURSOR,
        description="The `next` of the previous page (opaque); absent for the first page.",
    )
    limit: int = Field(
        default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page (1 to 500)."
    )


def encode_cursor(value: int | str) -> str:
    """The opaque cursor of a position (a row's keyset value)."""
    raw = f"{_VERSION}{value}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The position a cursor names (None: the first page); a 422 if it is not ours."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith(_VERSION) or len(raw) <= len(_VERSION):
        raise invalid("query.cursor", "is not a cursor this API gave; start again without it")
    return raw[len(_VERSION) :]


def int_cursor(cursor: str | None) -> int | None:
    """A cursor naming a row id (a keyset over ids), or None for the first page."""
    value = decode_cursor(cursor)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise invalid("query.cursor", "is not a cursor this API gave; start again without it")
    return int(value)


def link_header(request: Request, next_cursor: str | None) -> dict[str, str]:
    """The ``Link`` header to the next page (relative to the API, so no Host is trusted)."""
    if next_cursor is None:
        return {}
    query = dict(request.query_params) | {"cursor": next_cursor}
    return {"Link": f'<{request.url.path}?{urlencode(query)}>; rel="next"'}


_PAGES: dict[type[BaseModel], type[BaseModel]] = {}


def page_model(item: type[BaseModel], name: str | None = None) -> type[BaseModel]:
    """The model of a page of ``item`` (``ListPage`` for ``List``...), made once per item."""
    found = _PAGES.get(item)
    if found is None:
        found = create_model(
            name or f"{item.__name__}Page",
            __doc__=f"A page of {item.__name__} items, and the cursor of the next.",
            data=(list[item], Field(description="The items of this page.")),  # type: ignore[valid-type]
            next=(
                str | None,
                Field(description="The cursor of the next page; null on the last page."),
            ),
        )
        _PAGES[item] = found
    return found


def page_of(item: type[BaseModel], data: list[Any], next_cursor: str | None) -> BaseModel:
    """A page to answer."""
    return page_model(item)(data=data, next=next_cursor)


def page_answer(
    request: Request, item: type[BaseModel], data: list[Any], next_cursor: str | None
) -> Answer:
    """A page to answer, with its ``Link`` header."""
    return Answer(page_of(item, data, next_cursor), headers=link_header(request, next_cursor))
