"""What a deployment exposes: the API docs can be turned off, and a production start warns
about an open /metrics and served docs."""

from __future__ import annotations

import pytest

from tests.conftest import AppWith
from tests.support.logs import startup_warnings


async def test_docs_can_be_turned_off(app_with: AppWith) -> None:
    async with app_with(docs_enabled=False) as without_docs:
        client = without_docs.client
        for path in (
            "/docs",
            "/redoc",
            "/openapi.json",
            "/docs/oauth2-redirect",
            "/static/docs/swagger/swagger-ui-bundle.js",
        ):
            answer = await client.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["code"] == "not_found"
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("app_env", ["production", "development"])
async def test_a_production_start_warns_about_open_metrics_and_served_docs(
    app_with: AppWith, app_env: str
) -> None:
    with startup_warnings() as warnings:
        async with app_with(app_env=app_env):
            pass
    if app_env == "production":
        assert any("/metrics is open" in warning for warning in warnings), warnings
        assert any("/docs, /redoc and /openapi.json" in warning for warning in warnings)
    else:
        assert warnings == []
    with startup_warnings() as warnings:
        async with app_with(app_env="production", metrics_token="s3cret-token", docs_enabled=False):
            pass
    assert warnings == []
    with startup_warnings() as warnings:
        async with app_with(app_env="production", metrics_enabled=False):
            pass
    assert not any("/metrics" in warning for warning in warnings), warnings
