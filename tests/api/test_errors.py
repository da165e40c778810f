"""Every error is problem+json; request ids and security headers are on every answer."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest
from sqlalchemy.exc import DBAPIError

from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.services import chat_sessions as chat_session_service
from tests.assertions import assert_problem
from tests.conftest import AppWith
from tests.factories import API, Factory

SESSIONS = f"{API}/sessions"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


async def test_an_unknown_route_is_not_found(client: httpx.AsyncClient) -> None:
    for path in ("/nowhere", f"{API}/nowhere", f"{API}/sessions/a/b/c"):
        response = await client.get(path)
        body = assert_problem(response, 404, "not_found")
        assert path in body["detail"]


async def test_a_wrong_method_is_not_allowed(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()

    response = await client.delete(SESSIONS, headers=account.headers)

    assert_problem(response, 405, "method_not_allowed")
    allowed = set(response.headers["allow"].replace(" ", "").split(","))
    assert allowed
    assert allowed <= {"GET", "POST"}
    assert_problem(await client.put(f"{API}/auth/token"), 405, "method_not_allowed")


async def test_an_unexpected_error_is_a_500_without_internals(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="before")

    async def broken_flush(db: object) -> None:
        raise RuntimeError("kaboom: SELECT password_hash FROM internal_table")

    # The update is applied to the row, then the flush fails: nothing of it may be kept.
    monkeypatch.setattr(chat_session_crud, "flush", broken_flush)
    response = await client.patch(
        f"{SESSIONS}/{session['id']}",
        json={"title": "after"},
        headers={**account.headers, "X-Request-ID": "trace-500"},
    )
    monkeypatch.undo()

    body = assert_problem(response, 500, "internal_error")
    assert set(body) == {"type", "title", "status", "detail", "instance", "code"}
    for leak in ("kaboom", "SELECT", "internal_table", "RuntimeError", "Traceback"):
        assert leak not in response.text
    assert response.headers["x-request-id"] == "trace-500"
    assert "trace-500" in body["detail"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    stored = await client.get(f"{SESSIONS}/{session['id']}", headers=account.headers)
    assert stored.json()["title"] == "before"


async def test_a_500_gets_a_request_id_when_the_client_sent_none(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await factory.account()

    async def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero in the list query")

    monkeypatch.setattr(chat_session_service, "list_chat_sessions", broken)
    response = await client.get(SESSIONS, headers=account.headers)

    body = assert_problem(response, 500, "internal_error")
    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.match(request_id)
    assert request_id in body["detail"]
    assert "division" not in response.text


async def test_request_id_is_echoed_when_given_and_generated_when_not(
    client: httpx.AsyncClient,
) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "abc-123.def:456_x"})
    first = await client.get("/health")
    second = await client.get("/health")

    assert given.headers["x-request-id"] == "abc-123.def:456_x"
    assert GENERATED_ID.match(first.headers["x-request-id"])
    assert GENERATED_ID.match(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "unsafe", ["has space", "x" * 129, "new\\nline", "<script>", 'quote"d'], ids=repr
)
async def test_an_unsafe_request_id_is_replaced(client: httpx.AsyncClient, unsafe: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": unsafe})

    assert GENERATED_ID.match(response.headers["x-request-id"])


async def test_errors_carry_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/users/me", headers={"X-Request-ID": "trace-401"})

    assert_problem(response, 401, "unauthorized")
    assert response.headers["x-request-id"] == "trace-401"


async def test_security_headers_on_every_answer(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    answers = [
        await client.get("/health"),
        await client.get(f"{API}/sessions", headers=account.headers),
        await client.get(f"{API}/sessions"),  # 401
        await client.get("/nowhere"),  # 404
        await client.delete(f"{API}/sessions", headers=account.headers),  # 405
        await client.post(f"{API}/sessions", json={"x": 1}, headers=account.headers),  # 422
        await client.get("/docs"),
        await client.get("/openapi.json"),
    ]

    for response in answers:
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
        assert response.headers["x-frame-options"] == "DENY", response.request.url
        assert response.headers["referrer-policy"] == "no-referrer", response.request.url
    # Outside production there is no HSTS (plain-HTTP development servers).
    assert "strict-transport-security" not in answers[0].headers


async def test_credentials_answers_are_not_cached(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    for response in (
        await client.post(
            f"{API}/auth/token", data={"username": account.email, "password": account.password}
        ),
        await client.post(f"{API}/auth/token", data={"username": account.email, "password": "no"}),
        await client.post(f"{API}/auth/refresh", json={"refresh_token": account.refresh_token}),
        await client.post(f"{API}/api-keys", json={"name": "k"}, headers=account.headers),
        await client.get(f"{API}/api-keys", headers=account.headers),
    ):
        assert response.headers["cache-control"] == "no-store", response.request.url


@pytest.mark.parametrize(
    "unreachable",
    [
        "postgresql://root@127.0.0.1:1/nowhere",  # refused
        "postgresql://root@chat-store-db.invalid:5432/nowhere",  # a name that does not resolve
    ],
)
async def test_an_unreachable_database_is_a_503_not_a_500(
    app_with: AppWith, unreachable: str
) -> None:
    async with app_with(database_url=unreachable, db_pool_timeout=1.0) as without_database:
        answer = await without_database.client.post(
            "/api/v1/auth/register",
            json={"email": "nobody@example.com", "password": "long enough password"},
        )
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["code"] == "service_unavailable"
        assert answer.headers["Retry-After"] == "1"
        for leak in ("127.0.0.1", "chat-store-db", "Traceback"):
            assert leak not in answer.text


async def test_a_deadlock_reported_through_the_adapter_is_a_503(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLAlchemy's asyncpg adapter raises its own error class, caused by the driver's: the
    driver's class (here: the database undid one of two deadlocked transactions) decides."""
    account = await factory.account()
    session = await factory.chat_session(account)

    async def deadlocked(db: object) -> None:
        adapted = Exception("deadlock detected")
        adapted.__cause__ = asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        raise DBAPIError("UPDATE chat_session ...", None, adapted)

    monkeypatch.setattr(chat_session_crud, "flush", deadlocked)
    response = await client.patch(
        f"{SESSIONS}/{session['id']}", json={"title": "after"}, headers=account.headers
    )
    assert_problem(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "1"


def _adapted(driver_error: Exception) -> Exception:
    """The driver's error as SQLAlchemy's asyncpg adapter raises it: its own class, caused by
    the driver's."""
    adapter_error = Exception(str(driver_error))
    adapter_error.__cause__ = driver_error
    return adapter_error


OUT_OF_STEP = "cannot switch to state 12; another operation (2) is in progress"
LOST_CONNECTION = {
    "driver, unwrapped": asyncpg.InternalClientError(OUT_OF_STEP),
    "driver, wrapped": DBAPIError(
        "UPDATE chat_session ...", None, asyncpg.InternalClientError(OUT_OF_STEP)
    ),
    "adapter, wrapped": DBAPIError(
        "UPDATE chat_session ...", None, _adapted(asyncpg.InternalClientError(OUT_OF_STEP))
    ),
    "terminated backend": DBAPIError(
        "UPDATE chat_session ...",
        None,
        _adapted(asyncpg.AdminShutdownError("terminating connection due to administrator")),
    ),
    "closed, unwrapped": asyncpg.InterfaceError("connection is closed"),
    "gone, unwrapped": asyncpg.ConnectionDoesNotExistError("connection was closed"),
    "reset, wrapped": DBAPIError("UPDATE chat_session ...", None, _adapted(ConnectionResetError())),
}


@pytest.mark.parametrize("error", LOST_CONNECTION.values(), ids=LOST_CONNECTION.keys())
async def test_a_lost_connection_in_any_form_is_a_503(
    client: httpx.AsyncClient,
    factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    """However the driver's error arrives (as it is, or wrapped by SQLAlchemy and its adapter),
    a lost connection is a passing condition: 503, retry."""
    account = await factory.account()
    session = await factory.chat_session(account)

    async def lost(db: object) -> None:
        raise error

    monkeypatch.setattr(chat_session_crud, "flush", lost)
    response = await client.patch(
        f"{SESSIONS}/{session['id']}", json={"title": "after"}, headers=account.headers
    )
    assert_problem(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert "state 12" not in response.text
