"""Hostile input: deep nesting, dates at the ends of the range, huge integers, reordered keys.

Each is refused with a 422 that says where (or, for reordered keys, accepted as the same
request), and a write that is refused changes nothing in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from chat_store.api.deps import AppState
from chat_store.crud import archive as archive_crud
from chat_store.models import Generation
from chat_store.services import archive as archive_service
from chat_store.services.archive import Archiver
from tests.assertions import assert_problem, assert_validation_error
from tests.backends import Backend
from tests.conftest import AppWith, make_settings
from tests.factories import API, Account, Factory
from tests.support.db_snapshot import assert_unchanged, take_snapshot

SESSIONS = f"{API}/sessions"
JSON = {"Content-Type": "application/json"}
DEFAULT_DEPTH = 32
_MESSAGE = {"role": "user", "content": "hi"}


def nested(depth: int) -> str:
    """A JSON object nested `depth` levels deep (the outer object is level 1), as raw text:
    Python's own JSON encoder gives up long before the server's parser does."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def body_with(template: dict[str, Any], **raw_fields: str) -> bytes:
    """`template` as JSON with each of `raw_fields` put in as raw JSON text."""
    text = json.dumps({**template, **{name: f"@{name}@" for name in raw_fields}})
    for name, raw in raw_fields.items():
        text = text.replace(f'"@{name}@"', raw)
    return text.encode()


def batch_with(raw_message: bytes) -> bytes:
    """A batch of two messages, a valid one and then `raw_message`."""
    return b'{"messages": [' + json.dumps(_MESSAGE).encode() + b", " + raw_message + b"]}"


async def first_event(app: FastAPI, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """The status and the first event of a streamed answer, over raw ASGI: httpx's ASGI
    transport waits for the whole body, and an event stream has no end."""
    received = asyncio.Event()
    status = 0
    body = b""
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await received.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")
            if b"\n\n" in body or b"\r\n\r\n" in body or not message.get("more_body"):
                received.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    task = asyncio.create_task(app(scope, receive, send))
    try:
        await asyncio.wait_for(received.wait(), timeout=10)
    finally:
        received.set()  # receive() now answers that the client is gone
        # A 500 is raised again after it was sent (as servers expect): its status says enough.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
    return status, body


async def assert_reads_work(
    client: httpx.AsyncClient, app: FastAPI, account: Account, session_id: str
) -> None:
    """Every read of the account's sessions and messages answers 200."""
    headers = account.headers
    session = f"{SESSIONS}/{session_id}"
    for url in (
        SESSIONS,
        session,
        f"{session}/messages",
        f"{session}/messages?order=desc",
        f"{session}/context?max_tokens=1000",
    ):
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.text)
    status, event = await first_event(app, f"{session}/events", headers)
    assert status == 200, event
    assert event.startswith((b"event:", b"id:", b":")), event


# --- nesting


@dataclass(frozen=True)
class JsonField:
    """A JSON field of a request body: where it is sent, and where a refusal points."""

    name: str
    method: str
    path: str  # {session}, {message} are filled in
    template: dict[str, Any]
    field: str  # the field of `template` the nested value goes in
    loc: tuple[str | int, ...]
    headers: dict[str, str] | None = None


JSON_FIELDS = [
    JsonField("session-create", "POST", SESSIONS, {}, "metadata", ("body", "metadata")),
    JsonField(
        "session-create-idempotent",
        "POST",
        SESSIONS,
        {},
        "metadata",
        ("body", "metadata"),
        {"Idempotency-Key": "nested-1"},
    ),
    JsonField(
        "session-update", "PATCH", f"{SESSIONS}/{{session}}", {}, "metadata", ("body", "metadata")
    ),
    JsonField(
        "message-metadata",
        "POST",
        f"{SESSIONS}/{{session}}/messages",
        _MESSAGE,
        "metadata",
        ("body", "metadata"),
    ),
    JsonField(
        "message-context",
        "POST",
        f"{SESSIONS}/{{session}}/messages",
        _MESSAGE,
        "context",
        ("body", "context"),
    ),
    JsonField(
        "message-context-idempotent",
        "POST",
        f"{SESSIONS}/{{session}}/messages",
        _MESSAGE,
        "context",
        ("body", "context"),
        {"Idempotency-Key": "nested-2"},
    ),
    JsonField(
        "message-update",
        "PATCH",
        f"{SESSIONS}/{{session}}/messages/{{message}}",
        {},
        "metadata",
        ("body", "metadata"),
    ),
]
# A batch is its messages: the nested one is the second, so the first alone would be valid.
BATCH_FIELDS = [
    JsonField(
        f"batch-{name}",
        "POST",
        f"{SESSIONS}/{{session}}/messages/batch",
        {},
        name,
        ("body", "messages", 1, name),
    )
    for name in ("metadata", "context")
]


