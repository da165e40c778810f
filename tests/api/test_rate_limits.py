"""Rate limits: per caller, per address on the auth routes, on failed logins; failing open or
closed while Redis is away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from chat_store.security import create_access_token
from tests.backends import Backend
from tests.conftest import AppUnderTest, AppWith, make_settings
from tests.factories import API, ME, Factory
from tests.support.redis_server import RedisServer


@pytest.fixture
async def limited(limited_app: AppWith) -> AsyncIterator[AppUnderTest]:
    async with limited_app(
        rate_limit_read="3/minute",
        login_failures_per_account="3/15minutes",
    ) as started:
        yield started


async def test_reads_over_the_limit_get_429_with_headers(limited: AppUnderTest) -> None:
    client = limited.client
    account = await Factory(client).account()
    answers = [await client.get(ME, headers=account.headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["RateLimit-Remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert all(a.headers["RateLimit-Limit"] == "3" for a in answers)
    refused = answers[3]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Each principal has its own budget.
    other = await Factory(client).account()
    assert (await client.get(ME, headers=other.headers)).status_code == 200
    assert limited.state.limiter.rejections >= 1


async def test_failed_logins_are_limited_per_account_from_any_address(
    limited: AppUnderTest,
) -> None:
    client = limited.client
    account = await Factory(client).account()
    form = {"username": account.email, "password": "wrong-password"}
    for forwarded in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        answer = await client.post(
            f"{API}/auth/token", data=form, headers={"X-Forwarded-For": forwarded}
        )
        assert answer.status_code == 401
    # Even the right password is refused now: the account is being guessed at.
    right = {"username": account.email, "password": account.password}
    refused = await client.post(f"{API}/auth/token", data=right)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1


async def test_auth_routes_are_limited_per_client_ip(limited_app: AppWith) -> None:
    async with limited_app(rate_limit_auth="2/minute", trusted_proxies=["127.0.0.1/32"]) as started:
        client = started.client
        body = {"refresh_token": "unknown"}

        async def logout(ip: str) -> int:
            answer = await client.post(
                f"{API}/auth/logout", json=body, headers={"X-Forwarded-For": ip}
            )
            return answer.status_code

        assert [await logout("203.0.113.7") for _ in range(3)] == [204, 204, 429]
        # Behind the trusted proxy, another client address has its own budget.
        assert await logout("203.0.113.8") == 204


async def test_an_ipv6_client_is_limited_by_its_64_network(limited_app: AppWith) -> None:
    """A host is usually given a whole /64: each of its addresses taking a budget of its own
    would multiply the per-address limits by 2^64."""
    async with limited_app(rate_limit_auth="2/minute", trusted_proxies=["127.0.0.1/32"]) as started:
        client = started.client

        async def logout(ip: str) -> int:
            answer = await client.post(
                f"{API}/auth/logout",
                json={"refresh_token": "unknown"},
                headers={"X-Forwarded-For": ip},
            )
            return answer.status_code

        assert [
            await logout(ip)
            for ip in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9")
        ] == [204, 204, 429]
        assert await logout("2001:db8:1:3::1") == 204  # another /64
        assert [await logout("::ffff:203.0.113.9") for _ in range(2)] == [204, 204]
        assert await logout("203.0.113.9") == 429  # the same IPv4 address, mapped or not


async def test_guessing_credentials_is_limited_per_address(limited_app: AppWith) -> None:
    async with limited_app(rate_limit_auth="3/minute") as started:
        client = started.client
        guesses = [await client.get(ME, headers={"X-API-Key": f"csk_guess{i}"}) for i in range(4)]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429]
        assert guesses[3].json()["code"] == "rate_limited"
        assert int(guesses[3].headers["Retry-After"]) >= 1


async def test_a_failed_claim_counts_once_against_the_auth_budget(limited_app: AppWith) -> None:
    """`/auth/claim` is an `/auth/*` request and authenticates its caller: a wrong key there
    used up two of the address's budget."""
    async with limited_app(rate_limit_auth="3/minute") as started:
        claims = [
            await started.client.post(
                f"{API}/auth/claim",
                json={"client_id": str(uuid.uuid4())},
                headers={"X-API-Key": "csk_wrong"},
            )
            for _ in range(4)
        ]
        assert [claim.status_code for claim in claims] == [401, 401, 401, 429]
        assert [claim.headers["RateLimit-Remaining"] for claim in claims[:3]] == ["2", "1", "0"]


