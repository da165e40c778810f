"""GET /sessions: keyset pagination in both directions and orders, and the filters."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from chat_store.api.deps import AppState
from chat_store.ids import uuid7
from chat_store.models import ChatSession
from tests.assertions import assert_problem, assert_validation_error, parse_time
from tests.factories import API, Account, Factory

SESSIONS = f"{API}/sessions"


async def list_page(client: httpx.AsyncClient, account: Account, **params: Any) -> dict[str, Any]:
    response = await client.get(SESSIONS, params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    ids = [item["id"] for item in page["data"]]
    assert page["object"] == "list"
    assert page["first_id"] == (ids[0] if ids else None)
    assert page["last_id"] == (ids[-1] if ids else None)
    return page


async def walk(
    client: httpx.AsyncClient, account: Account, cursor: str, start: str | None, **params: Any
) -> list[list[str]]:
    """Follow `cursor` (after / before) page by page until has_more is false; the pages' ids."""
    pages = []
    position = {} if start is None else {cursor: start}
    while True:
        page = await list_page(client, account, **params, **position)
        pages.append([item["id"] for item in page["data"]])
        if not page["has_more"]:
            return pages
        assert len(pages) < 50, "has_more never became false"
        position = {cursor: page["last_id"] if cursor == "after" else page["first_id"]}


async def make_sessions(factory: Factory, account: Account, count: int) -> list[str]:
    """Created one after another: oldest first."""
    return [(await factory.chat_session(account, title=f"s{i}"))["id"] for i in range(count)]


async def set_activity(state: AppState, session_ids: list[str], at: datetime) -> None:
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id.in_([uuid.UUID(i) for i in session_ids]))
            .values(last_activity_at=at)
        )


