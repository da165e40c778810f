"""Pieces of rate limiting that need no dependencies: the client address (X-Forwarded-For
believed only from trusted proxies) and turning a limit result into headers or a 429."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastapi import Request

from chat_store.errors import RateLimited
from chat_store.ratelimit import LimitResult
from chat_store.settings import Settings


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
    # Every X-Forwarded-For line: a proxy may add its own line after the client's.
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [hop.strip() for hop in forwarded.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _is_trusted(hop, settings):
            return hop
    return peer


def address_subject(request: Request, settings: Settings) -> str:
    """The client address as a per-address limit counts it: an IPv6 address by its /64 network
    (one host is usually given a whole /64, and could otherwise take a new budget with each of
    its addresses); an IPv4 address, or an IPv4 one mapped into IPv6, as it is."""
    address = client_ip(request, settings)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return address


_AUTH_COUNTED = "auth_budget_counted"


def count_as_auth_request(request: Request) -> None:
    """The request was counted against its address's RATE_LIMIT_AUTH budget (an `/auth/*`
    route): a failed authentication in it is not counted a second time."""
    request.scope.setdefault("state", {})[_AUTH_COUNTED] = True


def counted_as_auth_request(request: Request) -> bool:
    return bool(request.scope.get("state", {}).get(_AUTH_COUNTED))


def apply_limit(request: Request, result: LimitResult, what: str) -> None:
    # The request middleware copies these onto the answer, whatever the answer is.
    request.scope.setdefault("state", {})["rate_limit_headers"] = result.headers()
    if not result.allowed:
        error = RateLimited(f"Rate limit for {what} exceeded; retry in {result.reset_seconds} s")
        error.headers.update(result.headers())
        error.headers["Retry-After"] = str(max(1, result.reset_seconds))
        raise error
