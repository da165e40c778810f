from __future__ import annotations

import gc

import httpx

from chat_store.main import create_app
from tests.backends import Backend
from tests.conftest import make_settings, running_app
from tests.factories import API, Factory


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.json() == {"status": "ok", "version": "0.1.0"}


async def test_create_and_list_sessions(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    created = await factory.chat_session(account, title="first")
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert [s["id"] for s in listed.json()["data"]] == [created["id"]]


async def test_the_served_app_keeps_start_up_objects_out_of_the_collector(
    backend: Backend,
) -> None:
    """`chat-store serve`'s app freezes what start-up built (gc.freeze): a full collection then
    walks only what requests made. Apps that tests start and stop leave the collector as is."""
    gc.unfreeze()
    try:
        async with running_app(make_settings(backend)):
            assert gc.get_freeze_count() == 0
        app = create_app(make_settings(backend), freeze_after_start=True)
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
