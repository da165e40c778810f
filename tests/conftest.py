from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete

from chat_store.api.deps import AppState, get_state
from chat_store.main import create_app
from chat_store.models import ArchiveDeletion, IdempotencyKey, User
from chat_store.services.archive import finish_deleting
from chat_store.settings import Settings
from tests.backends import BACKEND, Backend, provision
from tests.factories import Factory
from tests.support.llm_server import LlmServer, llm_server_process
from tests.support.redis_server import RedisServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked postgres_only are left out of the SQLite run (counted as deselected)."""
    if BACKEND == "postgres":
        return
    kept = [item for item in items if item.get_closest_marker("postgres_only") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def make_settings(backend: Backend, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "database_url": backend.database_url,
        "redis_url": backend.redis_url,
        "redis_prefix": backend.redis_prefix,
        "data_dir": backend.data_dir,
        "jwt_secret": "test-secret-" + "x" * 40,
        "bcrypt_rounds": 4,  # the minimum: hashing cost is not under test here
        "log_level": "WARNING",
        # Off unless a test is about rate limits: the suite makes many requests per minute.
        "rate_limit_enabled": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@dataclass
class AppUnderTest:
    """An app of a test's own and a client of it."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def state(self) -> AppState:
        resources: AppState = self.app.state.resources
        return resources

    @property
    def factory(self) -> Factory:
        return Factory(self.client)


AppWith = Callable[..., AbstractAsyncContextManager[AppUnderTest]]


@asynccontextmanager
async def app_on(backend: Backend, **overrides: Any) -> AsyncIterator[AppUnderTest]:
    """An app started with these settings over the suite's (make_settings) on `backend`, and a
    client of it."""
    async with (
        running_app(make_settings(backend, **overrides)) as started,
        client_for(started) as client,
    ):
        yield AppUnderTest(started, client)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: a 500 must be answered (problem+json), as a real server would.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture(scope="session")
async def backend() -> AsyncIterator[Backend]:
    async with provision("api") as provisioned:
        yield provisioned


@pytest.fixture(scope="session")
def settings(backend: Backend) -> Settings:
    return make_settings(backend)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as started:
        yield started


@pytest.fixture
def app_with(backend: Backend, app: FastAPI) -> AppWith:
    """An app of the test's own, started with these settings over the suite's (make_settings),
    on the suite's database and Redis:

        async with app_with(max_title_chars=10) as custom:
            await custom.client.post(...)

    (`app` is asked for so that the suite's cleanup deletes the test's rows afterwards.)"""

    def start(**overrides: Any) -> AbstractAsyncContextManager[AppUnderTest]:
        return app_on(backend, **overrides)

    return start


@pytest.fixture
def limited_app(backend: Backend, app_with: AppWith) -> AppWith:
    """`app_with` with rate limits on (generous, but for the limits given), counting under a
    Redis prefix of its own: counters of other tests never leak in."""

    def start(**limits: Any) -> AbstractAsyncContextManager[AppUnderTest]:
        generous = {
            "rate_limit_auth": "1000/minute",
            "rate_limit_read": "1000/minute",
            "rate_limit_write": "1000/minute",
        }
        prefix = f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:"
        return app_with(rate_limit_enabled=True, redis_prefix=prefix, **(generous | limits))

    return start


SMALL_MESSAGE_BYTES = 1000


@pytest.fixture
async def small(app_with: AppWith) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with MAX_MESSAGE_BYTES=SMALL_MESSAGE_BYTES."""
    async with app_with(max_message_bytes=SMALL_MESSAGE_BYTES) as custom:
        yield custom.client


@pytest.fixture(scope="module")
def llm() -> Iterator[LlmServer]:
    """The scripted model provider (tests/support/llm_server.py), in a process of its own, for
    the tests of a module that asks for it; each of them starts with it reset."""
    with llm_server_process() as server:
        yield server


@pytest.fixture(autouse=True)
async def _fresh_provider(request: pytest.FixtureRequest) -> None:
    if "llm" in request.fixturenames:
        server: LlmServer = request.getfixturevalue("llm")
        await server.reset()


@pytest.fixture
def state(app: FastAPI) -> AppState:
    resources: AppState = app.state.resources
    return resources


@pytest.fixture(autouse=True)
async def _clean_data(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test starts from an empty database: each test's rows are deleted after it.

    Rows are deleted rather than rolled back because the code under test commits for real
    (one transaction per request, separate checkpoint transactions while streaming) and the
    end-to-end tests run in another process.
    """
    yield
    if "app" not in request.fixturenames:
        return
    # A deletion of archive objects a request left under way must not log into the next test.
    await finish_deleting(within=0)
    state: AppState = request.getfixturevalue("app").state.resources
    async with state.sessionmaker() as db, db.begin():
        await db.execute(delete(IdempotencyKey))
        await db.execute(delete(ArchiveDeletion))
        await db.execute(delete(User))  # sessions, messages, keys and tokens cascade


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@pytest.fixture
def factory(client: httpx.AsyncClient) -> Factory:
    return Factory(client)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own, which the test may stop and start again."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests FastAPI solved dependencies for, in order (the direct path,
    api/direct.py, solves none)."""
    paths: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        paths.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return paths


@pytest.fixture
def through_fastapi(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it to have FastAPI serve every request: any dependency override does that."""

    def switch() -> None:
        monkeypatch.setitem(app.dependency_overrides, get_state, get_state)

    return switch