async def _send_nested(
    client: httpx.AsyncClient,
    account: Account,
    target: JsonField,
    session: str,
    message: str,
    depth: int,
) -> httpx.Response:
    url = target.path.format(session=session, message=message)
    if target.name.startswith("batch-"):
        raw = batch_with(body_with(_MESSAGE, **{target.field: nested(depth)}))
    else:
        raw = body_with(target.template, **{target.field: nested(depth)})
    headers = {**account.headers, **JSON, **(target.headers or {})}
    return await client.request(target.method, url, content=raw, headers=headers)


@pytest.mark.parametrize("depth", [DEFAULT_DEPTH + 1, 300, 800])
@pytest.mark.parametrize("target", JSON_FIELDS + BATCH_FIELDS, ids=lambda t: t.name)
async def test_json_nested_beyond_the_limit_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
    app: FastAPI,
    state: AppState,
    factory: Factory,
    target: JsonField,
    depth: int,
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account, metadata={"kept": True})
    message = await factory.message(account, session["id"], metadata={"kept": True})
    before = await take_snapshot(state.sessionmaker)

    response = await _send_nested(client, account, target, session["id"], message["id"], depth)

    body = assert_validation_error(response, *target.loc)
    assert f"nested deeper than {DEFAULT_DEPTH} levels" in body["detail"], body
    assert_unchanged(before, await take_snapshot(state.sessionmaker), "the refused request")
    await assert_reads_work(client, app, account, session["id"])


