"""/metrics: it moves with the traffic, and can be turned off or put behind a token."""

from __future__ import annotations

import httpx

from tests.conftest import AppWith
from tests.factories import API, ME, Factory
from tests.support.redis_server import RedisServer


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


async def test_metrics_can_be_turned_off_or_put_behind_a_token(app_with: AppWith) -> None:
    async with app_with(metrics_enabled=False) as off:
        answer = await off.client.get("/metrics")
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"
    async with app_with(metrics_token="s3cret-token") as guarded:
        client = guarded.client
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        right = {"Authorization": "Bearer s3cret-token"}
        answer = await client.get("/metrics", headers=right)
        assert answer.status_code == 200
        assert "chat_store_http_requests" in answer.text


async def test_credential_reads_answered_in_process_count_as_cache_hits_with_redis(
    app_with: AppWith, redis_server: RedisServer
) -> None:
    """With Redis, a credential is read through an in-process copy: its hits were counted
    nowhere, and the hit count showed one read in five seconds."""
    async with app_with(redis_url=redis_server.url, redis_prefix="metrics-near:") as started:
        client = started.client
        account = await Factory(client).account()
        assert (await client.get(ME, headers=account.headers)).status_code == 200

        def hits(text: str) -> float:
            for line in text.splitlines():
                if line.startswith("chat_store_cache_hits_total "):
                    return float(line.rsplit(" ", 1)[1])
            raise AssertionError("chat_store_cache_hits_total is missing")

        before = hits((await client.get("/metrics")).text)
        for _ in range(5):
            assert (await client.get(ME, headers=account.headers)).status_code == 200
        after = hits((await client.get("/metrics")).text)
        assert after - before >= 5, (before, after)
