"""Liveness and readiness."""

from __future__ import annotations

import httpx

from chat_store import __version__
from tests.conftest import AppWith

UNREACHABLE_DATABASE = "postgresql://root@127.0.0.1:1/nowhere"


async def test_health_answers_without_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


async def test_ready_when_the_database_answers_at_the_migration_head(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}


async def test_not_ready_when_the_database_is_unreachable(app_with: AppWith) -> None:
    async with app_with(database_url=UNREACHABLE_DATABASE) as unreachable:
        ready = await unreachable.client.get("/health/ready")
        alive = await unreachable.client.get("/health")

    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "unavailable", "cache": "ok"}
    assert alive.status_code == 200  # the process itself is fine


async def test_ready_but_degraded_when_redis_is_unreachable(app_with: AppWith) -> None:
    async with app_with(redis_url="redis://127.0.0.1:1/0") as degraded:
        response = await degraded.client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "degraded"}