async def test_list_needs_credentials_and_shows_only_own_sessions(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.account()
    other = await factory.account()
    mine = await factory.chat_session(owner)
    theirs = await factory.chat_session(other)

    assert_problem(await client.get(SESSIONS), 401, "unauthorized")
    assert [s["id"] for s in (await list_page(client, owner))["data"]] == [mine["id"]]
    # Another user's session is no cursor: the same 404 as a missing one.
    for cursor in ("after", "before"):
        response = await client.get(SESSIONS, params={cursor: theirs["id"]}, headers=owner.headers)
        assert_problem(response, 404, "session_not_found")
        response = await client.get(SESSIONS, params={cursor: str(uuid7())}, headers=owner.headers)
        assert_problem(response, 404, "session_not_found")


async def test_after_walks_every_session_once_in_order(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    created = await make_sessions(factory, account, 25)
    newest_first = list(reversed(created))

    pages = await walk(client, account, "after", None, limit=10)

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [i for page in pages for i in page] == newest_first
    # The default page is 20, newest activity first.
    default = await list_page(client, account)
    assert [item["id"] for item in default["data"]] == newest_first[:20]
    assert default["has_more"] is True
    # A page that ends exactly at the last row says so (no empty page after it).
    exact = await walk(client, account, "after", None, limit=5)
    assert [len(page) for page in exact] == [5, 5, 5, 5, 5]
    # After the last one: an empty page.
    end = await list_page(client, account, after=created[0])
    assert (end["data"], end["has_more"], end["first_id"]) == ([], False, None)


async def test_before_walks_back_page_by_page(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    await make_sessions(factory, account, 25)
    forward = await walk(client, account, "after", None, limit=10)

    backward = await walk(client, account, "before", forward[-1][0], limit=10)

    assert backward == list(reversed(forward[:-1]))
    # From the middle of a page: the rows just before it, in list order.
    middle = forward[1][3]
    page = await list_page(client, account, before=middle, limit=4)
    flat = [i for p in forward for i in p]
    position = flat.index(middle)
    assert [item["id"] for item in page["data"]] == flat[position - 4 : position]
    assert page["has_more"] is True


async def test_order_asc_walks_oldest_first(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    created = await make_sessions(factory, account, 25)

    forward = await walk(client, account, "after", None, limit=10, order="asc")
    backward = await walk(client, account, "before", forward[-1][0], limit=10, order="asc")

    assert [i for page in forward for i in page] == created
    assert backward == list(reversed(forward[:-1]))


async def test_list_is_ordered_by_last_activity_not_creation(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    created = await make_sessions(factory, account, 4)
    await set_activity(state, [created[0]], datetime.now(UTC) + timedelta(hours=1))

    page = await list_page(client, account)

    assert [item["id"] for item in page["data"]] == [created[0], created[3], created[2], created[1]]


async def test_equal_activity_times_neither_skip_nor_repeat_rows(
    client: httpx.AsyncClient, factory: Factory, state: AppState
) -> None:
    account = await factory.account()
    # Random client ids: among equal times the id order is not the creation order.
    ids = [str(uuid.uuid4()) for _ in range(9)]
    for session_id in ids:
        await factory.chat_session(account, id=session_id)
    same = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    runs = [ids[:4], ids[4:5], ids[5:]]  # two runs of ties around a distinct time
    for offset, run in enumerate(runs):
        await set_activity(state, run, same + timedelta(seconds=offset))
    oldest_first = [i for run in runs for i in sorted(run, key=uuid.UUID)]

    for order, expected in (("asc", oldest_first), ("desc", oldest_first[::-1])):
        forward = await walk(client, account, "after", None, limit=2, order=order)
        assert [i for page in forward for i in page] == expected
        backward = await walk(client, account, "before", forward[-1][0], limit=2, order=order)
        assert backward == list(reversed(forward[:-1]))


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"order": "sideways"},
        {"after": "not-a-uuid"},
        {"before": "12345"},
    ],
)
async def test_bad_paging_parameters_are_refused(
    client: httpx.AsyncClient, factory: Factory, params: dict[str, Any]
) -> None:
    account = await factory.account()

    response = await client.get(SESSIONS, params=params, headers=account.headers)

    assert_validation_error(response, "query", next(iter(params)))


async def test_limit_100_and_after_with_before_together(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    created = await make_sessions(factory, account, 2)

    assert len((await list_page(client, account, limit=100))["data"]) == 2
    both = await client.get(
        SESSIONS, params={"after": created[0], "before": created[1]}, headers=account.headers
    )
    assert_validation_error(both, "query")


# --- the cursor that holds a place


async def walk_by_cursor(
    client: httpx.AsyncClient, account: Account, **params: Any
) -> list[list[str]]:
    """Follow `next_cursor` from the first page until has_more is false; the pages' ids."""
    pages = []
    page = await list_page(client, account, **params)
    while True:
        pages.append([item["id"] for item in page["data"]])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return pages
        assert len(pages) < 50, "has_more never became false"
        page = await list_page(client, account, cursor=page["next_cursor"], limit=params["limit"])


async def test_next_cursor_walks_as_after_does_in_both_orders(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    await make_sessions(factory, account, 7)

    for order in ("desc", "asc"):
        by_cursor = await walk_by_cursor(client, account, limit=3, order=order)
        assert by_cursor == await walk(client, account, "after", None, limit=3, order=order)
        # A `before` page's cursor continues backwards, from the page's first item.
        before = await list_page(client, account, before=by_cursor[-1][0], limit=2, order=order)
        back = await list_page(client, account, cursor=before["next_cursor"], limit=2)
        flat = [i for page in by_cursor for i in page]
        assert [item["id"] for item in before["data"]] == flat[4:6]
        assert [item["id"] for item in back["data"]] == flat[2:4]
        assert back["has_more"] is True
        back = await list_page(client, account, cursor=back["next_cursor"], limit=2)
        assert [item["id"] for item in back["data"]] == flat[:2]
        assert (back["has_more"], back["next_cursor"]) == (False, None)


async def test_a_session_that_moves_during_the_walk_does_not_repeat_the_list(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    created = await make_sessions(factory, account, 6)
    first = await list_page(client, account, limit=3)
    assert [item["id"] for item in first["data"]] == created[:2:-1]

    # The page's last session gets a message: it moves to the top of the list.
    await factory.message(account, first["last_id"], role="user", content="moved")
    by_cursor = await list_page(client, account, cursor=first["next_cursor"], limit=3)
    by_id = await list_page(client, account, after=first["last_id"], limit=3)

    assert [item["id"] for item in by_cursor["data"]] == created[2::-1]
    assert by_cursor["has_more"] is False
    # `after` continues from where the session is now, the top: two of the first page again.
    assert [item["id"] for item in by_id["data"]] == [created[5], created[4], created[2]]


def encoded(fields: Any) -> str:
    raw = json.dumps(fields).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


SOME_ID = "019a2a67-c5f6-72f5-a636-ff6dd6f372c8"


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 at all!",
        encoded([]),
        encoded([1, 2, 3, 4]),
        encoded(["after", "desc", "2026-11-26T12:00:00", SOME_ID]),  # no offset
        encoded(["after", "desc", "0001-01-01T00:00:00+14:00", SOME_ID]),  # before year 1 in UTC
        encoded(["after", "desc", "9999-12-31T23:59:59-14:00", SOME_ID]),  # past 9999 in UTC
        encoded(["sideways", "desc", "2026-11-26T12:00:00+00:00", SOME_ID]),
        encoded(["after", "up", "2026-11-26T12:00:00+00:00", SOME_ID]),
        encoded(["after", "desc", "2026-11-26T12:00:00+00:00", "not an id"]),
        encoded({"after": "desc"}),
        "A" * 201,
    ],
)
async def test_a_cursor_the_list_did_not_give_is_refused(
    client: httpx.AsyncClient, factory: Factory, cursor: str
) -> None:
    account = await factory.account()

    response = await client.get(SESSIONS, params={"cursor": cursor}, headers=account.headers)

    assert_validation_error(response, "query", "cursor")


async def test_a_cursor_goes_alone_and_keeps_its_order(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    created = await make_sessions(factory, account, 3)
    cursor = (await list_page(client, account, limit=1))["next_cursor"]
    assert cursor is not None

    with_after = await client.get(
        SESSIONS, params={"cursor": cursor, "after": created[0]}, headers=account.headers
    )
    assert_validation_error(with_after, "query", "cursor")
    other_order = await client.get(
        SESSIONS, params={"cursor": cursor, "order": "asc"}, headers=account.headers
    )
    assert_validation_error(other_order, "query", "order")
    # The same order given again is fine.
    same = await list_page(client, account, cursor=cursor, order="desc", limit=1)
    assert [item["id"] for item in same["data"]] == [created[1]]


# --- filters


async def test_filter_favorite(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    created = await make_sessions(factory, account, 4)
    for favorite in (created[0], created[2]):
        await client.patch(f"{SESSIONS}/{favorite}/favorite", headers=account.headers)

    favorites = await list_page(client, account, favorite="true")
    others = await list_page(client, account, favorite="false")

    assert [s["id"] for s in favorites["data"]] == [created[2], created[0]]
    assert all(s["is_favorite"] for s in favorites["data"])
    assert [s["id"] for s in others["data"]] == [created[3], created[1]]
    # The filter holds across pages.
    pages = await walk(client, account, "after", None, limit=1, favorite="true")
    assert pages == [[created[2]], [created[0]]]


async def test_filter_status(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    created = await make_sessions(factory, account, 3)
    await client.patch(
        f"{SESSIONS}/{created[1]}", json={"status": "ended"}, headers=account.headers
    )

    ended = await list_page(client, account, status="ended")
    active = await list_page(client, account, status="active")

    assert [s["id"] for s in ended["data"]] == [created[1]]
    assert [s["id"] for s in active["data"]] == [created[2], created[0]]
    assert_validation_error(
        await client.get(SESSIONS, params={"status": "paused"}, headers=account.headers),
        "query",
        "status",
    )


async def test_filter_q_matches_title_substrings_literally(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    account = await factory.account()
    titles = [
        "Billing refactor",
        "fix BILLING bug",
        "Other",
        "100% done",
        "1000 done",
        "a_b",
        "axb",
    ]
    for title in titles:
        await factory.chat_session(account, title=title)
    await factory.chat_session(account)  # untitled

    async def titles_for(q: str) -> set[str]:
        page = await list_page(client, account, q=q)
        return {s["title"] for s in page["data"]}

    assert await titles_for("billing") == {"Billing refactor", "fix BILLING bug"}
    # % and _ are text here, not LIKE wildcards.
    assert await titles_for("0%") == {"100% done"}
    assert await titles_for("a_b") == {"a_b"}
    assert await titles_for("nothing like it") == set()


async def test_filter_repo(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    api = await factory.chat_session(account, workspace={"repo": "github.com/acme/api"})
    await factory.chat_session(account, workspace={"repo": "github.com/acme/api-v2"})
    await factory.chat_session(account)

    page = await list_page(client, account, repo="github.com/acme/api")

    assert [s["id"] for s in page["data"]] == [api["id"]]


async def test_filter_updated_after(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    touched = await factory.chat_session(account, title="touched")
    untouched = await factory.chat_session(account, title="untouched")
    since = untouched["updated_at"]
    renamed = await client.patch(
        f"{SESSIONS}/{touched['id']}", json={"title": "renamed"}, headers=account.headers
    )
    assert parse_time(renamed.json()["updated_at"]) > parse_time(since)

    page = await list_page(client, account, updated_after=since)
    # The same instant written with another offset.
    shifted = parse_time(since).astimezone(timezone(timedelta(hours=2))).isoformat()
    same = await list_page(client, account, updated_after=shifted)
    earlier = await list_page(client, account, updated_after="2000-01-01T00:00:00Z")

    assert [s["id"] for s in page["data"]] == [touched["id"]]
    assert [s["id"] for s in same["data"]] == [touched["id"]]
    assert len(earlier["data"]) == 2


@pytest.mark.parametrize("value", ["yesterday", "2026-11-26T12:00:00"])
async def test_updated_after_must_be_a_time_with_an_offset(
    client: httpx.AsyncClient, factory: Factory, value: str
) -> None:
    account = await factory.account()
    await factory.chat_session(account)

    response = await client.get(SESSIONS, params={"updated_after": value}, headers=account.headers)

    assert_validation_error(response, "query", "updated_after")


async def test_filters_combine(client: httpx.AsyncClient, factory: Factory) -> None:
    account = await factory.account()
    wanted = await factory.chat_session(account, title="deploy api", workspace={"repo": "r"})
    await client.patch(f"{SESSIONS}/{wanted['id']}/favorite", headers=account.headers)
    not_favorite = await factory.chat_session(account, title="deploy web", workspace={"repo": "r"})
    other_repo = await factory.chat_session(account, title="deploy db", workspace={"repo": "s"})
    await client.patch(f"{SESSIONS}/{other_repo['id']}/favorite", headers=account.headers)

    page = await list_page(client, account, favorite="true", repo="r", q="deploy", status="active")

    assert [s["id"] for s in page["data"]] == [wanted["id"]]
    assert not_favorite["id"] not in [s["id"] for s in page["data"]]
