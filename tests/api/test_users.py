"""The caller's own account: /users/me."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import func, select

from chat_store.api.deps import AppState
from chat_store.models import ApiKey, ChatSession, RefreshToken, User
from tests.assertions import assert_problem, assert_validation_error, parse_time
from tests.factories import API, Factory

ME = f"{API}/users/me"


async def login_status(client: httpx.AsyncClient, email: str, password: str) -> int:
    response = await client.post(
        f"{API}/auth/token", data={"username": email, "password": password}
    )
    return response.status_code


async def test_me_needs_credentials(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        body = {"display_name": "x"} if method == "PATCH" else None
        response = await client.request(method, ME, json=body)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


async def test_me_is_always_the_callers_own_account(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    ada = await factory.account()
    bob = await factory.account()

    await client.patch(ME, json={"display_name": "Bob"}, headers=bob.headers)

    ada_me = (await client.get(ME, headers=ada.headers)).json()
    bob_me = (await client.get(ME, headers=bob.headers)).json()
    assert (ada_me["id"], ada_me["email"], ada_me["display_name"]) == (ada.user_id, ada.email, None)
    assert (bob_me["id"], bob_me["email"], bob_me["display_name"]) == (
        bob.user_id,
        bob.email,
        "Bob",
    )


async def test_get_me(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    key = await factory.api_key(account)

    by_token = await client.get(ME, headers=account.headers)
    by_key = await client.get(ME, headers={"X-API-Key": key["key"]})

    assert by_token.status_code == 200
    body = by_token.json()
    assert set(body) == {"id", "object", "email", "display_name", "created_at", "updated_at"}
    assert body["object"] == "user"
    assert body["id"] == account.user_id
    assert body["email"] == account.email
    assert by_key.json() == body


async def test_patch_me_sets_and_clears_the_display_name(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    before = (await client.get(ME, headers=account.headers)).json()

    named = await client.patch(ME, json={"display_name": "Ada L."}, headers=account.headers)

    assert named.status_code == 200, named.text
    assert named.json()["display_name"] == "Ada L."
    assert parse_time(named.json()["updated_at"]) >= parse_time(before["updated_at"])
    assert (await client.get(ME, headers=account.headers)).json()["display_name"] == "Ada L."
    # An empty PATCH changes nothing; null clears.
    unchanged = await client.patch(ME, json={}, headers=account.headers)
    assert unchanged.json()["display_name"] == "Ada L."
    cleared = await client.patch(ME, json={"display_name": None}, headers=account.headers)
    assert cleared.json()["display_name"] is None
    assert (await client.get(ME, headers=account.headers)).json()["display_name"] is None


async def test_patch_me_refuses_fields_it_does_not_change(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    response = await client.patch(ME, json={"email": "new@example.com"}, headers=account.headers)

    body = assert_validation_error(response, "body", "email")
    assert "email" in body["detail"]
    assert (await client.get(ME, headers=account.headers)).json()["email"] == account.email


async def test_changing_the_password_needs_the_current_one(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    new_password = "a brand new password"

    missing = await client.patch(ME, json={"password": new_password}, headers=account.headers)
    wrong = await client.patch(
        ME,
        json={"password": new_password, "current_password": "not the password"},
        headers=account.headers,
    )

    assert_validation_error(missing, "body", "current_password")
    assert_validation_error(wrong, "body", "current_password")
    assert await login_status(client, account.email, account.password) == 200
    assert await login_status(client, account.email, new_password) == 401


async def test_changing_the_password(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    new_password = "a brand new password"

    response = await client.patch(
        ME,
        json={"password": new_password, "current_password": account.password},
        headers=account.headers,
    )

    assert response.status_code == 200, response.text
    assert "password" not in response.text
    assert await login_status(client, account.email, new_password) == 200
    assert await login_status(client, account.email, account.password) == 401


async def test_a_new_password_ends_the_logins_made_with_the_old_one(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    changed = await client.patch(
        ME,
        json={"password": "a brand new password", "current_password": account.password},
        headers=account.headers,
    )
    assert changed.status_code == 200
    refreshed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": account.refresh_token}
    )
    assert refreshed.status_code == 401
    assert refreshed.json()["code"] == "unauthorized"
    # A login with the new password gets tokens that refresh.
    tokens = await factory.login(account.email, "a brand new password")
    renewed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert renewed.status_code == 200


async def test_a_new_password_follows_the_registration_rules(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    response = await client.patch(
        ME,
        json={"password": "short", "current_password": account.password},
        headers=account.headers,
    )

    assert_validation_error(response, "body", "password")
    assert await login_status(client, account.email, account.password) == 200


async def count_owned(state: AppState, user_id: str) -> dict[str, int]:
    owner = uuid.UUID(user_id)
    counts = {}
    async with state.sessionmaker() as db:
        for model in (User, ChatSession, ApiKey, RefreshToken):
            column = model.id if model is User else model.user_id
            stmt = select(func.count()).select_from(model).where(column == owner)
            counts[model.__tablename__] = int((await db.execute(stmt)).scalar_one())
    return counts


async def test_delete_me_erases_the_user_and_everything_it_owns(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    other = await factory.account()
    await factory.chat_session(account, title="mine")
    await factory.chat_session(account, title="mine too")
    others_session = await factory.chat_session(other, title="not mine")
    key = await factory.api_key(account)
    assert await count_owned(state, account.user_id) == {
        "user": 1,
        "chat_session": 2,
        "api_key": 1,
        "refresh_token": 1,
    }

    response = await client.delete(ME, headers=account.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert await count_owned(state, account.user_id) == {
        "user": 0,
        "chat_session": 0,
        "api_key": 0,
        "refresh_token": 0,
    }
    assert_problem(await client.get(ME, headers=account.headers), 401, "unauthorized")
    assert_problem(await client.get(ME, headers={"X-API-Key": key["key"]}), 401, "unauthorized")
    assert await login_status(client, account.email, account.password) == 401
    # Nobody else's data goes with it.
    kept = await client.get(f"{API}/sessions/{others_session['id']}", headers=other.headers)
    assert kept.status_code == 200
