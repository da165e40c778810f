"""API keys: created once with their secret, listed without it, usable two ways, revocable."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update

from chat_store.api.deps import AppState
from chat_store.client import AsyncChatStoreClient
from chat_store.client.models import StreamDelta, StreamDone
from chat_store.ids import uuid7
from chat_store.models import ApiKey
from chat_store.security import create_access_token, sha256_hex
from chat_store.services import principals as principal_service
from tests.assertions import assert_problem, assert_recent, assert_validation_error, parse_time
from tests.conftest import AppWith
from tests.factories import API, Factory
from tests.support.chat import events_of

KEYS = f"{API}/api-keys"
ME = f"{API}/users/me"


async def test_api_keys_need_credentials(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    key = await factory.api_key(account)

    for method, url, body in [
        ("POST", KEYS, {"name": "x"}),
        ("GET", KEYS, None),
        ("DELETE", f"{KEYS}/{key['id']}", None),
    ]:
        response = await client.request(method, url, json=body)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["cache-control"] == "no-store"

    assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 200


async def test_another_users_key_is_not_found(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.account()
    other = await factory.account()
    key = await factory.api_key(owner)

    response = await client.delete(f"{KEYS}/{key['id']}", headers=other.headers)

    assert_problem(response, 404, "not_found")
    assert (await client.get(KEYS, headers=other.headers)).json()["data"] == []
    assert (await client.get(ME, headers={"X-API-Key": key["key"]})).json()["id"] == owner.user_id


async def test_create_shows_the_secret_once_and_stores_only_its_hash(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()

    response = await client.post(KEYS, json={"name": "laptop cli"}, headers=account.headers)

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    assert set(created) == {
        "id",
        "object",
        "name",
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "key",
    }
    assert created["object"] == "api_key"
    assert created["name"] == "laptop cli"
    assert created["key"].startswith("csk_")
    assert len(created["key"]) > 40
    assert created["prefix"] == created["key"][: len(created["prefix"])]
    assert created["prefix"].startswith("csk_")
    assert len(created["prefix"]) < len(created["key"]) // 2
    assert created["expires_at"] is None
    assert created["last_used_at"] is None
    assert_recent(created["created_at"])
    async with state.sessionmaker() as db:
        row = await db.get(ApiKey, uuid.UUID(created["id"]))
    assert row is not None
    assert row.key_hash == sha256_hex(created["key"])
    stored = [str(getattr(row, column.key)) for column in ApiKey.__table__.columns]
    assert not any(created["key"] in value for value in stored)


async def test_list_never_shows_the_secret(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    first = await factory.api_key(account, name="first")
    second = await factory.api_key(account, name="second")

    response = await client.get(KEYS, headers=account.headers)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    page = response.json()
    assert page["object"] == "list"
    assert page["has_more"] is False
    assert [item["id"] for item in page["data"]] == [second["id"], first["id"]]  # newest first
    assert (page["first_id"], page["last_id"]) == (second["id"], first["id"])
    for item, created in zip(page["data"], [second, first], strict=True):
        assert "key" not in item
        assert item["prefix"] == created["prefix"]
        assert item["name"] == created["name"]
    assert first["key"] not in response.text
    assert second["key"] not in response.text


async def test_a_key_works_as_bearer_and_as_x_api_key(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    key = (await factory.api_key(account))["key"]

    as_bearer = await client.get(ME, headers={"Authorization": f"Bearer {key}"})
    as_header = await client.get(ME, headers={"X-API-Key": key})

    assert as_bearer.status_code == 200, as_bearer.text
    assert as_header.status_code == 200, as_header.text
    assert as_bearer.json()["id"] == as_header.json()["id"] == account.user_id
    # A key acts for its owner everywhere, not only on /users/me.
    created = await client.post(
        f"{API}/sessions", json={"title": "by key"}, headers={"X-API-Key": key}
    )
    assert created.status_code == 201
    listed = await client.get(f"{API}/sessions", headers=account.headers)
    assert [s["id"] for s in listed.json()["data"]] == [created.json()["id"]]


async def test_unknown_keys_are_refused(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    key = (await factory.api_key(account))["key"]

    for headers in (
        {"X-API-Key": key + "x"},
        {"X-API-Key": "csk_" + "A" * 43},
        {"X-API-Key": "not-even-a-key"},
        {"Authorization": f"Bearer {key[:-1]}"},
    ):
        assert_problem(await client.get(ME, headers=headers), 401, "unauthorized")


async def test_a_revoked_key_stops_working(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    key = await factory.api_key(account)
    kept = await factory.api_key(account, name="kept")

    response = await client.delete(f"{KEYS}/{key['id']}", headers=account.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get(ME, headers={"X-API-Key": key["key"]}), 401, "unauthorized")
    assert_problem(
        await client.get(ME, headers={"Authorization": f"Bearer {key['key']}"}), 401, "unauthorized"
    )
    listed = (await client.get(KEYS, headers=account.headers)).json()
    assert [item["id"] for item in listed["data"]] == [kept["id"]]
    assert (await client.get(ME, headers={"X-API-Key": kept["key"]})).status_code == 200
    # Revoking again, or a key that never existed: 404.
    assert_problem(
        await client.delete(f"{KEYS}/{key['id']}", headers=account.headers), 404, "not_found"
    )
    assert_problem(
        await client.delete(f"{KEYS}/{uuid7()}", headers=account.headers), 404, "not_found"
    )


async def test_expires_at_must_be_in_the_future(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    naive = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()

    assert_validation_error(
        await client.post(KEYS, json={"name": "old", "expires_at": past}, headers=account.headers),
        "body",
        "expires_at",
    )
    assert_validation_error(
        await client.post(
            KEYS, json={"name": "naive", "expires_at": naive}, headers=account.headers
        ),
        "body",
        "expires_at",
    )
    assert (await client.get(KEYS, headers=account.headers)).json()["data"] == []


async def test_an_expired_key_is_refused(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    expires = datetime.now(UTC) + timedelta(hours=1)
    key = await factory.api_key(account, expires_at=expires.isoformat())
    assert parse_time(key["expires_at"]) == expires

    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(ApiKey)
            .where(ApiKey.id == uuid.UUID(key["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    for headers in ({"X-API-Key": key["key"]}, {"Authorization": f"Bearer {key['key']}"}):
        body = assert_problem(await client.get(ME, headers=headers), 401, "unauthorized")
        assert "expired" in body["detail"].lower()


async def test_a_key_in_use_stops_working_when_it_expires(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await factory.account()
    expires = datetime.now(UTC) + timedelta(hours=1)
    key = await factory.api_key(account, expires_at=expires.isoformat())
    assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 200

    class TwoHoursLater(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + timedelta(hours=2)

    monkeypatch.setattr(principal_service, "datetime", TwoHoursLater)

    for headers in ({"X-API-Key": key["key"]}, {"Authorization": f"Bearer {key['key']}"}):
        body = assert_problem(await client.get(ME, headers=headers), 401, "unauthorized")
        assert "expired" in body["detail"].lower()
    assert (await client.get(ME, headers=account.headers)).status_code == 200


async def test_using_a_key_records_its_last_use(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    key = await factory.api_key(account)

    assert (
        await client.get(f"{API}/sessions", headers={"X-API-Key": key["key"]})
    ).status_code == 200

    listed = (await client.get(KEYS, headers=account.headers)).json()["data"]
    assert listed[0]["id"] == key["id"]
    assert_recent(listed[0]["last_used_at"])
    async with state.sessionmaker() as db:
        stored = await db.scalar(
            select(ApiKey.last_used_at).where(ApiKey.id == uuid.UUID(key["id"]))
        )
    assert stored is not None
    assert stored == parse_time(listed[0]["last_used_at"])


async def test_a_read_answers_while_another_process_writes_and_the_key_is_touched_later(
    client: httpx.AsyncClient, factory: Factory, state: AppState, app_with: AppWith
) -> None:
    """Two processes on one database (two apps here). On SQLite a GET's transaction takes no
    write lock, so it cannot write the key's last-used time while the other process holds the
    lock: the read answers all the same, and the next request writes the time."""
    account = await factory.account()
    key = await factory.api_key(account)
    headers = {"X-API-Key": key["key"]}

    async def last_used() -> datetime | None:
        async with state.read_sessionmaker() as db:  # waits for no writer
            return await db.scalar(
                select(ApiKey.last_used_at).where(ApiKey.id == uuid.UUID(key["id"]))
            )

    async with app_with() as other, other.state.sessionmaker() as writing:
        # On SQLite: BEGIN IMMEDIATE, the file's write lock held until the rollback.
        await writing.execute(select(1))
        async with asyncio.timeout(10):
            answer = await client.get(f"{API}/sessions", headers=headers)
        held = await last_used()
        await writing.rollback()
    assert answer.status_code == 200, answer.text
    if state.engine.dialect.name == "postgresql":  # no lock to meet
        assert held is not None
        return
    assert held is None

    again = await client.get(f"{API}/sessions", headers=headers)
    assert again.status_code == 200, again.text
    touched = await last_used()
    assert touched is not None
    assert abs(datetime.now(UTC) - touched) < timedelta(seconds=30)


async def test_a_user_holds_at_most_max_api_keys_per_user(
    app_with: AppWith, state: AppState
) -> None:
    async with app_with(max_api_keys_per_user=3) as capped:
        client, factory = capped.client, capped.factory
        account = await factory.account()
        keys = [await factory.api_key(account, name=f"k{i}") for i in range(3)]

        refused = await client.post(KEYS, json={"name": "one more"}, headers=account.headers)
        body = assert_problem(refused, 409, "api_key_limit")
        assert body["limit"] == 3
        # Through a key too: the quota is the user's, whatever the credential.
        by_key = await client.post(KEYS, json={"name": "x"}, headers={"X-API-Key": keys[0]["key"]})
        assert_problem(by_key, 409, "api_key_limit")
        # Another user has a quota of their own.
        await factory.api_key(await factory.account())

        # A revoked key frees its place; so does an expired one.
        revoked = await client.delete(f"{KEYS}/{keys[1]['id']}", headers=account.headers)
        assert revoked.status_code == 204
        await factory.api_key(account, name="after a revocation")
        full = await client.post(KEYS, json={"name": "x"}, headers=account.headers)
        assert_problem(full, 409, "api_key_limit")
        async with state.sessionmaker() as db, db.begin():
            await db.execute(
                update(ApiKey)
                .where(ApiKey.id == uuid.UUID(keys[2]["id"]))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        await factory.api_key(account, name="after an expiry")
        listed = (await client.get(KEYS, headers=account.headers)).json()["data"]
        assert len(listed) == 4  # the expired key is still listed (and can be deleted)


async def test_a_revoked_key_ends_its_streams_within_the_credential_check_interval(
    app_with: AppWith, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open stream re-reads the store every STREAM_POLL_SECONDS but checks its key in the
    database at most every STREAM_CREDENTIAL_CHECK_SECONDS (the request that opened it counts
    as the first check): a revoked key ends it at most the two together after the revocation."""
    poll, check = 0.05, 0.5
    checks: list[float] = []
    still_valid = principal_service.still_valid

    async def counted(*args: Any) -> bool:
        checks.append(time.monotonic())
        return await still_valid(*args)

    monkeypatch.setattr(principal_service, "still_valid", counted)
    async with app_with(stream_poll_seconds=poll, stream_credential_check_seconds=check) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        key = await factory.api_key(account)
        session = await factory.chat_session(account)
        answer = await factory.message(account, session["id"], role="assistant", status="pending")
        url = f"{API}/sessions/{session['id']}/messages/{answer['id']}/stream"
        opened = time.monotonic()
        follower = asyncio.create_task(client.get(url, headers={"X-API-Key": key["key"]}))
        await asyncio.sleep(3 * check)  # about 30 re-reads

        assert not follower.done()
        assert 2 <= len(checks) <= 3, [round(at - opened, 2) for at in checks]
        gaps = [b - a for a, b in zip([opened, *checks], checks, strict=False)]
        assert min(gaps) >= check * 0.9, gaps
        revoked = await client.delete(f"{KEYS}/{key['id']}", headers=account.headers)
        assert revoked.status_code == 204
        revoked_at = time.monotonic()
        response = await asyncio.wait_for(follower, 5)
        ended_after = time.monotonic() - revoked_at

    assert events_of(response.text)[-1].event == "close"
    assert events_of(response.text)[-1].data == {"reason": "unauthorized"}
    assert ended_after < check + poll + 0.5, ended_after


