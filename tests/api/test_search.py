"""GET /search: what is found, how it is ranked, excerpted, filtered and paged, on both engines."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from chat_store.db import planned_for_its_values
from chat_store.models import Message
from chat_store.state import AppState
from tests.assertions import assert_problem, assert_validation_error
from tests.conftest import AppWith
from tests.factories import API, Account, Factory

CODE_QUESTION = "Why does test_billing fail on CI? It raises KeyError in src/app/main.py line 12."
CLOCK_ANSWER = "The fixture uses a fixed clock ⏰: patch os.path.join in conftest.py instead."


async def search(
    client: httpx.AsyncClient, account: Account, q: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(f"{API}/search", params={"q": q, **params}, headers=account.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def message_ids(page: dict[str, Any]) -> list[str]:
    return [hit["message"]["id"] for hit in page["data"] if hit["message"] is not None]


def matched(hit: dict[str, Any]) -> list[str]:
    return [hit["snippet"][start:end] for start, end in hit["highlights"]]


@pytest.fixture
async def account(factory: Factory) -> Account:
    return await factory.account()


async def test_a_hit_is_the_message_with_its_session_an_excerpt_and_a_rank(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account, title="CI troubles")
    question = await factory.message(account, session["id"], content=CODE_QUESTION)

    page = await search(client, account, "test_billing")

    assert page["object"] == "list"
    assert page["has_more"] is False
    assert page["next_cursor"] is None
    [hit] = page["data"]
    assert set(hit) == {"object", "session", "message", "snippet", "highlights", "rank"}
    assert hit["object"] == "search_result"
    assert hit["session"] == {"id": session["id"], "title": "CI troubles"}
    assert hit["message"] == {
        "id": question["id"],
        "seq": 1,
        "role": "user",
        "created_at": question["created_at"],
    }
    assert hit["snippet"] == CODE_QUESTION  # short texts are shown whole
    assert matched(hit) == ["test_billing"]
    assert hit["rank"] > 0


@pytest.mark.parametrize(
    ("typed", "highlighted"),
    [
        ("test_billing", ["test_billing"]),
        ("KeyError", ["KeyError"]),
        ("keyerror", ["KeyError"]),
        ("src/app/main.py", ["src/app/main.py"]),
        ("app/main.py", ["app/main.py"]),
        ("main.py", ["main.py"]),
        ("billing", ["billing"]),
        ('"line 12"', ["line 12"]),
    ],
)
async def test_code_is_found_as_written_and_by_its_parts(
    client: httpx.AsyncClient,
    factory: Factory,
    account: Account,
    typed: str,
    highlighted: list[str],
) -> None:
    session = await factory.chat_session(account)
    question = await factory.message(account, session["id"], content=CODE_QUESTION)
    await factory.message(account, session["id"], role="assistant", content=CLOCK_ANSWER)

    page = await search(client, account, typed)

    assert message_ids(page) == [question["id"]]
    assert matched(page["data"][0]) == highlighted


async def test_identifiers_do_not_match_across_their_parts(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    await factory.message(account, session["id"], content="billing test, then main results")

    for typed in ("test_billing", "main.py", "src/app/main.py"):
        assert (await search(client, account, typed))["data"] == [], typed


async def test_phrases_exclusions_and_or(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    question = await factory.message(account, session["id"], content=CODE_QUESTION)
    answer = await factory.message(account, session["id"], role="assistant", content=CLOCK_ANSWER)
    other = await factory.message(account, session["id"], content="the clock is fixed now")

    assert message_ids(await search(client, account, '"fixed clock"')) == [answer["id"]]
    assert set(message_ids(await search(client, account, "fixed clock"))) == {
        answer["id"],
        other["id"],
    }
    assert message_ids(await search(client, account, "clock -fixture")) == [other["id"]]
    assert message_ids(await search(client, account, 'clock -"fixed clock"')) == [other["id"]]
    assert set(message_ids(await search(client, account, "KeyError or conftest"))) == {
        question["id"],
        answer["id"],
    }
    assert message_ids(await search(client, account, "KeyError OR nothing_like_it")) == [
        question["id"]
    ]


async def test_titles_are_hits_of_their_own(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    titled = await factory.chat_session(account, title="Flaky billing tests")
    untouched = await factory.chat_session(account)
    message = await factory.message(account, untouched["id"], content="billing is flaky today")

    page = await search(client, account, "flaky billing")

    assert [(hit["session"]["id"], hit["message"]) for hit in page["data"][:1]] == [
        (titled["id"], None)
    ]
    title_hit = page["data"][0]
    assert title_hit["snippet"] == "Flaky billing tests"
    assert matched(title_hit) == ["Flaky billing"]
    # A title outranks a message with the same words.
    assert message_ids(page) == [message["id"]]
    assert page["data"][0]["rank"] > page["data"][1]["rank"]


async def test_an_untitled_session_is_named_by_its_first_message_and_found_by_it(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    await factory.message(account, session["id"], content="Port the CLI to Windows")

    page = await search(client, account, "windows")

    assert [hit["message"] is None for hit in page["data"]] == [True, False]


async def test_results_are_best_first(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    weak = await factory.message(
        account, session["id"], content="clock " + "unrelated words here " * 20 + "fixture"
    )
    strong = await factory.message(account, session["id"], content="fixture clock fixture clock")

    page = await search(client, account, "fixture clock")

    assert message_ids(page) == [strong["id"], weak["id"]]
    ranks = [hit["rank"] for hit in page["data"]]
    assert ranks == sorted(ranks, reverse=True)


async def test_a_long_text_is_excerpted_around_the_match(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    text = " ".join(f"word{i}" for i in range(200)) + " the needle_here is found " + "tail " * 100
    await factory.message(account, session["id"], content=text)

    [hit] = (await search(client, account, "needle_here"))["data"]

    assert hit["snippet"].startswith("…") and hit["snippet"].endswith("…")
    assert len(hit["snippet"]) < 400
    assert matched(hit) == ["needle_here"]
    assert hit["snippet"].strip("…") in text


async def test_a_short_text_is_shown_whole_however_many_words_it_has(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account, title="t")
    text = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.0.1.2.3.4.5.6.7.8.9 wombat"
    await factory.message(account, session["id"], content=text)

    [hit] = (await search(client, account, "wombat"))["data"]

    assert hit["snippet"] == text
    assert matched(hit) == ["wombat"]


async def test_a_megabyte_of_distinct_words_is_stored_and_its_start_indexed(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    """A tsvector holds at most 1 MB: indexed whole, a message of hashes would fail its own
    append. The first 100,000 characters are indexed, on both engines."""
    session = await factory.chat_session(account, title="t")
    hashes = " ".join(hashlib.md5(str(i).encode()).hexdigest() for i in range(30_000))
    text = f"first_marker {hashes} last_marker"
    assert len(text.encode()) < 1024 * 1024
    message = await factory.message(account, session["id"], content=text)

    [hit] = (await search(client, account, "first_marker"))["data"]
    assert hit["message"]["id"] == message["id"]
    assert hit["snippet"].endswith("…") and matched(hit) == ["first_marker"]
    assert (await search(client, account, "last_marker"))["data"] == []


async def test_highlights_count_code_points(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account, title="t")
    await factory.message(account, session["id"], content="⏰🙂 naïve café déjà-vu 日本語 clock")

    for typed, word in (("clock", "clock"), ("café", "café"), ("日本語", "日本語")):
        [hit] = (await search(client, account, typed))["data"]
        assert matched(hit) == [word]


_MENTIONS = "the clock is fixed; main and py later: a fixed clock in main.py, clock again"


@pytest.mark.parametrize(
    ("content", "typed", "highlighted"),
    [
        (_MENTIONS, '"fixed clock"', ["fixed clock"]),
        (_MENTIONS, "main.py", ["main.py"]),
        (_MENTIONS, '"fixed clock" again', ["fixed clock", "again"]),
        (_MENTIONS, "clock", ["clock", "clock", "clock"]),
        ("the fixed\nclock ran", '"fixed clock"', ["fixed\nclock"]),
        ("the fixed\tclock ran", '"fixed clock"', ["fixed\tclock"]),
        ("that is John\u2019s cup", "John\u2019s", ["John\u2019s"]),
        ("a café—latte please", "café—latte", ["café—latte"]),
    ],
    ids=[
        "phrase",
        "path",
        "phrase-and-word",
        "word",
        "newline",
        "tab",
        "curly-apostrophe",
        "em-dash",
    ],
)
async def test_only_what_matches_a_term_is_highlighted(
    client: httpx.AsyncClient,
    factory: Factory,
    account: Account,
    content: str,
    typed: str,
    highlighted: list[str],
) -> None:
    """A phrase's words elsewhere in the text, apart, are not a match of it (Postgres marked
    every word of the query wherever it stood); a term's words split by any spaces or
    punctuation are."""
    session = await factory.chat_session(account, title="t")
    await factory.message(account, session["id"], content=content)

    [hit] = (await search(client, account, typed))["data"]

    assert matched(hit) == highlighted


async def test_private_use_marks_in_the_text_do_not_confuse_highlights(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account, title="t")
    await factory.message(account, session["id"], content="odd \ue000marks\ue001 around clock")

    [hit] = (await search(client, account, "clock"))["data"]

    assert matched(hit) == ["clock"]


# --- streaming answers, edits and deletions


async def test_a_streamed_answer_is_found_once_it_is_complete(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    answer = await factory.message(account, session["id"], role="assistant", status="pending")
    url = f"{API}/sessions/{session['id']}/messages/{answer['id']}"
    response = await client.post(
        f"{url}/append",
        json={"delta": "streaming zebra text", "offset": 0},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text

    assert (await search(client, account, "zebra"))["data"] == []

    response = await client.patch(url, json={"status": "complete"}, headers=account.headers)
    assert response.status_code == 200, response.text
    assert message_ids(await search(client, account, "zebra")) == [answer["id"]]


@pytest.mark.parametrize("status", ["failed", "cancelled"])
async def test_a_stopped_answer_is_found_by_the_text_it_got(
    client: httpx.AsyncClient, factory: Factory, account: Account, status: str
) -> None:
    session = await factory.chat_session(account)
    answer = await factory.message(account, session["id"], role="assistant", status="pending")
    url = f"{API}/sessions/{session['id']}/messages/{answer['id']}"
    await client.post(
        f"{url}/append", json={"delta": "half an okapi", "offset": 0}, headers=account.headers
    )
    response = await client.patch(
        url, json={"status": status, "error_message": "stopped"}, headers=account.headers
    )
    assert response.status_code == 200, response.text

    assert message_ids(await search(client, account, "okapi")) == [answer["id"]]

    # Resumed, it streams again: not searchable until it ends.
    response = await client.patch(url, json={"status": "in_progress"}, headers=account.headers)
    if status == "failed":
        assert response.status_code == 200, response.text
        assert (await search(client, account, "okapi"))["data"] == []


async def test_an_edit_replaces_what_is_found(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account, title="first title")
    message = await factory.message(account, session["id"], content="original walrus")
    response = await client.patch(
        f"{API}/sessions/{session['id']}/messages/{message['id']}",
        json={"content": "edited narwhal"},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    response = await client.put(
        f"{API}/sessions/{session['id']}", json={"title": "renamed heron"}, headers=account.headers
    )
    assert response.status_code == 200, response.text

    assert (await search(client, account, "walrus"))["data"] == []
    assert message_ids(await search(client, account, "narwhal")) == [message["id"]]
    assert (await search(client, account, "first title"))["data"] == []
    [hit] = (await search(client, account, "heron"))["data"]
    assert hit["session"]["title"] == "renamed heron"


async def test_deleted_messages_and_sessions_are_not_found(
    client: httpx.AsyncClient, factory: Factory, account: Account, state: Any
) -> None:
    kept = await factory.chat_session(account, title="kept ibis")
    gone = await factory.chat_session(account, title="gone ibis")
    message = await factory.message(account, kept["id"], content="ibis message")
    await factory.messages(account, gone["id"], 3, content="ibis batch")
    await client.delete(
        f"{API}/sessions/{kept['id']}/messages/{message['id']}", headers=account.headers
    )
    await client.delete(f"{API}/sessions/{gone['id']}", headers=account.headers)

    page = await search(client, account, "ibis")

    assert [(hit["session"]["id"], hit["message"]) for hit in page["data"]] == [(kept["id"], None)]
    await _check_sqlite_index(state)


async def _check_sqlite_index(state: Any) -> None:
    """SQLite: the FTS5 index agrees with the rows it indexes (a trigger that handed FTS5 other
    text than it indexed would leave it inconsistent)."""
    if state.engine.dialect.name != "sqlite":
        return
    from sqlalchemy import text

    from chat_store.models.search import MESSAGE_FTS_PARTS

    tables = [f"message_fts_{part}" for part in MESSAGE_FTS_PARTS]
    async with state.sessionmaker() as db, db.begin():
        for table in [*tables, "chat_session_fts"]:
            await db.execute(
                text(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")
            )


# --- filters


async def test_filters_narrow_the_hits(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    api = await factory.chat_session(
        account, title="api work", workspace={"repo": "github.com/acme/api"}
    )
    web = await factory.chat_session(account, title="web work")
    in_api = await factory.message(account, api["id"], content="the lemur question")
    answer_api = await factory.message(
        account, api["id"], role="assistant", content="the lemur answer"
    )
    in_web = await factory.message(account, web["id"], content="a lemur elsewhere")
    await client.patch(f"{API}/sessions/{web['id']}/favorite", headers=account.headers)
    await client.patch(
        f"{API}/sessions/{api['id']}", json={"status": "ended"}, headers=account.headers
    )

    async def ids(**params: Any) -> set[str]:
        return set(message_ids(await search(client, account, "lemur", **params)))

    assert await ids() == {in_api["id"], answer_api["id"], in_web["id"]}
    assert await ids(session_id=api["id"]) == {in_api["id"], answer_api["id"]}
    assert await ids(role="assistant") == {answer_api["id"]}
    assert await ids(repo="github.com/acme/api") == {in_api["id"], answer_api["id"]}
    assert await ids(favorite="true") == {in_web["id"]}
    assert await ids(favorite="false") == {in_api["id"], answer_api["id"]}
    assert await ids(status="ended") == {in_api["id"], answer_api["id"]}
    assert await ids(status="active", role="user") == {in_web["id"]}


async def test_session_and_role_filters_on_titles(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    one = await factory.chat_session(account, title="tapir one")
    await factory.chat_session(account, title="tapir two")

    page = await search(client, account, "tapir", session_id=one["id"])
    assert [hit["session"]["id"] for hit in page["data"]] == [one["id"]]
    assert (await search(client, account, "tapir", role="user"))["data"] == []


async def test_dates_filter_by_the_time_of_the_hit(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    message = await factory.message(account, session["id"], content="the gecko")
    created = datetime.fromisoformat(message["created_at"])
    today = created.date().isoformat()
    tomorrow = (created + timedelta(days=1)).date().isoformat()

    async def ids(**params: Any) -> list[str]:
        return message_ids(await search(client, account, "gecko", **params))

    assert await ids(after=today, before=tomorrow) == [message["id"]]
    assert await ids(after=tomorrow) == []
    assert await ids(before=today) == []
    second = timedelta(seconds=1)
    assert await ids(after=(created - second).isoformat()) == [message["id"]]
    assert await ids(after=(created + second).isoformat()) == []
    assert await ids(before=(created + second).astimezone(UTC).isoformat()) == [message["id"]]


async def test_bad_filters_are_422(client: httpx.AsyncClient, account: Account) -> None:
    for params, field in (
        ({"role": "robot"}, "role"),
        ({"status": "open"}, "status"),
        ({"after": "2026-11-26T10:00:00"}, "after"),  # no offset
        ({"after": "2026-11-26T00:00:00"}, "after"),  # no offset, at midnight
        ({"before": "2026-11-26 "}, "before"),
        ({"after": "0001-01-01T00:00:00+14:00"}, "after"),  # midnight, no UTC equivalent
        ({"before": "yesterday"}, "before"),
        # Times with no UTC equivalent (past the calendar's ends once the offset is applied).
        ({"after": "0001-01-01T00:30:00+14:00"}, "after"),
        ({"before": "9999-12-31T23:59:59-14:00"}, "before"),
        ({"session_id": "not-a-uuid"}, "session_id"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
    ):
        response = await client.get(
            f"{API}/search", params={"q": "x", **params}, headers=account.headers
        )
        assert_validation_error(response, "query", field)


# --- the query itself


@pytest.mark.parametrize("typed", ["+++", "-clock", "or", '-"fixed clock"', "clock or -x", "⏰"])
async def test_a_query_with_nothing_to_search_for_is_422(
    client: httpx.AsyncClient, account: Account, typed: str
) -> None:
    response = await client.get(f"{API}/search", params={"q": typed}, headers=account.headers)
    body = assert_validation_error(response, "query", "q")
    assert "search for" in body["detail"]


async def test_missing_empty_and_too_long_queries_are_422(
    client: httpx.AsyncClient, account: Account
) -> None:
    response = await client.get(f"{API}/search", headers=account.headers)
    assert_validation_error(response, "query", "q")
    for typed in ("", "a" * 257, "nul\x00byte"):
        response = await client.get(f"{API}/search", params={"q": typed}, headers=account.headers)
        assert_validation_error(response, "query", "q")


async def test_engine_syntax_in_the_query_is_never_an_error(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    await factory.message(account, session["id"], content="NEAR body a b c")
    for typed in (
        'NEAR(a b) body:x a* ^b !c (d | e) & f <-> g "h""i',
        "AND OR NOT",
        '"unclosed',
        "a:* & !b",
        "'quoted' \\ backslash",
        "col:value {a b}",
    ):
        response = await client.get(f"{API}/search", params={"q": typed}, headers=account.headers)
        assert response.status_code in {200, 422}, (typed, response.text)
        if response.status_code == 422:
            assert_validation_error(response, "query", "q")


# --- pages


async def test_walking_the_pages_returns_every_hit_once(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    # Equal texts rank equal: the order between them is the id's.
    created = await factory.messages(account, session["id"], 7, content="same cobra text")
    created += await factory.messages(account, session["id"], 4, content="cobra cobra cobra")
    expected = {message["id"] for message in created}

    seen: list[str] = []
    ranks: list[float] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = await search(client, account, "cobra", **params)
        pages += 1
        seen += message_ids(page)
        ranks += [hit["rank"] for hit in page["data"]]
        cursor = page["next_cursor"]
        assert (cursor is not None) == page["has_more"]
        if not page["has_more"]:
            break

    assert pages == 4
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == expected
    assert ranks == sorted(ranks, reverse=True)
    whole = await search(client, account, "cobra", limit=100)
    assert message_ids(whole) == seen


async def test_a_cursor_is_tied_to_its_search(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    session = await factory.chat_session(account)
    await factory.messages(account, session["id"], 3, content="python snake")
    cursor = (await search(client, account, "python", limit=1))["next_cursor"]
    assert cursor

    for params in ({"q": "snake"}, {"q": "python", "role": "user"}):
        response = await client.get(
            f"{API}/search", params={**params, "cursor": cursor}, headers=account.headers
        )
        assert_validation_error(response, "query", "cursor")
    encoded = (
        base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
        # Numbers where ids belong; a rank that is not a finite number.
        for fields in ([1, 2, 3], [1.0, 2, "x"], ["NaN", str(uuid.uuid4()), "x"])
    )
    for bad in ("garbage", "e30", "W10", "x" * 600, *encoded):
        response = await client.get(
            f"{API}/search", params={"q": "python", "cursor": bad}, headers=account.headers
        )
        assert_validation_error(response, "query", "cursor")


@pytest.mark.postgres_only
async def test_pages_stay_in_place_while_messages_are_added(
    client: httpx.AsyncClient, factory: Factory, account: Account
) -> None:
    """On Postgres a hit's rank depends on its own text and the query only, so writes between
    two pages neither skip nor repeat a hit. (SQLite's bm25 weighs every word by how rare it is
    in the whole index: there, a write between pages may move hits across the boundary.)"""
    session = await factory.chat_session(account)
    created = await factory.messages(account, session["id"], 6, content="viper")
    first = await search(client, account, "viper", limit=3)
    await factory.messages(account, session["id"], 3, content="viper viper viper")
    second = await search(client, account, "viper", limit=10, cursor=first["next_cursor"])

    seen = message_ids(first) + message_ids(second)
    assert sorted(seen) == sorted(message["id"] for message in created)


@pytest.mark.postgres_only
async def test_a_common_query_ranks_its_newest_matches_and_pages_stay_in_place(
    app_with: AppWith,
) -> None:
    """SEARCH_RANKED_MATCHES=4: a query matching more messages ranks the 4 newest, best first;
    the later pages rank the same ones (and what was written since), skipping and repeating
    none, though newer matches now outnumber the bound. (Postgres: SQLite's bm25 moves every
    rank when a write changes how rare a word is; its bound is tested without writes.)"""
    async with app_with(search_ranked_matches=4) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        session = await factory.chat_session(account, title="snakes")
        older = await factory.messages(account, session["id"], 3, content="mamba mamba mamba")
        newest = await factory.messages(account, session["id"], 2, content="mamba once")
        newest += await factory.messages(account, session["id"], 2, content="mamba mamba")

        first = await search(client, account, "mamba", limit=2)
        # The newest four; the three older ones, though they rank higher, are left out.
        ranked = [newest[2], newest[3], newest[0], newest[1]]
        assert message_ids(first) == [ranked[1]["id"], ranked[0]["id"]]
        assert first["has_more"] is True
        later = await factory.messages(account, session["id"], 3, content="mamba once")

        second = await search(client, account, "mamba", limit=10, cursor=first["next_cursor"])

        seen = message_ids(first) + message_ids(second)
        assert sorted(seen) == sorted(m["id"] for m in ranked + later)
        assert not {m["id"] for m in older} & set(seen)
        whole = await search(client, account, "mamba", limit=100)
        assert len(message_ids(whole)) == 4


@pytest.mark.parametrize("newer", [2, 20], ids=["found-by-the-index", "read-newest-first"])
async def test_the_newest_matches_are_ranked_however_they_are_found(
    app_with: AppWith, newer: int
) -> None:
    """Postgres reads a query's matches newest first when at least 18 of the caller's 200
    newest messages match it (8 and 26 here), else from the GIN index; SQLite reads FTS5's
    matches from the newest on: either way the same newest matches are ranked, with the
    filters applied, and the pages continue over the same set."""
    async with app_with(search_ranked_matches=4) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        session = await factory.chat_session(account, title="snakes")
        other = await factory.chat_session(account, title="lizards")
        older = await factory.messages(account, session["id"], 3, content="mamba mamba mamba")
        await factory.messages(account, session["id"], 5, content="unrelated")
        newest = await factory.messages(account, session["id"], newer, content="mamba once")
        await factory.messages(account, other["id"], 2, content="mamba mamba elsewhere")
        answer = await factory.message(
            account, session["id"], role="assistant", content="mamba mamba"
        )

        def best_first(messages: list[dict[str, Any]]) -> list[str]:
            # More occurrences rank higher; equal ranks go by id, newest first.
            ordered = sorted(messages, key=lambda m: m["id"], reverse=True)
            return [m["id"] for m in sorted(ordered, key=lambda m: -m["content"].count("mamba"))]

        in_session = [*older, *newest, answer]
        expected = best_first(in_session[-4:])
        first = await search(client, account, "mamba", session_id=session["id"], limit=3)
        assert message_ids(first) == expected[:3]
        second = await search(
            client, account, "mamba", session_id=session["id"], cursor=first["next_cursor"]
        )
        assert message_ids(second) == expected[3:]

        users = await search(client, account, "mamba", session_id=session["id"], role="user")
        assert message_ids(users) == best_first([*older, *newest][-4:])


@pytest.mark.postgres_only  # writes between pages: see the test above
async def test_a_query_within_the_bound_ranks_every_match(app_with: AppWith) -> None:
    async with app_with(search_ranked_matches=4) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        session = await factory.chat_session(account, title="snakes")
        created = await factory.messages(account, session["id"], 3, content="krait")

        first = await search(client, account, "krait", limit=2)
        await factory.messages(account, session["id"], 3, content="krait snake")
        second = await search(client, account, "krait", limit=10, cursor=first["next_cursor"])

        seen = message_ids(first) + message_ids(second)
        assert set(m["id"] for m in created) <= set(seen)
        assert len(seen) == len(set(seen))


async def test_a_cursor_whose_place_in_the_ranking_is_damaged_is_refused(
    app_with: AppWith,
) -> None:
    """The cursor of a bounded ranking carries the oldest message ranked (Postgres: its time
    and id; SQLite: also its rowid): anything else there is not a cursor."""
    async with app_with(search_ranked_matches=2) as custom:
        client, factory = custom.client, custom.factory
        account = await factory.account()
        session = await factory.chat_session(account)
        await factory.messages(account, session["id"], 4, content="boa")
        cursor = (await search(client, account, "boa", limit=1))["next_cursor"]
        fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        assert len(fields) in (5, 6)
        assert await search(client, account, "boa", cursor=cursor)

        # Not an integer, or past what a 64-bit row id holds.
        for place in (["7"], [7.5], [True], [None], [[7]], [7, 8], [-1], [2**70]):
            raw = json.dumps(fields[:5] + place).encode()
            damaged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            response = await client.get(
                f"{API}/search", params={"q": "boa", "cursor": damaged}, headers=account.headers
            )
            assert_validation_error(response, "query", "cursor")
        # The oldest ranked message's time, with no UTC equivalent.
        raw = json.dumps([*fields[:3], "0001-01-01T00:00:00+14:00", *fields[4:]]).encode()
        damaged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        response = await client.get(
            f"{API}/search", params={"q": "boa", "cursor": damaged}, headers=account.headers
        )
        assert_validation_error(response, "query", "cursor")


async def test_a_search_runs_while_a_write_holds_its_transaction_open(
    client: httpx.AsyncClient, factory: Factory, account: Account, state: AppState
) -> None:
    """On SQLite the one connection that writes is busy until the write commits; a search reads
    on a read-only connection of its own meanwhile, and sees what is committed only."""
    session = await factory.chat_session(account, title="reptiles")
    [kept] = await factory.messages(account, session["id"], 1, content="gecko kept")

    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(Message).where(Message.id == uuid.UUID(kept["id"])).values(content="gecko gone")
        )
        # A guard against hanging for the pool's timeout, not a measure of speed.
        page = await asyncio.wait_for(search(client, account, "kept"), timeout=30)
        await db.rollback()

    assert message_ids(page) == [kept["id"]]


async def test_searches_plan_for_their_values_without_changing_the_requests_connection(
    state: AppState,
) -> None:
    """Postgres: a search's statement runs on a connection that plans every statement for its
    values (a common word and a rare one need different plans, and a prepared statement would
    settle on one after five runs) and without JIT (compiling costs more than a search), while
    the request's own connection keeps the defaults.
    SQLite has no plan cache to steer: the request's session is used as it is."""
    async with state.read_sessionmaker() as db, planned_for_its_values(db) as planned:
        if db.get_bind().dialect.name != "postgresql":
            assert planned is db
            return
        assert planned is not db
        mode = (await planned.execute(text("SHOW plan_cache_mode"))).scalar_one()
        jit = (await planned.execute(text("SHOW jit"))).scalar_one()
        own = (await db.execute(text("SHOW plan_cache_mode"))).scalar_one()
    assert (mode, jit, own) == ("force_custom_plan", "off", "auto")


async def test_a_time_filter_it_cannot_take_is_named_as_the_request_names_it(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """`after` takes a time or a day: the 422 names `query.after`, not the member of that
    choice that refused the value."""
    account = await factory.account()
    for value in ("0001-01-01T00:00:00+14:00", "2026-13-01"):
        refused = await client.get(
            f"{API}/search", params={"q": "x", "after": value}, headers=account.headers
        )
        body = assert_problem(refused, 422, "validation_error")
        assert {tuple(error["loc"]) for error in body["errors"]} == {("query", "after")}
        assert "function-" not in body["detail"]
