"""Rate-limit dependencies: per client IP on auth routes, per principal everywhere else."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastapi import Request

from chat_store.api.deps import CurrentPrincipal, State
from chat_store.errors import RateLimited
from chat_store.ratelimit import LimitResult, parse_limit
from chat_store.settings import Settings

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@lru_cache(maxsize=16)
def _networks(
    trusted: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def _is_trusted(address: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(settings.trusted_proxies)))


def client_ip(request: Request, settings: Settings) -> str:
    """The peer address; behind a trusted proxy, the nearest untrusted X-Forwarded-For hop.

    X-Forwarded-For is read right to left and only while each hop is a trusted proxy, so a
    client cannot pick its own address by sending the header itself.
    """
    peer = request.client.host if request.client else "unknown"
    if not settings.trusted_proxies or not _is_trusted(peer, settings):
        return peer
    hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _is_trusted(hop, settings):
            return hop
    return peer


def _apply(request: Request, result: LimitResult, what: str) -> None:
    # The request middleware copies these onto the answer, whatever the answer is.
    request.scope.setdefault("state", {})["rate_limit_headers"] = result.headers()
    if not result.allowed:
        error = RateLimited(f"Rate limit for {what} exceeded; retry in {result.reset_seconds} s")
        error.headers.update(result.headers())
        error.headers["Retry-After"] = str(max(1, result.reset_seconds))
        raise error


async def limit_by_client_ip(request: Request, state: State) -> None:
    settings = state.settings
    if not settings.rate_limit_enabled:
        return
    item = parse_limit(settings.rate_limit_auth)
    result = await state.limiter.hit(item, "auth", client_ip(request, settings))
    _apply(request, result, "auth requests from this address")


async def limit_by_principal(request: Request, state: State, principal: CurrentPrincipal) -> None:
    settings = state.settings
    if not settings.rate_limit_enabled:
        return
    if request.method in _READ_METHODS:
        group, limit = "read", settings.rate_limit_read
    else:
        group, limit = "write", settings.rate_limit_write
    key = f"key:{principal.api_key_id}" if principal.api_key_id else f"user:{principal.user_id}"
    result = await state.limiter.hit(parse_limit(limit), group, key)
    _apply(request, result, f"{group}s")
