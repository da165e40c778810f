"""Registration, the token endpoint, refresh-token rotation, logout, and access-token checks."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from jose import jwt
from passlib.hash import bcrypt
from sqlalchemy import delete, func, select, update

from chat_store.api.deps import AppState
from chat_store.crud import auth_tokens
from chat_store.models import RefreshToken, User
from chat_store.schemas.api_keys import ApiKeyCreate
from chat_store.security import create_access_token
from chat_store.services import api_keys as api_key_service
from chat_store.settings import Settings
from tests.assertions import assert_problem, assert_validation_error, parse_time
from tests.conftest import AppWith
from tests.factories import API, Factory

AUTH = f"{API}/auth"
PASSWORD = "correct horse battery"


async def register(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(f"{AUTH}/register", json={"email": email, "password": password})


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(f"{AUTH}/token", data={"username": email, "password": password})


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(f"{AUTH}/refresh", json={"refresh_token": token})


async def me(client: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {access_token}"})


async def count_users(state: AppState, email: str) -> int:
    async with state.sessionmaker() as db:
        result = await db.execute(select(func.count()).select_from(User).where(User.email == email))
        return int(result.scalar_one())


# --- register


async def test_register_answers_the_user_with_the_email_case_folded(
    client: httpx.AsyncClient, state: AppState
) -> None:
    response = await client.post(
        f"{AUTH}/register",
        json={"email": "Ada.Lovelace@Example.COM", "password": PASSWORD, "display_name": "Ada"},
    )

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"id", "object", "email", "display_name", "created_at", "updated_at"}
    assert body["object"] == "user"
    assert body["email"] == "ada.lovelace@example.com"
    assert body["display_name"] == "Ada"
    assert uuid.UUID(body["id"]).version == 7
    parse_time(body["created_at"])
    assert await count_users(state, "ada.lovelace@example.com") == 1
    for typed in ("ada.lovelace@example.com", "ADA.LOVELACE@example.com"):
        assert (await login(client, typed, PASSWORD)).status_code == 200


async def test_register_refuses_a_taken_email_whatever_its_case(
    client: httpx.AsyncClient, state: AppState
) -> None:
    assert (await register(client, "grace@example.com")).status_code == 201

    for taken in ("grace@example.com", "Grace@EXAMPLE.com"):
        response = await register(client, taken, password="another password")
        assert_problem(response, 409, "email_taken")

    assert await count_users(state, "grace@example.com") == 1
    # The first password is still the one that logs in.
    assert (await login(client, "grace@example.com", PASSWORD)).status_code == 200
    assert (await login(client, "grace@example.com", "another password")).status_code == 401


async def test_email_is_free_again_once_its_user_is_deleted(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account(email="reused@example.com")
    deleted = await client.delete(f"{API}/users/me", headers=account.headers)
    assert deleted.status_code == 204

    again = await register(client, "REUSED@example.com", password="a new password")

    assert again.status_code == 201, again.text
    assert again.json()["id"] != account.user_id
    assert (await login(client, "reused@example.com", "a new password")).status_code == 200
    assert (await login(client, "reused@example.com", account.password)).status_code == 401


# One address, spelled four ways: composed (NFC) and decomposed (NFD) accents, a Unicode and
# an ASCII (punycode) domain, any case.
EMAIL_NFC = "Jos\u00e9@B\u00fccher.example"
EMAIL_SPELLINGS = (
    "jose\u0301@xn--bcher-kva.example",
    "JOSE\u0301@B\u00dcCHER.EXAMPLE",
    " jos\u00e9@xn--BCHER-kva.example ",
)


async def test_an_address_logs_in_however_it_is_spelled(
    client: httpx.AsyncClient, state: AppState
) -> None:
    registered = await register(client, EMAIL_NFC)
    assert registered.status_code == 201, registered.text
    assert registered.json()["email"] == "jos\u00e9@b\u00fccher.example"

    for spelling in EMAIL_SPELLINGS:
        assert (await login(client, spelling, PASSWORD)).status_code == 200, ascii(spelling)
        assert_problem(await register(client, spelling.strip()), 409, "email_taken")
    assert await count_users(state, "jos\u00e9@b\u00fccher.example") == 1


async def test_an_operator_finds_a_user_however_the_email_is_spelled(
    client: httpx.AsyncClient, state: AppState
) -> None:
    # The CLI's `api-keys create --email` looks the user up with the same normalization.
    assert (await register(client, EMAIL_NFC)).status_code == 201
    async with state.sessionmaker() as db, db.begin():
        created = await api_key_service.create_api_key_for_email(
            db, state.settings, EMAIL_SPELLINGS[0], ApiKeyCreate(name="cli")
        )
    answer = await client.get(f"{API}/users/me", headers={"X-API-Key": created.key})
    assert answer.json()["email"] == "jos\u00e9@b\u00fccher.example"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "short@example.com", "password": "7 chars"},
        {"email": "long@example.com", "password": "x" * 1025},
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "nopassword@example.com"},
    ],
    ids=["password-7-chars", "password-1025-chars", "bad-email", "no-password"],
)
async def test_register_refuses_invalid_credentials(
    client: httpx.AsyncClient, state: AppState, body: dict[str, Any]
) -> None:
    response = await client.post(f"{AUTH}/register", json=body)

    assert_validation_error(response, "body")
    assert await count_users(state, body["email"]) == 0


@pytest.mark.parametrize("length", [8, 1024])
async def test_register_accepts_passwords_from_8_to_1024_chars(
    client: httpx.AsyncClient, length: int
) -> None:
    password = "p" * (length - 1) + "!"
    email = f"len{length}@example.com"

    assert (await register(client, email, password)).status_code == 201
    assert (await login(client, email, password)).status_code == 200
    assert (await login(client, email, password[:-1] + "?")).status_code == 401


async def test_passwords_are_compared_beyond_bcrypts_72_bytes(client: httpx.AsyncClient) -> None:
    first_72 = "a" * 72
    password = first_72 + "b" * 28  # 100 characters
    differs_after_72 = first_72 + "c" * 28
    assert (await register(client, "long@example.com", password)).status_code == 201

    assert (await login(client, "long@example.com", differs_after_72)).status_code == 401
    assert (await login(client, "long@example.com", first_72)).status_code == 401
    assert (await login(client, "long@example.com", password)).status_code == 200


async def test_registration_can_be_turned_off(
    app_with: AppWith, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = await factory.account()
    monkeypatch.setenv("ALLOW_REGISTRATION", "false")

    async with app_with() as closed:
        assert closed.state.settings.allow_registration is False
        client = closed.client
        response = await register(client, "newcomer@example.com")
        assert_problem(response, 403, "registration_closed")
        assert (await login(client, "newcomer@example.com", PASSWORD)).status_code == 401
        # Existing users still log in.
        assert (await login(client, existing.email, existing.password)).status_code == 200


# --- token


async def test_token_answers_a_bearer_pair(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    account = await factory.account()

    response = await login(client, account.email, account.password)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_minutes * 60
    claims = jwt.decode(
        body["access_token"], settings.jwt_secret_value(), algorithms=[settings.jwt_algorithm]
    )
    assert claims["sub"] == account.user_id
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert (await me(client, body["access_token"])).json()["id"] == account.user_id


async def test_a_plain_bcrypt_hash_is_upgraded_at_the_next_login(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """A hash of the older scheme (plain bcrypt, blind beyond 72 bytes) still verifies, and
    the login keeps a bcrypt_sha256 hash of the password instead."""
    account = await factory.account()
    old_hash = bcrypt.using(rounds=4).hash(account.password)
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(User).where(User.id == uuid.UUID(account.user_id)).values(password_hash=old_hash)
        )

    assert (await login(client, account.email, account.password)).status_code == 200
    assert (await login(client, account.email, "wrong password!")).status_code == 401

    async with state.sessionmaker() as db:
        stored = await db.scalar(
            select(User.password_hash).where(User.id == uuid.UUID(account.user_id))
        )
    assert stored is not None and stored.startswith("$bcrypt-sha256$")
    assert (await login(client, account.email, account.password)).status_code == 200


async def test_token_takes_the_oauth2_form_not_json(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    response = await client.post(
        f"{AUTH}/token", json={"username": account.email, "password": account.password}
    )

    assert_validation_error(response)


async def test_token_answers_unknown_email_and_wrong_password_alike(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    unknown = await login(client, "nobody@example.com", account.password)
    wrong = await login(client, account.email, "not the password")

    assert_problem(unknown, 401, "unauthorized")
    assert_problem(wrong, 401, "unauthorized")
    assert unknown.json() == wrong.json()
    assert unknown.headers["www-authenticate"] == wrong.headers["www-authenticate"] == "Bearer"
    assert unknown.headers["cache-control"] == wrong.headers["cache-control"] == "no-store"


# --- refresh and logout


async def test_refresh_rotates_the_pair_and_spends_the_old_token(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    rotated = await refresh(client, account.refresh_token)

    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    pair = rotated.json()
    assert pair["token_type"] == "bearer"
    assert pair["refresh_token"] != account.refresh_token
    assert (await me(client, pair["access_token"])).status_code == 200


async def test_reusing_a_spent_refresh_token_revokes_its_family(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    other_login = (await login(client, account.email, account.password)).json()
    rotated = (await refresh(client, account.refresh_token)).json()

    reused = await refresh(client, account.refresh_token)

    assert_problem(reused, 401, "unauthorized")
    # The token the rotation handed out is revoked with its family...
    assert_problem(await refresh(client, rotated["refresh_token"]), 401, "unauthorized")
    # ...and the revocation was kept although the request failed.
    async with state.sessionmaker() as db:
        rows = (
            await db.execute(
                select(RefreshToken.family_id, RefreshToken.revoked_at).where(
                    RefreshToken.user_id == uuid.UUID(account.user_id)
                )
            )
        ).all()
    revoked = [row for row in rows if row.revoked_at is not None]
    assert len(revoked) == 2
    assert len({row.family_id for row in revoked}) == 1
    # Another login of the same user is another family, untouched.
    assert (await refresh(client, other_login["refresh_token"])).status_code == 200


async def test_refresh_refuses_unknown_and_expired_tokens(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    assert_problem(await refresh(client, "not-a-token-we-issued"), 401, "unauthorized")
    assert_validation_error(await client.post(f"{AUTH}/refresh", json={}), "body")

    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == uuid.UUID(account.user_id))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    assert_problem(await refresh(client, account.refresh_token), 401, "unauthorized")


async def test_logout_revokes_the_whole_family(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    other_login = (await login(client, account.email, account.password)).json()
    rotated = (await refresh(client, account.refresh_token)).json()

    # Logging out with any token of the family (here the spent first one) ends all of it.
    response = await client.post(f"{AUTH}/logout", json={"refresh_token": account.refresh_token})

    assert response.status_code == 204
    assert response.headers["cache-control"] == "no-store"
    assert_problem(await refresh(client, rotated["refresh_token"]), 401, "unauthorized")
    assert (await refresh(client, other_login["refresh_token"])).status_code == 200


async def test_logout_with_the_current_token_and_with_an_unknown_one(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()

    current = await client.post(f"{AUTH}/logout", json={"refresh_token": account.refresh_token})
    unknown = await client.post(f"{AUTH}/logout", json={"refresh_token": "never-issued"})

    assert current.status_code == 204
    assert unknown.status_code == 204  # nothing to revoke is not an error
    assert_problem(await refresh(client, account.refresh_token), 401, "unauthorized")


# --- access tokens


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    return {"sub": user_id, "type": "access", "iat": now, "exp": now + 600, **overrides}


async def assert_refused(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await me(client, token)
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    return body


async def test_a_valid_token_is_accepted(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    # The control for the refusals below: a token built the same way, correctly, works.
    account = await factory.account()
    token = jwt.encode(_claims(account.user_id), settings.jwt_secret_value(), algorithm="HS256")

    response = await me(client, token)

    assert response.status_code == 200
    assert response.json()["id"] == account.user_id


async def test_credentials_are_read_from_their_headers(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    key = (await factory.api_key(account))["key"]
    token = account.access_token

    def who(headers: dict[str, str]) -> Any:
        return client.get(f"{API}/users/me", headers=headers)

    # The scheme's case does not matter; an API key works as a bearer token too.
    for headers in (
        {"Authorization": f"bearer {token}"},
        {"Authorization": f"BEARER {key}"},
        {"X-API-Key": key},
        # A bearer token is taken before an X-API-Key.
        {"Authorization": f"Bearer {token}", "X-API-Key": "csk_wrong"},
    ):
        answer = await who(headers)
        assert (answer.status_code, answer.json().get("id")) == (200, account.user_id), headers
    # Other schemes, an empty token or key, and a key that is not one: refused.
    for headers in (
        {"Authorization": f"Basic {token}"},
        {"Authorization": "Bearer "},
        {"Authorization": token},
        {"X-API-Key": ""},
        {"X-API-Key": "csk_wrong"},
        {"Authorization": "Bearer csk_wrong", "X-API-Key": key},
    ):
        assert_problem(await who(headers), 401, "unauthorized")
    # The guest header is checked for size even when guests are off.
    assert_validation_error(await who({"X-Client-ID": "c" * 65}), "header", "X-Client-ID")


async def test_an_expired_access_token_is_refused(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    account = await factory.account()
    token, _ = create_access_token(
        uuid.UUID(account.user_id),
        settings.jwt_secret_value(),
        settings.jwt_algorithm,
        timedelta(seconds=-5),
    )

    body = await assert_refused(client, token)

    assert "expired" in body["detail"].lower()


async def test_a_tampered_access_token_is_refused(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    victim = await factory.account()
    attacker = await factory.account()
    header, _, signature = attacker.access_token.split(".")
    # The victim's id in the payload, under the attacker's valid signature.
    forged = f"{header}.{_b64(_claims(victim.user_id))}.{signature}"
    await assert_refused(client, forged)
    # A token signed with another secret.
    await assert_refused(
        client, jwt.encode(_claims(victim.user_id), "another-secret-" + "y" * 40, "HS256")
    )


async def test_an_unsigned_alg_none_token_is_refused(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    for alg in ("none", "None", "NONE"):
        token = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(_claims(account.user_id))}."
        await assert_refused(client, token)


async def test_a_token_signed_with_another_algorithm_is_refused(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    assert settings.jwt_algorithm == "HS256"
    account = await factory.account()
    secret = settings.jwt_secret_value()

    await assert_refused(client, jwt.encode(_claims(account.user_id), secret, algorithm="HS512"))
    await assert_refused(client, jwt.encode(_claims(account.user_id), secret, algorithm="HS384"))


async def test_tokens_that_are_not_access_tokens_are_refused(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    account = await factory.account()
    secret = settings.jwt_secret_value()

    await assert_refused(client, account.refresh_token)
    await assert_refused(client, "not.a.jwt")
    await assert_refused(
        client, jwt.encode(_claims(account.user_id, type="refresh"), secret, algorithm="HS256")
    )
    await assert_refused(client, jwt.encode(_claims("not-a-uuid"), secret, algorithm="HS256"))
    without_exp = _claims(account.user_id)
    del without_exp["exp"]
    await assert_refused(client, jwt.encode(without_exp, secret, algorithm="HS256"))


async def test_the_token_of_a_deleted_user_is_refused(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    assert (await me(client, account.access_token)).status_code == 200

    assert (await client.delete(f"{API}/users/me", headers=account.headers)).status_code == 204

    await assert_refused(client, account.access_token)
    # Refused everywhere, not only where the user row itself is read.
    for method, url in (("GET", f"{API}/sessions"), ("POST", f"{API}/sessions")):
        response = await client.request(method, url, json={}, headers=account.headers)
        assert_problem(response, 401, "unauthorized")
    assert_problem(await refresh(client, account.refresh_token), 401, "unauthorized")


@pytest.mark.parametrize(
    "exp", [10**30, 2**63, 1e30, "9999999999", "soon"], ids=["1e30", "2^63", "float", "str", "word"]
)
async def test_a_signed_token_with_an_unusable_exp_is_refused(
    client: httpx.AsyncClient, factory: Factory, settings: Settings, exp: Any
) -> None:
    account = await factory.account()
    token = jwt.encode(
        _claims(account.user_id, exp=exp), settings.jwt_secret_value(), algorithm="HS256"
    )

    await assert_refused(client, token)


UNREADABLE_TIMES = [None, [], {"t": 1}, float("inf"), float("-inf")]


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", UNREADABLE_TIMES, ids=["null", "list", "object", "inf", "-inf"])
async def test_a_signed_token_with_a_time_claim_that_is_not_a_number_is_refused(
    client: httpx.AsyncClient, factory: Factory, settings: Settings, claim: str, value: Any
) -> None:
    # The library that checks the signature reads these claims itself, and failed on them
    # (a 500) on every route; a JSON infinity is what Python's JSON reader accepts.
    account = await factory.account()
    token = jwt.encode(
        _claims(account.user_id, **{claim: value}), settings.jwt_secret_value(), algorithm="HS256"
    )

    await assert_refused(client, token)
    restore = await client.post(
        f"{API}/sessions/{uuid.uuid4()}/restore", headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(restore, 401, "unauthorized")


async def test_writes_by_a_user_deleted_behind_the_cache_are_refused_not_failed(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    # The credentials are cached (verified a moment ago), and the user is deleted where the
    # cache does not hear of it (another process on the embedded default, an operator's SQL):
    # the writes meet the missing user row in the database.
    account = await factory.account()
    key = {"X-API-Key": (await factory.api_key(account))["key"]}
    for headers in (account.headers, key):
        assert (await client.get(f"{API}/sessions", headers=headers)).status_code == 200
    async with state.sessionmaker() as db, db.begin():
        await db.execute(delete(User).where(User.id == uuid.UUID(account.user_id)))

    for headers in (account.headers, key):
        for method, url, body, extra in (
            ("POST", f"{API}/sessions", {"title": "t"}, {}),
            ("POST", f"{API}/sessions", {"title": "t"}, {"Idempotency-Key": "k1"}),
            ("POST", f"{API}/api-keys", {"name": "n"}, {}),
        ):
            response = await client.request(method, url, json=body, headers=headers | extra)
            assert_problem(response, 401, "unauthorized")


def _slow_refresh(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, Any]:
    """Hold a refresh between spending its token and committing the new one (the window is
    there anyway; the sleep widens it so that a test can act inside it)."""
    mark_used = auth_tokens.mark_used
    spent = asyncio.Event()

    async def slow_mark_used(db: Any, token_id: uuid.UUID, at: datetime) -> bool:
        done = await mark_used(db, token_id, at)
        spent.set()
        await asyncio.sleep(0.5)
        return done

    monkeypatch.setattr(auth_tokens, "mark_used", slow_mark_used)
    return spent, mark_used


@pytest.mark.postgres_only
async def test_a_password_change_during_a_refresh_revokes_the_token_it_hands_out(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres only: SQLite runs one write at a time, so the two cannot overlap."""
    account = await factory.account()
    spent, mark_used = _slow_refresh(monkeypatch)

    async def change_password() -> httpx.Response:
        await spent.wait()
        return await client.patch(
            f"{API}/users/me",
            json={"password": "a brand new password", "current_password": account.password},
            headers=account.headers,
        )

    refreshed, changed = await asyncio.gather(
        client.post(f"{API}/auth/refresh", json={"refresh_token": account.refresh_token}),
        change_password(),
    )
    assert (refreshed.status_code, changed.status_code) == (200, 200)
    monkeypatch.setattr(auth_tokens, "mark_used", mark_used)
    again = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": refreshed.json()["refresh_token"]}
    )
    assert_problem(again, 401, "unauthorized")


@pytest.mark.postgres_only
async def test_a_reuse_found_during_a_refresh_revokes_the_token_that_refresh_hands_out(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await factory.account()
    first = await client.post(f"{API}/auth/refresh", json={"refresh_token": account.refresh_token})
    current = first.json()["refresh_token"]  # account.refresh_token is spent now
    spent, mark_used = _slow_refresh(monkeypatch)

    async def replay_the_stolen_copy() -> httpx.Response:
        await spent.wait()
        return await client.post(
            f"{API}/auth/refresh", json={"refresh_token": account.refresh_token}
        )

    refreshed, reused = await asyncio.gather(
        client.post(f"{API}/auth/refresh", json={"refresh_token": current}),
        replay_the_stolen_copy(),
    )
    assert (refreshed.status_code, reused.status_code) == (200, 401)
    monkeypatch.setattr(auth_tokens, "mark_used", mark_used)
    newest = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": refreshed.json()["refresh_token"]}
    )
    assert_problem(newest, 401, "unauthorized")
