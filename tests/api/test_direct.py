"""The direct path (api/direct.py): well-formed creates, appends, deltas and history reads are
served without FastAPI's dependency solving, from the same declaration, with the same answers,
limits and events; what the route's fields refuse is served by FastAPI's handler."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from chat_store.api.deps import AppState
from chat_store.api.direct import DirectRoute, direct
from chat_store.services import events
from tests.assertions import assert_problem, assert_validation_error
from tests.backends import Backend
from tests.conftest import AppWith
from tests.factories import API, Account, Factory

# Fields that differ between two answers to the same request: new ids, times, places.
VOLATILE = {"id", "session_id", "created_at", "updated_at", "completed_at"}
VOLATILE |= {"first_id", "last_id", "instance"}


def _scrubbed(value: Any) -> Any:
    """`value` without its volatile fields, at any depth; objects as lists of pairs, so that
    the order of the fields counts."""
    if isinstance(value, dict):
        return [(k, _scrubbed(v)) for k, v in value.items() if k not in VOLATILE]
    if isinstance(value, list):
        return [_scrubbed(item) for item in value]
    return value


async def _stream(factory: Factory, account: Account) -> tuple[str, str]:
    session = await factory.chat_session(account)
    pending = await factory.message(account, session["id"], role="assistant", status="pending")
    return session["id"], f"{API}/sessions/{session['id']}/messages/{pending['id']}/append"


async def test_well_formed_requests_are_served_without_dependency_solving(
    client: httpx.AsyncClient, factory: Factory, solved: list[str]
) -> None:
    account = await factory.account()
    key = (await factory.api_key(account))["key"]
    headers = {"X-API-Key": key}
    solved.clear()

    created = await client.post(f"{API}/sessions", json={"title": "t"}, headers=headers)
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]
    messages = f"{API}/sessions/{session_id}/messages"
    appended = await client.post(
        messages, json={"role": "assistant", "status": "pending"}, headers=headers
    )
    assert appended.status_code == 201, appended.text
    assert appended.json()["seq"] == 1
    url = f"{messages}/{appended.json()['id']}/append"
    minimal = await client.post(
        url, json={"offset": 0, "delta": "Hel"}, headers={**headers, "Prefer": "return=minimal"}
    )
    assert minimal.status_code == 200, minimal.text
    assert minimal.headers["Preference-Applied"] == "return=minimal"
    assert (minimal.json()["length"], minimal.json()["partial_content"]) == (3, None)
    full = await client.post(url, json={"offset": 3, "delta": "lo"}, headers=headers)
    assert full.status_code == 200, full.text
    assert "Preference-Applied" not in full.headers
    assert (full.json()["length"], full.json()["partial_content"]) == (5, "Hello")
    assert full.json()["status"] == "in_progress"
    newest = await client.get(f"{messages}?order=desc&limit=50", headers=headers)
    assert newest.status_code == 200, newest.text
    assert [m["partial_content"] for m in newest.json()["data"]] == ["Hello"]
    assert solved == []

    # Other routes are FastAPI's: the message read alone.
    one = f"{messages}/{appended.json()['id']}"
    assert (await client.get(one, headers=headers)).json()["partial_content"] == "Hello"
    assert solved == [one]


@pytest.mark.parametrize(
    ("case", "loc"),
    [
        ("a session id that is no uuid", ("path", "session_id")),
        ("a body the model refuses", ("body", "role")),
        ("a body that is not json", ("body", 1)),
        ("an empty idempotency key", ("header", "Idempotency-Key")),
        ("a form body", None),  # 415: see test_hostile_input
        ("a page size out of bounds", ("query", "limit")),
    ],
)
async def test_what_the_direct_path_does_not_take_fastapi_answers(
    client: httpx.AsyncClient,
    factory: Factory,
    solved: list[str],
    case: str,
    loc: tuple[str | int, ...] | None,
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    messages = f"{API}/sessions/{session['id']}/messages"
    request: dict[str, Any] = {"json": {"role": "user", "content": "hi"}}
    if case == "a session id that is no uuid":
        messages = f"{API}/sessions/not-a-uuid/messages"
    elif case == "a body the model refuses":
        request = {"json": {"role": "wizard", "content": "hi"}}
    elif case == "a body that is not json":
        request = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    elif case == "an empty idempotency key":
        request["headers"] = {"Idempotency-Key": ""}
    elif case == "a form body":
        request = {"data": {"role": "user", "content": "hi"}}
    request["headers"] = {**account.headers, **request.get("headers", {})}
    solved.clear()

    if case == "a page size out of bounds":
        answer = await client.get(f"{messages}?limit=101", headers=account.headers)
    else:
        answer = await client.post(messages, **request)

    if loc is None:
        assert_problem(answer, 415, "unsupported_media_type")
    else:
        assert_validation_error(answer, *loc)
    # FastAPI's handler answered: it solves the dependencies, except for a body that does not
    # parse, which it refuses before (as "JSON decode error" at the character, its wording).
    if case == "a body that is not json":
        assert answer.json()["errors"][0]["msg"] == "JSON decode error"
    else:
        assert solved == [messages]
    listed = await client.get(f"{API}/sessions/{session['id']}/messages", headers=account.headers)
    assert listed.json()["data"] == []  # nothing was stored on the way


async def test_a_dependency_that_refuses_is_answered_as_fastapi_answers_it(
    client: httpx.AsyncClient, factory: Factory, solved: list[str]
) -> None:
    """Both cursors: well formed, refused by the pagination dependency (after the caller is
    known, as FastAPI runs it)."""
    account = await factory.account()
    session = await factory.chat_session(account)
    cursor = uuid.uuid4()
    url = f"{API}/sessions/{session['id']}/messages?after={cursor}&before={cursor}"
    solved.clear()
    assert_validation_error(await client.get(url, headers=account.headers), "query", "before")
    assert_problem(await client.get(url), 401, "unauthorized")
    assert solved == []


async def test_authentication_is_checked_before_the_body_as_before(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.post(f"{API}/sessions", json={"title": 5})
    assert_problem(missing, 401, "unauthorized")
    wrong = await client.post(f"{API}/sessions", json={}, headers={"X-API-Key": "csk_wrong"})
    assert_problem(wrong, 401, "unauthorized")


async def _answers(
    client: httpx.AsyncClient, factory: Factory
) -> list[tuple[int, str, str | None, Any]]:
    """The same writes each time, in new sessions: status, content type, Preference-Applied,
    and the body without what is new each time (checked in order: the bytes' field order)."""
    account = await factory.account()
    key = f"key-{uuid.uuid4()}"
    session_id, url = await _stream(factory, account)
    messages = f"{API}/sessions/{session_id}/messages"
    headers = account.headers

    requests: list[Callable[[], Awaitable[httpx.Response]]] = [
        lambda: client.post(
            f"{API}/sessions",
            json={"title": "Fix the build", "workspace": {"repo": "r"}, "metadata": {"k": 1}},
            headers={**headers, "Idempotency-Key": key},
        ),
        lambda: client.post(
            messages,
            json={"role": "user", "content": "Why? ✓", "context": {"d": [1]}, "token_count": 3},
            headers=headers,
        ),
        lambda: client.post(
            url, json={"offset": 0, "delta": "ab✓"}, headers={**headers, "Prefer": "return=minimal"}
        ),
        lambda: client.post(url, json={"offset": 3, "delta": "cd"}, headers=headers),
        lambda: client.post(url, json={"offset": 3, "delta": "cd"}, headers=headers),  # a retry
        lambda: client.post(url, json={"offset": 9, "delta": "x"}, headers=headers),  # 409
        lambda: client.get(f"{messages}?order=desc&limit=2", headers=headers),
        lambda: client.get(f"{messages}?after_seq=1&limit=5", headers=headers),
        lambda: client.post(f"{API}/sessions/{uuid.uuid4()}/messages", json={}, headers=headers),
        lambda: client.post(
            f"{API}/sessions/{uuid.uuid4()}/messages",
            json={"role": "user", "content": "x"},
            headers=headers,
        ),  # 404
    ]
    answers = []
    for send in requests:
        response = await send()
        body = response.json()
        kept = _scrubbed(body)
        answers.append(
            (
                response.status_code,
                response.headers["content-type"],
                response.headers.get("Preference-Applied"),
                kept,
            )
        )
    return answers


async def test_direct_and_fastapi_answers_are_the_same(
    client: httpx.AsyncClient,
    factory: Factory,
    solved: list[str],
    through_fastapi: Callable[[], None],
) -> None:
    direct = await _answers(client, factory)
    assert [status for status, *_ in direct] == [201, 201, 200, 200, 200, 409, 200, 200, 422, 404]
    served_by_fastapi = len(solved)
    assert served_by_fastapi < 10  # the setup and the 422, not the others

    through_fastapi()
    fastapi_answers = await _answers(client, factory)

    assert len(solved) > served_by_fastapi + 10
    assert direct == fastapi_answers


@pytest.fixture
async def write_limited(backend: Backend, app_with: AppWith) -> AsyncIterator[httpx.AsyncClient]:
    async with app_with(
        rate_limit_enabled=True,
        rate_limit_write="2/minute",
        redis_prefix=f"{backend.redis_prefix}{uuid.uuid4().hex[:8]}:",
    ) as limited:
        yield limited.client


async def test_the_direct_path_applies_the_write_limit(
    write_limited: httpx.AsyncClient, solved: list[str]
) -> None:
    account = await Factory(write_limited).account()
    solved.clear()
    answers = [
        await write_limited.post(f"{API}/sessions", json={}, headers=account.headers)
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    assert_problem(answers[2], 429, "rate_limited")
    assert solved == []


@pytest.mark.parametrize("minimal", [True, False], ids=["minimal", "with-text"])
async def test_a_refused_delta_leaves_no_gap_in_the_change_feed(
    client: httpx.AsyncClient, factory: Factory, state: AppState, minimal: bool
) -> None:
    """A refused delta may use up a history version (a minimal delta commits by itself on
    Postgres): readers must then hear of it, or they see a gap and re-read the store."""
    account = await factory.account()
    session = await factory.chat_session(account)
    prefer = {"Prefer": "return=minimal"} if minimal else {}
    async with state.bus.subscribe(events.channel(uuid.UUID(session["id"]))) as feed:
        pending = await factory.message(account, session["id"], role="assistant", status="pending")
        url = f"{API}/sessions/{session['id']}/messages/{pending['id']}/append"
        headers = {**account.headers, **prefer}
        refused = await client.post(url, json={"offset": 7, "delta": "x"}, headers=headers)
        assert_problem(refused, 409, "offset_mismatch")
        landed = await client.post(url, json={"offset": 0, "delta": "x"}, headers=headers)
        assert landed.status_code == 200, landed.text

        seen: list[tuple[str, int]] = []
        while not seen or seen[-1][0] != "message.delta":
            event = await feed.next(5.0)
            assert event is not None, seen
            seen.append((event["type"], event["version"]))
    versions = [version for _, version in seen]
    assert versions == list(range(versions[0], versions[0] + len(versions))), seen
    assert seen[0][0] == "message.created"


async def test_a_retried_minimal_delta_is_answered_without_the_text(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    _, url = await _stream(factory, account)
    minimal = {**account.headers, "Prefer": "return=minimal"}
    first = await client.post(url, json={"offset": 0, "delta": "abc"}, headers=minimal)
    retried = await client.post(url, json={"offset": 0, "delta": "abc"}, headers=minimal)

    for answer in (first, retried):
        assert answer.status_code == 200, answer.text
        assert answer.headers["Preference-Applied"] == "return=minimal"
        assert (answer.json()["length"], answer.json()["partial_content"]) == (3, None)
    full = await client.post(url, json={"offset": 0, "delta": "abc"}, headers=account.headers)
    assert (full.json()["length"], full.json()["partial_content"]) == (3, "abc")


def test_a_route_the_direct_path_cannot_solve_is_refused_when_it_is_built() -> None:
    """A dependency that is not an async function (FastAPI would run it in a thread): marking
    such a route direct is a mistake found at start, not a request served differently."""

    def synchronous() -> int:
        return 1

    @direct
    async def endpoint(value: int = Depends(synchronous)) -> dict[str, int]:
        return {"value": value}

    small = FastAPI()
    with pytest.raises(TypeError, match="not an async function"):
        small.router.add_api_route(
            "/x", endpoint, methods=["GET"], route_class_override=DirectRoute
        )