async def _keep_busy(client: httpx.AsyncClient, account: Any, base: str, seconds: float) -> str:
    """Deltas into an open message every 0.1 s for `seconds`: its followers never fall quiet
    for a poll interval. Returns the text appended."""
    text, started = "", time.monotonic()
    while time.monotonic() - started < seconds:
        delta = f"after{len(text):05d} "
        appended = await client.post(
            f"{base}/append", json={"delta": delta, "offset": len(text)}, headers=account.headers
        )
        assert appended.status_code == 200, appended.text
        text += delta
        await asyncio.sleep(0.1)
    return text


async def test_a_revoked_key_ends_a_busy_stream_and_a_busy_feed(app_with: AppWith) -> None:
    """Each delta that arrives would postpone the stream's re-read by a poll interval: the
    credential is checked all the same, so a key revoked while the message keeps moving ends
    both a message stream and the session's feed within the two intervals."""
    poll, check = 0.3, 0.3
    async with app_with(stream_poll_seconds=poll, stream_credential_check_seconds=check) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        key = await factory.api_key(account)
        session = await factory.chat_session(account)
        answer = await factory.message(account, session["id"], role="assistant", status="pending")
        base = f"{API}/sessions/{session['id']}/messages/{answer['id']}"
        by_key = {"X-API-Key": key["key"]}
        follower = asyncio.create_task(client.get(f"{base}/stream", headers=by_key))
        feed = asyncio.create_task(
            client.get(f"{API}/sessions/{session['id']}/events", headers=by_key)
        )
        await asyncio.sleep(0.5)
        revoked = await client.delete(f"{KEYS}/{key['id']}", headers=account.headers)
        assert revoked.status_code == 204
        revoked_at = time.monotonic()
        appended = await _keep_busy(client, account, base, 3.0)
        streamed = await asyncio.wait_for(follower, 5)
        fed = await asyncio.wait_for(feed, 5)

    for response in (streamed, fed):
        assert events_of(response.text)[-1].data == {"reason": "unauthorized"}
    # Both ended well before the deltas did: at most check + poll after the revocation (plus
    # a delta's worth of slack), so they missed most of what was appended after it.
    received = "".join(
        event.data["delta"] for event in events_of(streamed.text) if event.event == "delta"
    )
    assert appended.startswith(received)
    assert len(received) < len(appended) / 3, (len(received), len(appended))
    deltas_fed = [event for event in events_of(fed.text) if event.event == "message.delta"]
    assert len(deltas_fed) < len(appended.split()) / 3
    assert time.monotonic() - revoked_at >= 3.0


