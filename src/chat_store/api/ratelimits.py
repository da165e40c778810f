"""Rate-limit dependencies: per client IP on auth routes, per principal everywhere else."""

from __future__ import annotations

from fastapi import Request

from chat_store.api.deps import READ_METHODS, CurrentPrincipal, app_state
from chat_store.api.limiting import address_subject, apply_limit, count_as_auth_request
from chat_store.ratelimit import parse_limit

# The app state is read from the request, not depended on: a dependency less to solve on
# every request.


async def limit_by_client_ip(request: Request) -> None:
    state = app_state(request)
    settings = state.settings
    if not settings.rate_limit_enabled:
        return
    item = parse_limit(settings.rate_limit_auth)
    result = await state.limiter.hit(item, "auth", address_subject(request, settings))
    count_as_auth_request(request)
    apply_limit(request, result, "auth requests from this address")


async def limit_by_principal(request: Request, principal: CurrentPrincipal) -> None:
    state = app_state(request)
    settings = state.settings
    if not settings.rate_limit_enabled:
        return
    if request.method in READ_METHODS:
        group, limit = "read", settings.rate_limit_read
    else:
        group, limit = "write", settings.rate_limit_write
    # Per user, whatever the credential: every key a user creates would otherwise bring a budget
    # of its own. A guest with no row yet, per address: every made-up client id would.
    if principal.unsaved:
        subject = f"guest-address:{address_subject(request, settings)}"
    else:
        subject = f"user:{principal.user_id}"
    result = await state.limiter.hit(parse_limit(limit), group, subject)
    apply_limit(request, result, f"{group}s")