@pytest.mark.parametrize("target", JSON_FIELDS + BATCH_FIELDS, ids=lambda t: t.name)
async def test_json_nested_up_to_the_limit_is_stored_and_read_back(
    client: httpx.AsyncClient,
    app: FastAPI,
    factory: Factory,
    target: JsonField,
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    message = await factory.message(account, session["id"])

    response = await _send_nested(
        client, account, target, session["id"], message["id"], DEFAULT_DEPTH
    )

    assert response.status_code in (200, 201), response.text
    stored = json.loads(nested(DEFAULT_DEPTH))
    answer = response.json()
    item = answer["data"][1] if target.name.startswith("batch-") else answer
    assert item[target.field] == stored
    await assert_reads_work(client, app, account, session["id"])


@pytest.mark.parametrize("depth", [256, 500, 800])
async def test_reads_keep_working_after_deeply_nested_creates_without_a_key(
    client: httpx.AsyncClient, app: FastAPI, state: AppState, factory: Factory, depth: int
) -> None:
    """The creates that run in autocommit (no Idempotency-Key) stored the row and then failed
    to answer it: every read of the user's sessions was a 500 from then on. (800 levels: in
    process the parser shares its stack with the test, and gives up a little short of 1000.)"""
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"])
    before = await take_snapshot(state.sessionmaker)
    headers = {**account.headers, **JSON}

    created = await client.post(
        SESSIONS, content=body_with({}, metadata=nested(depth)), headers=headers
    )
    appended = await client.post(
        f"{SESSIONS}/{session['id']}/messages",
        content=body_with(_MESSAGE, context=nested(depth)),
        headers=headers,
    )

    assert_validation_error(created, "body", "metadata")
    assert_validation_error(appended, "body", "context")
    assert_unchanged(before, await take_snapshot(state.sessionmaker), "the refused request")
    await assert_reads_work(client, app, account, session["id"])


async def test_nesting_is_counted_in_arrays_too(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    deep_list = "[" * DEFAULT_DEPTH + "]" * DEFAULT_DEPTH  # the metadata object is one more

    response = await client.post(
        SESSIONS,
        content=body_with({}, metadata=f'{{"list": {deep_list}}}'),
        headers={**account.headers, **JSON},
    )

    assert_validation_error(response, "body", "metadata")


async def test_the_nesting_limit_is_a_setting(app_with: AppWith) -> None:
    async with app_with(max_json_depth=3) as limited:
        client = limited.client
        account = await limited.factory.account()
        headers = {**account.headers, **JSON}
        fits = await client.post(
            SESSIONS, content=body_with({}, metadata=nested(3)), headers=headers
        )
        assert fits.status_code == 201, fits.text
        over = await client.post(
            SESSIONS, content=body_with({}, metadata=nested(4)), headers=headers
        )
        body = assert_validation_error(over, "body", "metadata")
        assert "nested deeper than 3 levels" in body["detail"]


@pytest.mark.parametrize("depth", [0, 129])
def test_the_nesting_limit_stays_within_what_can_be_answered(backend: Backend, depth: int) -> None:
    with pytest.raises(ValidationError, match="max_json_depth"):
        make_settings(backend, max_json_depth=depth)


# --- dates at the ends of the range

# Valid RFC 3339 times whose UTC equivalent falls outside the years 1 to 9999.
OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_a_date_filter_beyond_the_range_is_refused(
    client: httpx.AsyncClient, factory: Factory, value: str
) -> None:
    account = await factory.account()

    response = await client.get(SESSIONS, params={"updated_after": value}, headers=account.headers)

    body = assert_validation_error(response, "query", "updated_after")
    assert "out of range" in body["detail"]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_an_api_key_expiry_beyond_the_range_is_refused(
    client: httpx.AsyncClient, state: AppState, factory: Factory, value: str
) -> None:
    account = await factory.account()
    before = await take_snapshot(state.sessionmaker)

    response = await client.post(
        f"{API}/api-keys", json={"name": "far", "expires_at": value}, headers=account.headers
    )

    body = assert_validation_error(response, "body", "expires_at")
    assert "out of range" in body["detail"]
    assert_unchanged(before, await take_snapshot(state.sessionmaker), "the refused request")


async def test_dates_at_the_ends_of_the_range_in_utc_are_taken(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    await factory.chat_session(account)

    for value in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00-14:00"):
        listed = await client.get(
            SESSIONS, params={"updated_after": value}, headers=account.headers
        )
        assert listed.status_code == 200, listed.text
        assert len(listed.json()["data"]) == 1
    listed = await client.get(
        SESSIONS, params={"updated_after": "9999-12-31T23:59:59Z"}, headers=account.headers
    )
    assert listed.status_code == 200 and listed.json()["data"] == []
    key = await factory.api_key(account, expires_at="9999-12-31T09:59:59+14:00")
    assert key["expires_at"] == "9999-12-30T19:59:59Z"


# --- integers beyond what Python converts


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", SESSIONS), ("PATCH", f"{SESSIONS}/{{session}}")],
    ids=["direct-path", "fastapi-path"],
)
async def test_an_integer_of_5000_digits_is_malformed_json(
    client: httpx.AsyncClient, state: AppState, factory: Factory, method: str, path: str
) -> None:
    """Python refuses to convert integers of more than 4300 digits (a denial-of-service
    guard); to a client that is a body that cannot be read, like any malformed JSON."""
    account = await factory.account()
    session = await factory.chat_session(account)
    before = await take_snapshot(state.sessionmaker)

    response = await client.request(
        method,
        path.format(session=session["id"]),
        content=body_with({}, metadata=f'{{"n": {"7" * 5000}}}'),
        headers={**account.headers, **JSON},
    )

    body = assert_validation_error(response, "body")
    assert body["detail"] == "The request body is not valid JSON"
    assert body["errors"] == [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
    assert_unchanged(before, await take_snapshot(state.sessionmaker), "the refused request")


# --- idempotent retries with keys in another order


async def test_a_retry_with_reordered_keys_is_the_same_request(
    client: httpx.AsyncClient, state: AppState, factory: Factory
) -> None:
    account = await factory.account()
    headers = {**account.headers, "Idempotency-Key": "reordered-1"}
    first = {"title": "t", "metadata": {"a": 1, "b": {"x": [1, {"p": 1, "q": 2}], "y": 2}}}
    again = {"metadata": {"b": {"y": 2, "x": [1, {"q": 2, "p": 1}]}, "a": 1}, "title": "t"}

    created = await client.post(SESSIONS, json=first, headers=headers)
    retried = await client.post(SESSIONS, json=again, headers=headers)

    assert created.status_code == 201, created.text
    assert retried.status_code == 201, retried.text
    assert retried.json() == created.json()
    listed = await client.get(SESSIONS, headers=account.headers)
    assert [s["id"] for s in listed.json()["data"]] == [created.json()["id"]]

    # A message too, its context nested the same way.
    url = f"{SESSIONS}/{created.json()['id']}/messages"
    headers = {**account.headers, "Idempotency-Key": "reordered-2"}
    message = {"role": "user", "content": "hi", "context": {"d": [{"id": 1, "s": 0.5}], "r": "x"}}
    message_again = {
        "context": {"r": "x", "d": [{"s": 0.5, "id": 1}]},
        "content": "hi",
        "role": "user",
    }
    appended = await client.post(url, json=message, headers=headers)
    appended_again = await client.post(url, json=message_again, headers=headers)
    assert appended.status_code == 201, appended.text
    assert appended_again.json() == appended.json()


async def test_a_retry_with_a_different_nested_value_is_still_a_conflict(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    headers = {**account.headers, "Idempotency-Key": "reordered-3"}

    created = await client.post(
        SESSIONS, json={"metadata": {"a": 1, "b": {"c": 2}}}, headers=headers
    )
    changed = await client.post(
        SESSIONS, json={"metadata": {"b": {"c": 3}, "a": 1}}, headers=headers
    )
    listed_order = await client.post(
        SESSIONS, json={"metadata": {"a": 1, "b": {"c": [2]}}}, headers=headers
    )

    assert created.status_code == 201, created.text
    assert_problem(changed, 409, "idempotency_key_reused")
    assert_problem(listed_order, 409, "idempotency_key_reused")


# --- a refused write changes nothing, on every write route


@dataclass
class World:
    """One user's data (a session with messages, an open stream, an API key, a login) and
    another user's, for requests to refuse."""

    account: Account
    session_id: str
    quiet_session_id: str  # no open message: nothing to resume
    message_id: str
    open_message_id: str
    quiet_message_id: str  # in quiet_session
    key_id: str
    other: Account
    other_session_id: str
    other_answer_id: str  # an open answer in other_session
    other_key_id: str


async def build_world(factory: Factory) -> World:
    account = await factory.account()
    other = await factory.account()
    session = await factory.chat_session(account, title="kept", metadata={"k": 1})
    quiet = await factory.chat_session(account, title="quiet")
    message = await factory.message(account, session["id"], metadata={"k": 1})
    open_message = await factory.message(
        account, session["id"], role="assistant", status="in_progress", partial_content="Par"
    )
    quiet_message = await factory.message(account, quiet["id"])
    key = await factory.api_key(account)
    other_session = await factory.chat_session(other)
    other_answer = await factory.message(
        other, other_session["id"], role="assistant", status="in_progress", partial_content="Mi"
    )
    other_key = await factory.api_key(other)
    return World(
        account=account,
        session_id=session["id"],
        quiet_session_id=quiet["id"],
        message_id=message["id"],
        open_message_id=open_message["id"],
        quiet_message_id=quiet_message["id"],
        key_id=key["id"],
        other=other,
        other_session_id=other_session["id"],
        other_answer_id=other_answer["id"],
        other_key_id=other_key["id"],
    )


@dataclass(frozen=True)
class Refusal:
    """A request to `method` `route` (as the OpenAPI document names it) that is refused;
    `prepare` puts the world in the state the request meets, before the snapshot."""

    method: str
    route: str
    status: int
    code: str
    send: Callable[[httpx.AsyncClient, World], Awaitable[httpx.Response]]
    why: str
    prepare: Callable[[httpx.AsyncClient, AppState, World], Awaitable[None]] | None = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.route} {self.why}"


def _json(
    method: str, url: Callable[[World], str], body: Callable[[World], bytes], **headers: str
) -> Callable[[httpx.AsyncClient, World], Awaitable[httpx.Response]]:
    async def send(client: httpx.AsyncClient, world: World) -> httpx.Response:
        return await client.request(
            method,
            url(world),
            content=body(world),
            headers={**world.account.headers, **JSON, **headers},
        )

    return send


def _call(
    method: str,
    url: Callable[[World], str],
    headers: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
) -> Callable[[httpx.AsyncClient, World], Awaitable[httpx.Response]]:
    async def send(client: httpx.AsyncClient, world: World) -> httpx.Response:
        sent = world.account.headers if headers is None else headers
        return await client.request(method, url(world), headers=sent, data=data)

    return send


def _session(world: World) -> str:
    return f"{SESSIONS}/{world.session_id}"


def _message(world: World) -> str:
    return f"{SESSIONS}/{world.session_id}/messages/{world.message_id}"


async def _archive(state: AppState, session_id: str) -> str:
    """Archive the session now (as the job would once it is idle); its object's key."""
    archiver = Archiver(state.sessionmaker, state.archive)
    soon = datetime.now(UTC) + timedelta(minutes=1)  # every session is idle since before then
    assert await archive_service.archive_session(archiver, uuid.UUID(session_id), soon)
    async with state.sessionmaker() as db:
        row = await archive_crud.get_session(db, uuid.UUID(session_id))
    assert row is not None and row.archive_key is not None
    return row.archive_key


async def _archive_others(client: httpx.AsyncClient, state: AppState, world: World) -> None:
    await _archive(state, world.other_session_id)


async def _archive_quiet_and_lose_its_object(
    client: httpx.AsyncClient, state: AppState, world: World
) -> None:
    key = await _archive(state, world.quiet_session_id)
    await state.archive.delete(key)


async def _generate_others_answer(client: httpx.AsyncClient, state: AppState, world: World) -> None:
    """The other user's open answer held by a live generation (of some other process)."""
    now = datetime.now(UTC)
    async with state.sessionmaker() as db, db.begin():
        db.add(
            Generation(
                message_id=uuid.UUID(world.other_answer_id),
                session_id=uuid.UUID(world.other_session_id),
                user_id=uuid.UUID(world.other.user_id),
                owner="elsewhere:1:abcd",
                lease_expires_at=now + timedelta(hours=1),
                attempt=1,
                params={"model": "test"},
                created_at=now,
                updated_at=now,
            )
        )


async def _import_once(client: httpx.AsyncClient, state: AppState, world: World) -> None:
    response = await client.post(
        f"{SESSIONS}/import",
        json={"messages": [_MESSAGE]},
        headers={**world.account.headers, "Idempotency-Key": "refused-import"},
    )
    assert response.status_code == 201, response.text


DEEP = nested(300)
S = f"{SESSIONS}/{{session_id}}"
M = f"{S}/messages"
# The app of these tests has no model provider: a turn or a continue that passes validation is
# a 503 generation_unavailable, which must store neither message (nor the Idempotency-Key).
TURN = json.dumps({"content": "Why does it fail?", "stream": False}).encode()

REFUSALS = [
    Refusal(
        "POST",
        SESSIONS,
        422,
        "validation_error",
        _json("POST", lambda w: SESSIONS, lambda w: body_with({"title": "new"}, metadata=DEEP)),
        "nested metadata",
    ),
    Refusal(
        "POST",
        SESSIONS,
        409,
        "session_exists",
        _json(
            "POST", lambda w: SESSIONS, lambda w: json.dumps({"id": w.other_session_id}).encode()
        ),
        "id taken",
    ),
    Refusal(
        "PATCH",
        S,
        422,
        "validation_error",
        _json("PATCH", _session, lambda w: body_with({"title": "changed"}, metadata=DEEP)),
        "nested metadata",
    ),
    Refusal(
        "PATCH",
        S,
        404,
        "session_not_found",
        _json(
            "PATCH",
            lambda w: f"{SESSIONS}/{w.other_session_id}",
            lambda w: b'{"title": "changed", "metadata": {"x": 1}}',
        ),
        "another user's session",
    ),
    Refusal(
        "PUT",
        S,
        422,
        "validation_error",
        _json("PUT", _session, lambda w: json.dumps({"title": "x" * 201}).encode()),
        "title too long",
    ),
    Refusal(
        "DELETE",
        S,
        404,
        "session_not_found",
        _call("DELETE", lambda w: f"{SESSIONS}/{w.other_session_id}"),
        "another user's session",
    ),
    Refusal(
        "PATCH",
        f"{S}/favorite",
        422,
        "validation_error",
        _json("PATCH", lambda w: f"{_session(w)}/favorite", lambda w: b'{"is_favorite": "maybe"}'),
        "not a boolean",
    ),
    Refusal(
        "POST",
        M,
        422,
        "validation_error",
        _json(
            "POST", lambda w: f"{_session(w)}/messages", lambda w: body_with(_MESSAGE, context=DEEP)
        ),
        "nested context",
    ),
    Refusal(
        "POST",
        M,
        409,
        "seq_conflict",
        _json(
            "POST",
            lambda w: f"{_session(w)}/messages",
            lambda w: json.dumps({**_MESSAGE, "expected_last_seq": 0}).encode(),
        ),
        "stale expected_last_seq",
    ),
    Refusal(
        "POST",
        M,
        409,
        "message_exists",
        _json(
            "POST",
            lambda w: f"{_session(w)}/messages",
            lambda w: json.dumps({**_MESSAGE, "id": w.quiet_message_id}).encode(),
        ),
        "id taken",
    ),
    Refusal(
        "POST",
        f"{M}/batch",
        409,
        "message_exists",
        _json(
            "POST",
            lambda w: f"{_session(w)}/messages/batch",
            lambda w: json.dumps(
                {"messages": [_MESSAGE, {**_MESSAGE, "id": w.quiet_message_id}]}
            ).encode(),
        ),
        "the second message's id taken",
    ),
    Refusal(
        "POST",
        f"{M}/batch",
        422,
        "validation_error",
        _json(
            "POST",
            lambda w: f"{_session(w)}/messages/batch",
            lambda w: batch_with(body_with(_MESSAGE, metadata=DEEP)),
            **{"Idempotency-Key": "refused-batch"},
        ),
        "nested metadata in the second message",
    ),
    Refusal(
        "POST",
        f"{M}/batch",
        409,
        "seq_conflict",
        _json(
            "POST",
            lambda w: f"{_session(w)}/messages/batch",
            lambda w: json.dumps(
                {"messages": [_MESSAGE, _MESSAGE], "expected_last_seq": 0}
            ).encode(),
        ),
        "stale expected_last_seq",
    ),
    Refusal(
        "PATCH",
        f"{M}/{{message_id}}",
        422,
        "validation_error",
        _json("PATCH", _message, lambda w: body_with({"token_count": 5}, metadata=DEEP)),
        "nested metadata",
    ),
    Refusal(
        "PATCH",
        f"{M}/{{message_id}}",
        409,
        "invalid_transition",
        _json("PATCH", _message, lambda w: b'{"status": "in_progress", "metadata": {"x": 1}}'),
        "a complete message reopened",
    ),
    Refusal(
        "DELETE",
        f"{M}/{{message_id}}",
        404,
        "message_not_found",
        _call("DELETE", lambda w: f"{_session(w)}/messages/{w.quiet_message_id}"),
        "a message of another session",
    ),
    Refusal(
        "POST",
        f"{M}/{{message_id}}/append",
        409,
        "offset_mismatch",
        _json(
            "POST",
            lambda w: f"{_session(w)}/messages/{w.open_message_id}/append",
            lambda w: b'{"delta": "tial", "offset": 99}',
        ),
        "wrong offset",
    ),
    Refusal(
        "POST",
        f"{M}/{{message_id}}/append",
        409,
        "invalid_transition",
        _json(
            "POST",
            lambda w: f"{_session(w)}/messages/{w.message_id}/append",
            lambda w: b'{"delta": "more", "offset": 0}',
        ),
        "a complete message",
    ),
    Refusal(
        "POST",
        f"{S}/resume",
        404,
        "nothing_to_resume",
        _call("POST", lambda w: f"{SESSIONS}/{w.quiet_session_id}/resume"),
        "nothing open",
    ),
    Refusal(
        "POST",
        f"{S}/fork",
        404,
        "message_not_found",
        _json(
            "POST",
            lambda w: f"{_session(w)}/fork",
            lambda w: json.dumps({"message_id": w.quiet_message_id}).encode(),
            **{"Idempotency-Key": "refused-fork"},
        ),
        "a message of another session",
    ),
    Refusal(
        "DELETE",
        f"{API}/users/me",
        401,
        "unauthorized",
        _call("DELETE", lambda w: f"{API}/users/me", headers={"Authorization": "Bearer nope"}),
        "bad token",
    ),
    Refusal(
        "PATCH",
        f"{API}/users/me",
        422,
        "validation_error",
        _json(
            "PATCH",
            lambda w: f"{API}/users/me",
            lambda w: (
                b'{"display_name": "changed", "password": "new-password-1", '
                b'"current_password": "not-the-password"}'
            ),
        ),
        "wrong current password",
    ),
    Refusal(
        "POST",
        f"{API}/api-keys",
        422,
        "validation_error",
        _json(
            "POST",
            lambda w: f"{API}/api-keys",
            lambda w: json.dumps({"name": "k", "expires_at": OUT_OF_RANGE[1]}).encode(),
        ),
        "expiry out of range",
    ),
    Refusal(
        "DELETE",
        f"{API}/api-keys/{{key_id}}",
        404,
        "not_found",
        _call("DELETE", lambda w: f"{API}/api-keys/{w.other_key_id}"),
        "another user's key",
    ),
    Refusal(
        "POST",
        f"{API}/auth/register",
        409,
        "email_taken",
        _json(
            "POST",
            lambda w: f"{API}/auth/register",
            lambda w: json.dumps({"email": w.other.email, "password": "pw-long-enough"}).encode(),
        ),
        "email taken",
    ),
    Refusal(
        "POST",
        f"{API}/auth/token",
        401,
        "unauthorized",
        _call(
            "POST",
            lambda w: f"{API}/auth/token",
            data={"username": "user-x@example.com", "password": "wrong-password"},
            headers={},
        ),
        "wrong password",
    ),
    Refusal(
        "POST",
        f"{API}/auth/refresh",
        401,
        "unauthorized",
        _json("POST", lambda w: f"{API}/auth/refresh", lambda w: b'{"refresh_token": "nope"}'),
        "unknown token",
    ),
    Refusal(
        "POST",
        f"{API}/auth/claim",
        404,
        "not_found",
        _json(
            "POST",
            lambda w: f"{API}/auth/claim",
            lambda w: json.dumps({"client_id": str(uuid.uuid4())}).encode(),
        ),
        "no such guest",
    ),
    Refusal(
        "POST",
        f"{API}/auth/logout",
        422,
        "validation_error",
        _json("POST", lambda w: f"{API}/auth/logout", lambda w: b'{"refresh_token": ""}'),
        "empty token",
    ),
    Refusal(
        "POST",
        f"{S}/chat",
        503,
        "generation_unavailable",
        _json("POST", lambda w: f"{_session(w)}/chat", lambda w: TURN),
        "no model provider",
    ),
    Refusal(
        "POST",
        f"{S}/chat",
        503,
        "generation_unavailable",
        _json(
            "POST",
            lambda w: f"{_session(w)}/chat",
            lambda w: b'{"content": "Why?"}',
            **{"Idempotency-Key": "refused-turn"},
        ),
        "no model provider, streamed, with a key",
    ),
    Refusal(
        "POST",
        f"{S}/chat",
        422,
        "validation_error",
        _json("POST", lambda w: f"{_session(w)}/chat", lambda w: body_with(_MESSAGE, context=DEEP)),
        "nested context",
    ),
    Refusal(
        "POST",
        f"{M}/{{message_id}}/continue",
        503,
        "generation_unavailable",
        _call("POST", lambda w: f"{_session(w)}/messages/{w.open_message_id}/continue"),
        "no model provider",
    ),
    Refusal(
        "POST",
        f"{M}/{{message_id}}/continue",
        422,
        "validation_error",
        _call("POST", lambda w: f"{_session(w)}/messages/not-an-id/continue"),
        "not a message id",
    ),
    Refusal(
        "POST",
        f"{M}/{{message_id}}/cancel",
        409,
        "invalid_transition",
        _call("POST", lambda w: f"{_message(w)}/cancel"),
        "a user message",
    ),
    Refusal(
        "POST",
        f"{M}/{{message_id}}/cancel",
        404,
        "session_not_found",
        _call(
            "POST",
            lambda w: f"{SESSIONS}/{w.other_session_id}/messages/{w.other_answer_id}/cancel",
        ),
        "another user's answer being generated",
        _generate_others_answer,
    ),
    Refusal(
        "POST",
        f"{SESSIONS}/import",
        422,
        "validation_error",
        _json(
            "POST",
            lambda w: f"{SESSIONS}/import",
            lambda w: (
                b'{"messages": ['
                + json.dumps(_MESSAGE).encode()
                + b", "
                + body_with(_MESSAGE, metadata=DEEP)
                + b"]}"
            ),
        ),
        "nested metadata in the second message",
    ),
    Refusal(
        "POST",
        f"{SESSIONS}/import",
        409,
        "idempotency_key_reused",
        _json(
            "POST",
            lambda w: f"{SESSIONS}/import",
            lambda w: json.dumps({"messages": [_MESSAGE, _MESSAGE]}).encode(),
            **{"Idempotency-Key": "refused-import"},
        ),
        "a key used for another conversation",
        _import_once,
    ),
    Refusal(
        "POST",
        f"{S}/restore",
        404,
        "session_not_found",
        _call("POST", lambda w: f"{SESSIONS}/{w.other_session_id}/restore"),
        "another user's archived session",
        _archive_others,
    ),
    Refusal(
        "POST",
        f"{S}/restore",
        503,
        "archive_unavailable",
        _call("POST", lambda w: f"{SESSIONS}/{w.quiet_session_id}/restore"),
        "its archive object lost",
        _archive_quiet_and_lose_its_object,
    ),
]


def write_routes(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(API)
        for method in operations
        if method in ("post", "patch", "put", "delete")
    }


async def test_every_write_route_has_a_refused_request(app: FastAPI) -> None:
    """A new write route needs a case below: the rule holds for every one."""
    covered = {(refusal.method, refusal.route) for refusal in REFUSALS}
    assert write_routes(app) - covered == set()


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda r: r.id)
async def test_a_refused_write_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, state: AppState, factory: Factory, refusal: Refusal
) -> None:
    world = await build_world(factory)
    if refusal.prepare is not None:
        await refusal.prepare(client, state, world)
    before = await take_snapshot(state.sessionmaker)

    response = await refusal.send(client, world)

    assert_problem(response, refusal.status, refusal.code)
    assert_unchanged(before, await take_snapshot(state.sessionmaker), "the refused request")
    await assert_reads_work(client, app, world.account, world.session_id)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_turn_without_a_model_provider_stores_no_message(
    client: httpx.AsyncClient, state: AppState, factory: Factory, stream: bool
) -> None:
    """503 generation_unavailable comes before the turn is stored: neither the user's message
    nor an answer is left behind, and a retry with the same key is refused the same way."""
    account = await factory.account()
    session = await factory.chat_session(account)
    await factory.message(account, session["id"], content="before")
    url = f"{SESSIONS}/{session['id']}"
    listed = (await client.get(f"{url}/messages", headers=account.headers)).json()["data"]
    read = (await client.get(url, headers=account.headers)).json()
    before = await take_snapshot(state.sessionmaker)

    for headers in ({}, {"Idempotency-Key": f"no-provider-{stream}"}):
        for _ in range(2):
            response = await client.post(
                f"{url}/chat",
                json={"content": "Why does it fail?", "stream": stream},
                headers={**account.headers, **headers},
            )
            assert_problem(response, 503, "generation_unavailable")

    assert (await client.get(f"{url}/messages", headers=account.headers)).json()["data"] == listed
    after = (await client.get(url, headers=account.headers)).json()
    assert after == read  # message_count, last_message_at, updated_at
    assert_unchanged(before, await take_snapshot(state.sessionmaker), "the refused turn")


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", None],
)
async def test_a_json_body_sent_as_something_else_is_415(
    client: httpx.AsyncClient, factory: Factory, content_type: str | None
) -> None:
    """What `curl -d` sends (a form) named a model class in a 422; nothing is stored."""
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"
    headers = {**account.headers, **({"Content-Type": content_type} if content_type else {})}

    response = await client.post(url, content=b'{"role":"user","content":"hi"}', headers=headers)

    problem = assert_problem(response, 415, "unsupported_media_type")
    assert "application/json" in problem["detail"]
    assert "MessageAppend" not in problem["detail"]
    listed = await client.get(url, headers=account.headers)
    assert listed.json()["data"] == []


async def test_a_json_body_that_is_not_an_object_is_still_422(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    url = f"{API}/sessions/{session['id']}/messages"
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "application/x+json",
    ):
        response = await client.post(
            url, content=b"[1, 2]", headers={**account.headers, "Content-Type": content_type}
        )
        assert_validation_error(response, "body")