async def test_an_expired_access_token_ends_its_stream(app_with: AppWith) -> None:
    """A stream opened with an access token ends once the token expires (a plain request with
    it is refused by then): the client logs in again or refreshes, and reconnects."""
    poll = check = 0.2
    async with app_with(stream_poll_seconds=poll, stream_credential_check_seconds=check) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        settings = custom.state.settings
        token, _ = create_access_token(
            uuid.UUID(account.user_id),
            settings.jwt_secret_value(),
            settings.jwt_algorithm,
            timedelta(seconds=2),
        )
        short_lived = {"Authorization": f"Bearer {token}"}
        session = await factory.chat_session(account)
        feed = asyncio.create_task(
            client.get(f"{API}/sessions/{session['id']}/events", headers=short_lived)
        )
        await asyncio.sleep(0.5)
        assert not feed.done()  # the token holds: the feed is open
        await factory.message(account, session["id"], content="while the token holds")
        response = await asyncio.wait_for(feed, 2 + check + poll + 2)
        refused = await client.get(f"{API}/sessions", headers=short_lived)

    assert_problem(refused, 401, "unauthorized")
    events = events_of(response.text)
    assert events[-1].event == "close"
    assert events[-1].data == {"reason": "unauthorized"}
    assert any("while the token holds" in str(event.data) for event in events)


