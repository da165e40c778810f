"""Rate limits, the principal cache, /metrics and retention, on both backends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from chat_store.api.deps import AppState
from chat_store.models import ChatSession, Message
from chat_store.services import retention
from tests.backends import Backend
from tests.conftest import client_for, make_settings, running_app
from tests.factories import API, Factory
from tests.support.redis_server import RedisServer

ME = f"{API}/users/me"


@pytest.fixture
async def limited(backend: Backend) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(
        backend,
        rate_limit_enabled=True,
        rate_limit_read="3/minute",
        rate_limit_write="1000/minute",
        rate_limit_auth="1000/minute",
        login_failures_per_account="3/15minutes",
        # A prefix of its own: counters of other tests never leak in.
        redis_prefix=f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:",
    )
    async with running_app(settings) as app, client_for(app) as client:
        yield app, client


async def test_reads_over_the_limit_get_429_with_headers(
    limited: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = limited
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
    state: AppState = app.state.resources
    assert state.limiter.rejections >= 1


async def test_failed_logins_are_limited_per_account_from_any_address(
    limited: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = limited
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


async def test_auth_routes_are_limited_per_client_ip(backend: Backend) -> None:
    settings = make_settings(
        backend,
        rate_limit_enabled=True,
        rate_limit_auth="2/minute",
        redis_prefix=f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:",
        trusted_proxies=["127.0.0.1/32"],
    )
    async with running_app(settings) as app, client_for(app) as client:
        body = {"refresh_token": "unknown"}

        async def logout(ip: str) -> int:
            answer = await client.post(
                f"{API}/auth/logout", json=body, headers={"X-Forwarded-For": ip}
            )
            return answer.status_code

        assert [await logout("203.0.113.7") for _ in range(3)] == [204, 204, 429]
        # Behind the trusted proxy, another client address has its own budget.
        assert await logout("203.0.113.8") == 204


async def test_rate_limits_fail_open_while_redis_is_down_and_recover(
    backend: Backend, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    settings = make_settings(
        backend, redis_url=server.url, rate_limit_enabled=True, rate_limit_read="2/minute"
    )
    try:
        async with running_app(settings) as app, client_for(app) as client:
            account = await Factory(client).account()
            assert (await client.get(ME, headers=account.headers)).status_code == 200
            server.stop()
            # Redis is away: requests are let through, and the failure is counted.
            answers = [await client.get(ME, headers=account.headers) for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 200]
            state: AppState = app.state.resources
            assert state.limiter.errors >= 1
            server.start()  # empty again: the counters start over
            await asyncio.sleep(state.limiter.RETRY_AFTER_SECONDS)
            answers = [await client.get(ME, headers=account.headers) for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 429]
    finally:
        server.stop()


async def test_rate_limits_can_fail_closed(backend: Backend, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    settings = make_settings(
        backend, redis_url=server.url, rate_limit_enabled=True, rate_limit_fail_open=False
    )
    # Redis never started: every limited request is refused, health still answers.
    async with running_app(settings) as app, client_for(app) as client:
        del app
        refused = await client.post(f"{API}/auth/logout", json={"refresh_token": "x"})
        assert refused.status_code == 429
        assert (await client.get("/health")).status_code == 200


async def test_revoked_key_is_refused_at_once_despite_the_principal_cache(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    key = await factory.api_key(account)
    headers = {"X-API-Key": key["key"]}
    assert (await client.get(ME, headers=headers)).status_code == 200
    hits_before = getattr(state.cache, "hits", 0)
    assert (await client.get(ME, headers=headers)).status_code == 200
    assert getattr(state.cache, "hits", 0) > hits_before  # served from the cache
    revoked = await client.delete(f"{API}/api-keys/{key['id']}", headers=account.headers)
    assert revoked.status_code == 204
    answer = await client.get(ME, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"


async def test_deleted_user_token_and_key_are_refused_at_once(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    key = await factory.api_key(account)
    for headers in (account.headers, {"X-API-Key": key["key"]}):
        assert (await client.get(ME, headers=headers)).status_code == 200
    assert (await client.delete(ME, headers=account.headers)).status_code == 204
    for headers in (account.headers, {"X-API-Key": key["key"]}):
        assert (await client.get(ME, headers=headers)).status_code == 401


async def test_metrics_move_with_traffic(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"

    def value(text: str, line_start: str) -> float:
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = (await client.get("/metrics")).text
    await client.post(url, json={"role": "user", "content": "hi"}, headers=account.headers)
    await client.get(url, headers=account.headers)
    after = (await client.get("/metrics")).text
    route = 'route="/api/v1/sessions/{session_id}/messages"'
    created = f'chat_store_http_requests_total{{method="POST",{route},status="201"}}'
    assert value(after, created) == value(before, created) + 1
    appended = "chat_store_messages_appended_total"
    assert value(after, appended) == value(before, appended) + 1
    for name in (
        "chat_store_db_pool_in_use",
        "chat_store_cache_misses_total",
        "chat_store_redis_errors_total",
        "chat_store_rate_limit_rejections_total",
        "chat_store_streams_open",
        "chat_store_http_request_duration_seconds_bucket",
    ):
        assert name in after


async def test_metrics_can_be_turned_off_or_put_behind_a_token(backend: Backend) -> None:
    off = make_settings(backend, metrics_enabled=False)
    async with running_app(off) as app, client_for(app) as client:
        answer = await client.get("/metrics")
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"
    guarded = make_settings(backend, metrics_token="s3cret-token")
    async with running_app(guarded) as app, client_for(app) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        right = {"Authorization": "Bearer s3cret-token"}
        answer = await client.get("/metrics", headers=right)
        assert answer.status_code == 200
        assert "chat_store_http_requests" in answer.text


def test_purge_durations() -> None:
    assert retention.parse_duration("90d") == timedelta(days=90)
    assert retention.parse_duration("12h") == timedelta(hours=12)
    assert retention.parse_duration(" 30m ") == timedelta(minutes=30)
    for bad in ("", "90", "d", "-1d", "0d", "1w", "1.5d"):
        with pytest.raises(ValueError):
            retention.parse_duration(bad)


async def test_purge_deletes_only_idle_sessions_in_batches(
    client: httpx.AsyncClient,
    factory: Factory,
    state: AppState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retention, "BATCH_SESSIONS", 2)  # several batches from five sessions
    account = await factory.account()
    sessions = [await factory.chat_session(account) for _ in range(6)]
    for session in sessions:
        url = f"{API}/sessions/{session['id']}/messages"
        await client.post(url, json={"role": "user", "content": "x"}, headers=account.headers)
    old = [uuid.UUID(s["id"]) for s in sessions[:5]]
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id.in_(old))
            .values(last_activity_at=datetime.now(UTC) - timedelta(days=100))
        )

    dry = await retention.purge_idle_sessions(state.sessionmaker, timedelta(days=90), dry_run=True)
    assert (dry.sessions, dry.messages) == (5, 5)
    async with state.sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(ChatSession)) == 6

    done = await retention.purge_idle_sessions(
        state.sessionmaker, timedelta(days=90), dry_run=False
    )
    assert (done.sessions, done.messages) == (5, 5)
    async with state.sessionmaker() as db:
        left = list(await db.scalars(select(ChatSession.id)))
        assert left == [uuid.UUID(sessions[5]["id"])]
        assert await db.scalar(select(func.count()).select_from(Message)) == 1


async def test_a_slow_request_is_answered_504_and_rolled_back(
    backend: Backend, client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat_store.services import chat_sessions as chat_session_service

    real_insert = chat_session_service._insert

    async def slow_insert(*args: object, **kwargs: object) -> ChatSession:
        row = await real_insert(*args, **kwargs)  # type: ignore[arg-type]
        await asyncio.sleep(5)
        return row

    monkeypatch.setattr(chat_session_service, "_insert", slow_insert)
    # The account through the usual app: only the slow request meets the short timeout (a
    # registration on a busy machine can take longer than it).
    account = await factory.account()
    settings = make_settings(backend, request_timeout_seconds=0.3)
    async with running_app(settings) as app, client_for(app) as hurried:
        # With a key the write and its stored answer are one transaction (without one, the
        # insert may run in autocommit on Postgres, and then only the answer is late).
        keyed = {**account.headers, "Idempotency-Key": "slow-create"}
        answer = await hurried.post(f"{API}/sessions", json={}, headers=keyed)
        assert answer.status_code == 504
        assert answer.json()["code"] == "timeout"
    monkeypatch.setattr(chat_session_service, "_insert", real_insert)
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert listed.json()["data"] == []  # nothing half-written was kept


async def test_hsts_only_when_turned_on(backend: Backend, client: httpx.AsyncClient) -> None:
    assert "strict-transport-security" not in (await client.get("/health")).headers
    hsts = make_settings(backend, hsts_enabled=True)
    async with running_app(hsts) as app, client_for(app) as https_client:
        answer = await https_client.get("/health")
        assert answer.headers["strict-transport-security"].startswith("max-age=")


async def test_guessing_credentials_is_limited_per_address(backend: Backend) -> None:
    settings = make_settings(
        backend,
        rate_limit_enabled=True,
        rate_limit_auth="3/minute",
        redis_prefix=f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:",
    )
    async with running_app(settings) as app, client_for(app) as client:
        del app
        guesses = [await client.get(ME, headers={"X-API-Key": f"csk_guess{i}"}) for i in range(4)]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429]
        assert guesses[3].json()["code"] == "rate_limited"
        assert int(guesses[3].headers["Retry-After"]) >= 1


async def test_principal_cache_can_be_turned_off(backend: Backend) -> None:
    settings = make_settings(backend, principal_cache_seconds=0)
    async with running_app(settings) as app, client_for(app) as client:
        account = await Factory(client).account()
        key = await Factory(client).api_key(account)
        for _ in range(2):
            assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 200
        state: AppState = app.state.resources
        assert getattr(state.cache, "hits", 0) == 0
        await client.delete(f"{API}/api-keys/{key['id']}", headers=account.headers)
        assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 401


def test_one_rate_limit_per_setting(backend: Backend) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="give one limit"):
        make_settings(backend, rate_limit_read="10/minute;100/hour")
    with pytest.raises(ValidationError, match="not a rate limit"):
        make_settings(backend, rate_limit_read="often")


async def test_expired_tokens_do_not_use_up_the_auth_budget(backend: Backend) -> None:
    settings = make_settings(
        backend,
        rate_limit_enabled=True,
        rate_limit_auth="3/minute",
        redis_prefix=f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:",
    )
    async with running_app(settings) as app, client_for(app) as client:
        del app
        from chat_store.security import create_access_token

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
    backend: Backend,
) -> None:
    settings = make_settings(
        backend,
        rate_limit_enabled=True,
        rate_limit_auth="2/minute",
        redis_prefix=f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:",
        trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"],
    )
    async with running_app(settings) as app, client_for(app) as client:
        del app
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


async def test_a_late_cache_fill_cannot_undo_a_revocation(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    from chat_store.security import sha256_hex
    from chat_store.services import principals

    account = await factory.account()
    key = await factory.api_key(account)
    headers = {"X-API-Key": key["key"]}
    assert (await client.get(ME, headers=headers)).status_code == 200
    cache_key = principals.api_key_cache_key(sha256_hex(key["key"]))
    entry = await state.cache.get(cache_key)
    assert entry is not None and entry != principals.REVOKED
    assert (
        await client.delete(f"{API}/api-keys/{key['id']}", headers=account.headers)
    ).status_code == 204
    # A request that read the key before the revocation committed now tries to cache it.
    await state.cache.add(cache_key, entry, 60)
    assert await state.cache.get(cache_key) == principals.REVOKED
    assert (await client.get(ME, headers=headers)).status_code == 401


async def test_body_limits_come_from_the_app_settings(backend: Backend) -> None:
    settings = make_settings(backend, max_title_chars=10, max_metadata_bytes=64)
    async with running_app(settings) as app, client_for(app) as client:
        del app
        account = await Factory(client).account()
        sessions = f"{API}/sessions"
        too_long = await client.post(sessions, json={"title": "x" * 11}, headers=account.headers)
        assert too_long.status_code == 422
        assert too_long.json()["detail"] == (
            "body.title: Value error, title is 11 characters, over the limit of 10"
        )
        assert too_long.json()["errors"] == [
            {
                "loc": ["body", "title"],
                "msg": "Value error, title is 11 characters, over the limit of 10",
                "type": "value_error",
            }
        ]
        big = await client.post(
            sessions, json={"metadata": {"k": "v" * 80}}, headers=account.headers
        )
        assert big.status_code == 422
        fits = await client.post(sessions, json={"title": "x" * 10}, headers=account.headers)
        assert fits.status_code == 201
