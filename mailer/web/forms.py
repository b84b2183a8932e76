"""The two form parsers of the pages: :func:`read_form` (urlencoded or multipart, the first
value of each field: the unsubscribe buttons, RFC 8058 one-click, sign-up) and
:func:`read_multi_form` (urlencoded, repeated names kept: the preference checkboxes).

Both answer None for a body they will not read (another type, a file, too many fields, bad
encoding) and never raise for a client's mistake; what a field means is the pages' business.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request

from mailer.web.limits import MAX_BODY


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form(request: Request) -> dict[str, str] | None:
    """The fields of a urlencoded or multipart form (first value of each); None if the
    body is neither, or has a file, or too many fields."""
    kind = _content_type(request)
    if kind == "application/x-www-form-urlencoded":
        body = await request.body()
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                max_num_fields=50,
                strict_parsing=False,
            )
        except (UnicodeDecodeError, ValueError):
            return None
        fields: dict[str, str] = {}
        for key, value in pairs:
            fields.setdefault(key, value)
        return fields
    if kind == "multipart/form-data":
        try:
            async with request.form(max_files=0, max_fields=50, max_part_size=MAX_BODY) as form:
                out: dict[str, str] = {}
                for key, item in form.multi_items():
                    if not isinstance(item, str):
                        return None
                    out.setdefault(key, item)
                return out
        except HTTPException:
            return None
        except (ValueError, AssertionError):
            return None
    return None


async def read_multi_form(request: Request) -> list[tuple[str, str]] | None:
    """Every field of a urlencoded form, repeated names kept (the list checkboxes), blank ones
    too (an empty time zone clears it)."""
    if _content_type(request) != "application/x-www-form-urlencoded":
        return None
    try:
        return parse_qsl(
            (await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=200
        )
    except (UnicodeDecodeError, ValueError):
        return None
