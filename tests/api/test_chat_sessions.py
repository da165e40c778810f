"""Chat sessions: create (client ids, Idempotency-Key), read, update, the aliases, delete."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from chat_store.api.deps import AppState
from chat_store.ids import uuid7
from chat_store.models import ChatSession, IdempotencyKey
from chat_store.schemas.chat_sessions import ChatSessionCreate
from chat_store.services.idempotency import given_fields_fingerprint
from tests.assertions import assert_problem, assert_recent, assert_validation_error, parse_time
from tests.factories import API, Account, Factory
from tests.support.chat import events_of

SESSIONS = f"{API}/sessions"

SESSION_FIELDS = {
    "id",
    "object",
    "title",
    "is_favorite",
    "status",
    "metadata",
    "workspace",
    "system_prompt",
    "message_count",
    "total_tokens",
    "last_message_at",
    "created_at",
    "updated_at",
    "ended_at",
    "archived_at",
}


def one(session_id: str) -> str:
    return f"{SESSIONS}/{session_id}"


async def count_sessions(state: AppState, account: Account) -> int:
    async with state.sessionmaker() as db:
        stmt = (
            select(func.count())
            .select_from(ChatSession)
            .where(ChatSession.user_id == uuid.UUID(account.user_id))
        )
        return int((await db.execute(stmt)).scalar_one())


def every_route(session_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("POST", SESSIONS, {"title": "t"}),
        ("GET", SESSIONS, None),
        ("GET", one(session_id), None),
        ("PATCH", one(session_id), {"title": "t"}),
        ("PUT", one(session_id), {"title": "t"}),
        ("PATCH", f"{one(session_id)}/favorite", None),
        ("DELETE", one(session_id), None),
    ]


async def test_sessions_need_credentials(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="kept")

    for method, url, body in every_route(session["id"]):
        response = await client.request(method, url, json=body)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        bad_token = {"Authorization": "Bearer not-a-token"}
        assert_problem(
            await client.request(method, url, json=body, headers=bad_token), 401, "unauthorized"
        )

    assert (await client.get(one(session["id"]), headers=account.headers)).json()["title"] == "kept"
    assert await count_sessions(state, account) == 1


async def test_another_users_session_is_not_found(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.account()
    other = await factory.account()
    session = await factory.chat_session(owner, title="private")

    for method, url, body in every_route(session["id"])[2:]:
        response = await client.request(method, url, json=body, headers=other.headers)
        assert_problem(response, 404, "session_not_found")

    # The same answer as for an id that does not exist at all: ids cannot be probed.
    missing = await client.get(one(str(uuid7())), headers=other.headers)
    assert_problem(missing, 404, "session_not_found")
    assert (
        await client.get(one(session["id"]), headers=other.headers)
    ).json() == missing.json() | {"instance": one(session["id"])}
    # Nothing was changed or deleted by the other user.
    after = (await client.get(one(session["id"]), headers=owner.headers)).json()
    assert after == session
    assert (await client.get(SESSIONS, headers=other.headers)).json()["data"] == []


# --- create


async def test_create_a_session(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()

    response = await client.post(SESSIONS, json={}, headers=account.headers)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == SESSION_FIELDS
    assert uuid.UUID(body["id"]).version == 7
    assert body["object"] == "session"
    assert body["title"] is None
    assert body["is_favorite"] is False
    assert body["status"] == "active"
    assert body["metadata"] == {}
    assert body["workspace"] is None
    assert (body["message_count"], body["total_tokens"]) == (0, 0)
    assert body["last_message_at"] is None
    assert body["ended_at"] is None
    assert_recent(body["created_at"])
    assert body["updated_at"] == body["created_at"]
    assert (await client.get(one(body["id"]), headers=account.headers)).json() == body


async def test_create_stores_title_metadata_and_workspace(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    request = {
        "title": "Fix flaky test in billing ✓",
        "metadata": {"client": "cli/1.4", "tags": ["a", "b"], "nested": {"n": 1, "ok": True}},
        "workspace": {"repo": "github.com/acme/api", "branch": "main", "path": "/src/api"},
    }

    created = await client.post(SESSIONS, json=request, headers=account.headers)

    assert created.status_code == 201, created.text
    stored = (await client.get(one(created.json()["id"]), headers=account.headers)).json()
    assert stored["title"] == request["title"]
    assert stored["metadata"] == request["metadata"]
    assert stored["workspace"] == request["workspace"]


async def test_create_with_a_client_chosen_id(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    chosen = str(uuid.uuid4())

    created = await client.post(
        SESSIONS, json={"id": chosen, "title": "mine"}, headers=account.headers
    )

    assert created.status_code == 201, created.text
    assert created.json()["id"] == chosen
    assert (await client.get(one(chosen), headers=account.headers)).json()["title"] == "mine"


async def test_a_taken_id_is_a_conflict_for_everyone(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    owner = await factory.account()
    other = await factory.account()
    session = await factory.chat_session(owner, title="first")

    same_user = await client.post(
        SESSIONS, json={"id": session["id"], "title": "again"}, headers=owner.headers
    )
    other_user = await client.post(
        SESSIONS, json={"id": session["id"], "title": "stolen"}, headers=other.headers
    )

    assert_problem(same_user, 409, "session_exists")
    assert_problem(other_user, 409, "session_exists")
    assert (await client.get(one(session["id"]), headers=owner.headers)).json()["title"] == "first"
    assert await count_sessions(state, owner) == 1
    assert await count_sessions(state, other) == 0


# --- Idempotency-Key


async def test_a_retry_with_the_same_key_and_body_returns_the_first_answer(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    headers = {**account.headers, "Idempotency-Key": "create-1"}
    body = {"title": "once", "metadata": {"attempt": 1}}

    first = await client.post(SESSIONS, json=body, headers=headers)
    retry = await client.post(SESSIONS, json=body, headers=headers)

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert await count_sessions(state, account) == 1
    listed = (await client.get(SESSIONS, headers=account.headers)).json()["data"]
    assert [s["id"] for s in listed] == [first.json()["id"]]


async def test_a_retry_of_a_create_with_a_client_id_is_not_a_conflict(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    headers = {**account.headers, "Idempotency-Key": "with-id"}
    body = {"id": str(uuid7()), "title": "once"}

    first = await client.post(SESSIONS, json=body, headers=headers)
    retry = await client.post(SESSIONS, json=body, headers=headers)

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert await count_sessions(state, account) == 1


async def test_the_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    headers = {**account.headers, "Idempotency-Key": "create-2"}
    first = await client.post(SESSIONS, json={"title": "one"}, headers=headers)

    reused = await client.post(SESSIONS, json={"title": "two"}, headers=headers)

    assert first.status_code == 201
    assert_problem(reused, 409, "idempotency_key_reused")
    assert await count_sessions(state, account) == 1
    stored = (await client.get(one(first.json()["id"]), headers=account.headers)).json()
    assert stored["title"] == "one"


async def test_idempotency_keys_belong_to_their_user(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    ada = await factory.account()
    bob = await factory.account()

    for_ada = await client.post(
        SESSIONS, json={"title": "t"}, headers={**ada.headers, "Idempotency-Key": "shared"}
    )
    for_bob = await client.post(
        SESSIONS, json={"title": "t"}, headers={**bob.headers, "Idempotency-Key": "shared"}
    )

    assert for_ada.status_code == for_bob.status_code == 201
    assert for_ada.json()["id"] != for_bob.json()["id"]
    assert await count_sessions(state, ada) == 1
    assert await count_sessions(state, bob) == 1


async def test_without_a_key_every_create_is_a_new_session(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()

    first = await client.post(SESSIONS, json={"title": "t"}, headers=account.headers)
    second = await client.post(SESSIONS, json={"title": "t"}, headers=account.headers)

    assert first.json()["id"] != second.json()["id"]
    assert await count_sessions(state, account) == 2


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_idempotency_key_must_be_1_to_255_chars(
    client: httpx.AsyncClient, factory: Factory, state: AppState, key: str
) -> None:
    account = await factory.account()

    response = await client.post(
        SESSIONS, json={"title": "t"}, headers={**account.headers, "Idempotency-Key": key}
    )

    assert_validation_error(response, "header", "Idempotency-Key")
    assert await count_sessions(state, account) == 0


async def test_a_255_char_idempotency_key_is_kept(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    headers = {**account.headers, "Idempotency-Key": "k" * 255}

    first = await client.post(SESSIONS, json={"title": "t"}, headers=headers)
    retry = await client.post(SESSIONS, json={"title": "t"}, headers=headers)

    assert first.status_code == retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    async with state.sessionmaker() as db:
        keys = (await db.execute(select(IdempotencyKey.key))).scalars().all()
    assert keys == ["k" * 255]


# --- read, update


async def test_patch_changes_only_the_fields_given(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(
        account,
        title="before",
        metadata={"a": 1},
        workspace={"repo": "github.com/acme/api", "branch": "main"},
    )

    renamed = await client.patch(
        one(session["id"]), json={"title": "after"}, headers=account.headers
    )

    assert renamed.status_code == 200, renamed.text
    body = renamed.json()
    assert body["title"] == "after"
    assert body["metadata"] == {"a": 1}
    assert body["workspace"] == {"repo": "github.com/acme/api", "branch": "main", "path": None}
    assert parse_time(body["updated_at"]) > parse_time(session["updated_at"])
    assert body["created_at"] == session["created_at"]

    changed = await client.patch(
        one(session["id"]),
        json={
            "metadata": {"b": 2},
            "workspace": {"repo": "github.com/acme/web"},
            "is_favorite": True,
        },
        headers=account.headers,
    )

    assert changed.status_code == 200, changed.text
    stored = (await client.get(one(session["id"]), headers=account.headers)).json()
    assert stored == changed.json()
    assert stored["title"] == "after"
    assert stored["metadata"] == {"b": 2}  # replaced, not merged
    assert stored["workspace"] == {"repo": "github.com/acme/web", "branch": None, "path": None}
    assert stored["is_favorite"] is True


async def test_patch_with_null_clears_title_and_workspace(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="t", workspace={"repo": "r"})

    response = await client.patch(
        one(session["id"]), json={"title": None, "workspace": None}, headers=account.headers
    )

    assert response.status_code == 200, response.text
    stored = (await client.get(one(session["id"]), headers=account.headers)).json()
    assert (stored["title"], stored["workspace"]) == (None, None)


@pytest.mark.parametrize("field", ["is_favorite", "metadata", "status"])
async def test_patch_refuses_null_for_fields_that_cannot_be_empty(
    client: httpx.AsyncClient, factory: Factory, field: str
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="t", metadata={"k": "v"})

    response = await client.patch(one(session["id"]), json={field: None}, headers=account.headers)

    body = assert_validation_error(response, "body")
    assert field in body["detail"]
    assert (await client.get(one(session["id"]), headers=account.headers)).json() == session


async def test_ending_a_session_sets_ended_at(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)

    ended = await client.patch(
        one(session["id"]), json={"status": "ended"}, headers=account.headers
    )

    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "ended"
    ended_at = assert_recent(ended.json()["ended_at"])
    assert ended_at >= parse_time(session["created_at"])
    stored = (await client.get(one(session["id"]), headers=account.headers)).json()
    assert (stored["status"], stored["ended_at"]) == ("ended", ended.json()["ended_at"])

    # Ending it again keeps the first end; reopening clears it.
    again = await client.patch(
        one(session["id"]), json={"status": "ended"}, headers=account.headers
    )
    assert again.json()["ended_at"] == ended.json()["ended_at"]
    reopened = await client.patch(
        one(session["id"]), json={"status": "active"}, headers=account.headers
    )
    assert (reopened.json()["status"], reopened.json()["ended_at"]) == ("active", None)


async def test_patch_refuses_an_unknown_status(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)

    response = await client.patch(
        one(session["id"]), json={"status": "archived"}, headers=account.headers
    )

    assert_validation_error(response, "body", "status")


async def test_put_renames(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="old", metadata={"keep": True})
    await client.patch(f"{one(session['id'])}/favorite", headers=account.headers)

    response = await client.put(one(session["id"]), json={"title": "new"}, headers=account.headers)

    assert response.status_code == 200, response.text
    stored = (await client.get(one(session["id"]), headers=account.headers)).json()
    assert stored == response.json()
    assert stored["title"] == "new"
    assert stored["is_favorite"] is True
    assert stored["metadata"] == {"keep": True}
    # PUT is a rename only: the title is required, other fields are refused.
    assert_validation_error(
        await client.put(one(session["id"]), json={}, headers=account.headers), "body", "title"
    )
    assert_validation_error(
        await client.put(
            one(session["id"]), json={"title": "x", "is_favorite": False}, headers=account.headers
        ),
        "body",
        "is_favorite",
    )
    cleared = await client.put(one(session["id"]), json={"title": None}, headers=account.headers)
    assert cleared.json()["title"] is None


async def test_favorite_toggles_without_a_body(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{one(session['id'])}/favorite"

    first = await client.patch(url, headers=account.headers)
    second = await client.patch(url, headers=account.headers)
    with_empty_body = await client.patch(url, json={}, headers=account.headers)

    assert [r.status_code for r in (first, second, with_empty_body)] == [200, 200, 200]
    assert [r.json()["is_favorite"] for r in (first, second, with_empty_body)] == [
        True,
        False,
        True,
    ]
    assert (await client.get(one(session["id"]), headers=account.headers)).json()["is_favorite"]


async def test_favorite_sets_with_a_body(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{one(session['id'])}/favorite"

    values = []
    for wanted in (True, True, False, False):
        response = await client.patch(url, json={"is_favorite": wanted}, headers=account.headers)
        assert response.status_code == 200, response.text
        values.append(response.json()["is_favorite"])

    assert values == [True, True, False, False]
    assert (await client.get(one(session["id"]), headers=account.headers)).json()[
        "is_favorite"
    ] is False
    assert_validation_error(
        await client.patch(url, json={"is_favorite": "perhaps"}, headers=account.headers),
        "body",
        "is_favorite",
    )
    # null is no flag's value (it toggled the flag): leaving it out toggles.
    assert_validation_error(
        await client.patch(url, json={"is_favorite": None}, headers=account.headers),
        "body",
        "is_favorite",
    )
    assert (await client.get(one(session["id"]), headers=account.headers)).json()[
        "is_favorite"
    ] is False


# --- delete


async def test_delete_a_session(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, title="doomed")
    kept = await factory.chat_session(account, title="kept")

    response = await client.delete(one(session["id"]), headers=account.headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"id": session["id"], "object": "session.deleted", "deleted": True}
    assert_problem(
        await client.get(one(session["id"]), headers=account.headers), 404, "session_not_found"
    )
    assert_problem(
        await client.delete(one(session["id"]), headers=account.headers), 404, "session_not_found"
    )
    listed = (await client.get(SESSIONS, headers=account.headers)).json()["data"]
    assert [s["id"] for s in listed] == [kept["id"]]
    assert await count_sessions(state, account) == 1


async def test_a_retry_that_spells_out_defaults_is_the_same_request(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """A field left out and the same field given its default create the same thing: a client
    whose retry path writes nulls and defaults out got 409 idempotency_key_reused."""
    account = await factory.account()
    headers = {**account.headers, "Idempotency-Key": "defaults-1"}
    first = await client.post(SESSIONS, json={}, headers=headers)
    retry = await client.post(SESSIONS, json={"title": None, "metadata": {}}, headers=headers)
    assert first.status_code == 201, first.text
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert await count_sessions(state, account) == 1

    url = f"{one(first.json()['id'])}/messages"
    headers = {**account.headers, "Idempotency-Key": "defaults-2"}
    appended = await client.post(url, json={"role": "user", "content": "hi"}, headers=headers)
    again = await client.post(
        url, json={"role": "user", "content": "hi", "status": "complete"}, headers=headers
    )
    assert appended.status_code == 201, appended.text
    assert (again.status_code, again.json()) == (201, appended.json())
    other = await client.post(
        url, json={"role": "user", "content": "hi", "model": "m"}, headers=headers
    )
    assert_problem(other, 409, "idempotency_key_reused")


async def test_a_key_stored_with_the_fingerprint_of_the_given_fields_still_replays(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    """Keys stored before every field was in the fingerprint (of the given fields only) are
    matched by their retry until they expire."""
    account = await factory.account()
    headers = {**account.headers, "Idempotency-Key": "before-the-change"}
    first = await client.post(SESSIONS, json={"title": "kept"}, headers=headers)
    assert first.status_code == 201, first.text
    earlier = given_fields_fingerprint(
        "create_chat_session", "", ChatSessionCreate.model_validate({"title": "kept"})
    )
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "before-the-change")
            .values(request_hash=earlier)
        )

    retry = await client.post(SESSIONS, json={"title": "kept"}, headers=headers)

    assert (retry.status_code, retry.json()) == (201, first.json())
    assert await count_sessions(state, account) == 1


async def test_deleting_a_session_ends_its_streams_at_once(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """Its feed and the streams of its open messages end when the deletion is committed, not
    at their next poll of the store (STREAM_POLL_SECONDS, 5 s by default)."""
    account = await factory.account()
    session = await factory.chat_session(account)
    answer = await factory.message(account, session["id"], role="assistant", status="pending")
    base = f"{API}/sessions/{session['id']}"
    feed = asyncio.create_task(client.get(f"{base}/events", headers=account.headers))
    stream = asyncio.create_task(
        client.get(f"{base}/messages/{answer['id']}/stream", headers=account.headers)
    )
    await asyncio.sleep(0.5)  # both followed, past their first read
    assert (await client.delete(base, headers=account.headers)).status_code == 200

    fed = await asyncio.wait_for(feed, 2)
    streamed = await asyncio.wait_for(stream, 2)
    assert events_of(fed.text)[-1].event == "session.deleted"
    assert events_of(streamed.text)[-1].event == "done"
    assert events_of(streamed.text)[-1].data["status"] == "deleted"
