"""Console page: the staff accounts (admins only), ``/admin/users``: who has which role,
adding an account, changing a role, disabling and enabling, setting a new password.

The same rules as ``mailer users``: the password rule of :mod:`mailer.accounts`, storage
ending the person's sessions on any change; and one more: the console never leaves the
database without an enabled admin (an admin cannot demote or disable the last one, themselves
included). Each change is audited (``user.add``, ``user.role``, ``user.disable``,
``user.enable``, ``user.password``), never with a password in it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailer import accounts
from mailer.addresses import check_name, normalize
from mailer.errors import AccountError, AddressError, NotFoundError, StateError
from mailer.models import ROLES, Role, StaffUser
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of

DONE = ("added", "role", "disabled", "enabled", "password")


async def users(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET``: the accounts; ``POST``: one change (``action``: add, role, disable, enable,
    password), then back to the list with a notice, or the list with the error."""
    error = None
    values: dict[str, Any] = {}
    if request.method == "POST":
        form = await form_of(request)
        values = {k: str(v) for k, v in form.items() if isinstance(v, str) and k != "csrf"}
        error, done = await _change(ctx, request, staff, values)
        if error is None:
            return RedirectResponse(f"/admin/users?done={done}", status_code=303)
    done_key = request.query_params.get("done")
    notice = ctx.views.say(staff.lang, f"users_done_{done_key}") if done_key in DONE else None
    return ctx.views.render(
        "users.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "users_title"),
        staff=staff,
        section="users",
        users=await ctx.store.staff.all(),
        roles=[r.value for r in ROLES],
        values=values,
        error=error,
        notice=notice,
        status=400 if error else 200,
    )


async def _change(
    ctx: ConsoleContext, request: Request, staff: Staffer, values: dict[str, str]
) -> tuple[str | None, str]:
    lang, action = staff.lang, values.get("action", "")
    say = ctx.views.say
    try:
        if action == "add":
            return await _add(ctx, request, staff, values), "added"
        user = await ctx.store.staff.get(values.get("email", ""))
        if user is None:
            return say(lang, "users_unknown"), ""
        if action == "role":
            role = values.get("role", "")
            if role not in {r.value for r in ROLES}:
                return say(lang, "users_bad_role"), ""
            return await _set_role(ctx, request, staff, user, Role(role)), "role"
        if action in ("disable", "enable"):
            return await _set_disabled(ctx, request, staff, user, action == "disable"), (
                "disabled" if action == "disable" else "enabled"
            )
        if action == "password":
            return await _password(ctx, request, staff, user, values), "password"
    except (NotFoundError, StateError):
        return say(lang, "users_unknown"), ""
    return say(lang, "bad_form"), ""


async def _add(
    ctx: ConsoleContext, request: Request, staff: Staffer, values: dict[str, str]
) -> str | None:
    lang, say = staff.lang, ctx.views.say
    try:
        email = normalize(values.get("email", "")).email.lower()
        name = values.get("name", "").strip() or None
        if name is not None:
            check_name(name)
    except AddressError as exc:
        return say(lang, "users_bad_address", reason=str(exc))
    role = values.get("role", "")
    if role not in {r.value for r in ROLES}:
        return say(lang, "users_bad_role")
    if await ctx.store.staff.get(email) is not None:
        return say(lang, "users_exists", email=email)
    problem = _password_problem(ctx, lang, values, email=email, name=name)
    if problem:
        return problem
    hashed = await asyncio.to_thread(accounts.hash_password, values["new"])
    user = await ctx.store.staff.add(
        email, name=name, role=Role(role), password_hash=hashed, now=ctx.clock()
    )
    await ctx.audit(staff, request, "user.add", user.email, {"role": role})
    return None


def _password_problem(
    ctx: ConsoleContext, lang: str, values: dict[str, str], *, email: str, name: str | None
) -> str | None:
    new, again = values.get("new", ""), values.get("again", "")
    if new != again:
        return ctx.views.say(lang, "me_mismatch")
    try:
        accounts.check_password(new, email=email, name=name)
    except AccountError as exc:
        return ctx.views.say(lang, f"password_{exc.reason}", min=accounts.MIN_PASSWORD)
    return None


async def _last_admin(ctx: ConsoleContext, user: StaffUser) -> bool:
    """Whether ``user`` is the only enabled admin left."""
    if user.role is not Role.ADMIN or user.disabled:
        return False
    admins = [u for u in await ctx.store.staff.all() if u.role is Role.ADMIN and not u.disabled]
    return len(admins) <= 1


async def _set_role(
    ctx: ConsoleContext, request: Request, staff: Staffer, user: StaffUser, role: Role
) -> str | None:
    if role is not Role.ADMIN and await _last_admin(ctx, user):
        return ctx.views.say(staff.lang, "users_last_admin")
    changed = await ctx.store.staff.set_role(user.email, role, now=ctx.clock())
    await ctx.audit(
        staff, request, "user.role", changed.email, {"was": user.role.value, "role": role.value}
    )
    return None


async def _set_disabled(
    ctx: ConsoleContext, request: Request, staff: Staffer, user: StaffUser, disabled: bool
) -> str | None:
    if disabled and await _last_admin(ctx, user):
        return ctx.views.say(staff.lang, "users_last_admin")
    changed = await ctx.store.staff.set_disabled(user.email, disabled, now=ctx.clock())
    await ctx.audit(staff, request, "user.disable" if disabled else "user.enable", changed.email)
    return None


async def _password(
    ctx: ConsoleContext, request: Request, staff: Staffer, user: StaffUser, values: dict[str, str]
) -> str | None:
    problem = _password_problem(ctx, staff.lang, values, email=user.email, name=user.name)
    if problem:
        return problem
    hashed = await asyncio.to_thread(accounts.hash_password, values["new"])
    await ctx.store.staff.set_password(user.email, hashed, now=ctx.clock())
    await ctx.audit(staff, request, "user.password", user.email, {"by": "admin"})
    return None


ROUTES = [ConsoleRoute("/users", users, read=Role.ADMIN, write=Role.ADMIN)]