async def test_the_client_follows_on_across_its_access_tokens_expiry(app_with: AppWith) -> None:
    """The stream a client opened with an access token ends when the token expires; the
    Python client reconnects, refreshes the token on the 401 and goes on from the offset it
    reached: the whole text, once."""
    poll = check = 0.2
    async with app_with(stream_poll_seconds=poll, stream_credential_check_seconds=check) as custom:
        factory = custom.factory
        account = await factory.account()
        settings = custom.state.settings
        short_lived, _ = create_access_token(
            uuid.UUID(account.user_id),
            settings.jwt_secret_value(),
            settings.jwt_algorithm,
            timedelta(seconds=1),
        )
        session = await factory.chat_session(account)
        answer = await factory.message(account, session["id"], role="assistant", status="pending")
        base = f"{API}/sessions/{session['id']}/messages/{answer['id']}"
        async with AsyncChatStoreClient(
            "http://test",
            transport=httpx.ASGITransport(custom.app),
            access_token=short_lived,
            refresh_token=account.refresh_token,
        ) as chat_store:

            async def follow() -> list[Any]:
                return [item async for item in chat_store.follow(session["id"], answer["id"])]

            follower = asyncio.create_task(follow())
            appended = await _keep_busy(custom.client, account, base, 3.5)
            completed = await custom.client.patch(
                base, json={"status": "complete"}, headers=account.headers
            )
            assert completed.status_code == 200, completed.text
            items = await asyncio.wait_for(follower, 10)
            assert chat_store.access_token != short_lived  # refreshed on the way

    deltas = [item for item in items if isinstance(item, StreamDelta)]
    assert "".join(delta.delta for delta in deltas) == appended
    assert isinstance(items[-1], StreamDone) and items[-1].status == "complete"


