"""Liveness and readiness."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from chat_store import __version__
from tests.backends import Backend
from tests.conftest import client_for, make_settings, running_app

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


async def test_not_ready_when_the_database_is_unreachable(backend: Backend) -> None:
    settings = make_settings(backend, database_url=UNREACHABLE_DATABASE)

    async with running_app(settings) as app, client_for(app) as client:
        ready = await client.get("/health/ready")
        alive = await client.get("/health")

    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "unavailable", "cache": "ok"}
    assert alive.status_code == 200  # the process itself is fine


async def test_ready_but_degraded_when_redis_is_unreachable(backend: Backend, app: FastAPI) -> None:
    settings = make_settings(backend, redis_url="redis://127.0.0.1:1/0")

    async with running_app(settings) as degraded_app, client_for(degraded_app) as client:
        response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "degraded"}