async def test_expired_tokens_do_not_use_up_the_auth_budget(limited_app: AppWith) -> None:
    async with limited_app(rate_limit_auth="3/minute") as started:
        client, settings = started.client, started.state.settings
        account = await Factory(client).account()
        expired, _ = create_access_token(
            uuid.UUID(account.user_id),
            settings.jwt_secret_value(),
            settings.jwt_algorithm,
            timedelta(seconds=-1),
        )
        answers = [
            await client.get(ME, headers={"Authorization": f"Bearer {expired}"}) for _ in range(5)
        ]
        assert {a.status_code for a in answers} == {401}
        assert answers[0].json()["detail"] == "Token expired"
        # The client can still refresh: its address has not been marked as guessing.
        refreshed = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert refreshed.status_code == 200


async def test_a_client_cannot_choose_its_address_with_an_extra_forwarded_line(
    limited_app: AppWith,
) -> None:
    proxies = ["127.0.0.1/32", "10.0.0.0/8"]
    async with limited_app(rate_limit_auth="2/minute", trusted_proxies=proxies) as started:
        client = started.client
        statuses = []
        for attempt in range(3):
            # The client's own line first, then the one its (trusted) proxy appended.
            headers = [
                ("X-Forwarded-For", f"198.51.100.{attempt}"),
                ("X-Forwarded-For", "203.0.113.9, 10.0.0.2"),
            ]
            answer = await client.post(
                f"{API}/auth/logout", json={"refresh_token": "x"}, headers=headers
            )
            statuses.append(answer.status_code)
        assert statuses == [204, 204, 429]  # all counted as 203.0.113.9


async def test_rate_limits_fail_open_while_redis_is_down_and_recover(
    app_with: AppWith, redis_server: RedisServer
) -> None:
    server = redis_server
    async with app_with(
        redis_url=server.url, rate_limit_enabled=True, rate_limit_read="2/minute"
    ) as started:
        client, state = started.client, started.state
        account = await Factory(client).account()
        assert (await client.get(ME, headers=account.headers)).status_code == 200
        server.stop()
        # Redis is away: requests are let through, and the failure is counted.
        answers = [await client.get(ME, headers=account.headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert state.limiter.errors >= 1
        server.start()  # empty again: the counters start over
        await asyncio.sleep(state.limiter.RETRY_AFTER_SECONDS)
        answers = [await client.get(ME, headers=account.headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]


async def test_a_quick_redis_restart_refuses_no_request_when_failing_closed(
    app_with: AppWith, redis_server: RedisServer
) -> None:
    """The counters' pooled connection outlives a restart; its first use is tried once more on
    a new connection, not answered 429 (failing closed, that would refuse every limited
    request for a second)."""
    async with app_with(
        redis_url=redis_server.url,
        rate_limit_enabled=True,
        rate_limit_fail_open=False,
        rate_limit_read="5/minute",
    ) as started:
        client, state = started.client, started.state
        account = await Factory(client).account()
        assert (await client.get(ME, headers=account.headers)).status_code == 200
        redis_server.stop()
        redis_server.start()  # empty again: the counters start over
        answers = [await client.get(ME, headers=account.headers) for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 5 + [429]
        assert state.limiter.errors == 0


async def test_rate_limits_can_fail_closed(app_with: AppWith, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    # Redis never started: every limited request is refused, health still answers.
    async with app_with(
        redis_url=server.url, rate_limit_enabled=True, rate_limit_fail_open=False
    ) as started:
        client = started.client
        refused = await client.post(f"{API}/auth/logout", json={"refresh_token": "x"})
        assert refused.status_code == 429
        assert (await client.get("/health")).status_code == 200


def test_one_rate_limit_per_setting(backend: Backend) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="give one limit"):
        make_settings(backend, rate_limit_read="10/minute;100/hour")
    with pytest.raises(ValidationError, match="not a rate limit"):
        make_settings(backend, rate_limit_read="often")