async def test_a_key_made_with_an_expiring_key_expires_no_later(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    soon = datetime.now(UTC) + timedelta(hours=1)
    short_lived = await factory.api_key(account, expires_at=soon.isoformat())
    by_it = {"X-API-Key": short_lived["key"]}

    inherited = await client.post(KEYS, json={"name": "made by CI"}, headers=by_it)
    earlier = await client.post(
        KEYS,
        json={"name": "earlier", "expires_at": (soon - timedelta(minutes=5)).isoformat()},
        headers=by_it,
    )
    later = await client.post(
        KEYS,
        json={"name": "later", "expires_at": (soon + timedelta(days=1)).isoformat()},
        headers=by_it,
    )
    by_login = await client.post(KEYS, json={"name": "no expiry"}, headers=account.headers)

    assert inherited.status_code == 201, inherited.text
    assert parse_time(inherited.json()["expires_at"]) == parse_time(short_lived["expires_at"])
    assert earlier.status_code == 201, earlier.text
    assert parse_time(earlier.json()["expires_at"]) < soon
    assert_validation_error(later, "body", "expires_at")
    # Made by a login, or by a key without expiry, a key need not expire.
    assert by_login.status_code == 201 and by_login.json()["expires_at"] is None
    forever = await factory.api_key(account, name="forever")
    made = await client.post(KEYS, json={"name": "x"}, headers={"X-API-Key": forever["key"]})
    assert made.status_code == 201 and made.json()["expires_at"] is None


async def test_a_key_deleted_while_its_principal_is_cached_makes_no_key(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """A key deleted by another worker (no revocation marker here) is still served from the
    credential cache for a few seconds; a key it then asks to make must not come out without
    the expiry it would have inherited: the request is refused as an unknown key's is, and
    nothing is stored."""
    account = await factory.account()
    soon = datetime.now(UTC) + timedelta(hours=1)
    short_lived = await factory.api_key(account, expires_at=soon.isoformat())
    by_it = {"X-API-Key": short_lived["key"]}
    # Verified in the database, and kept in the credential cache.
    assert (await client.get(f"{API}/sessions", headers=by_it)).status_code == 200
    async with state.sessionmaker() as db, db.begin():
        await db.execute(delete(ApiKey).where(ApiKey.id == uuid.UUID(short_lived["id"])))
    assert (await client.get(f"{API}/sessions", headers=by_it)).status_code == 200  # cached

    made = await client.post(KEYS, json={"name": "made by a deleted key"}, headers=by_it)

    assert_problem(made, 401, "unauthorized")
    async with state.sessionmaker() as db:
        stored = await db.scalars(
            select(ApiKey).where(ApiKey.user_id == uuid.UUID(account.user_id))
        )
        assert list(stored) == []
