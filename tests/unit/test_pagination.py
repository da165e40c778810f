"""The keyset helper: pages in both directions and orders, ties broken by the id, never OFFSET.

It runs against an in-memory SQLite table: the helper only builds and runs a statement.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from chat_store.crud.pagination import PageRequest, fetch_page


class _Base(DeclarativeBase):
    pass


class Item(_Base):
    __tablename__ = "item"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    rank: Mapped[int]
    kind: Mapped[str]


SORT = [Item.rank, Item.id]
# 30 rows in runs of equal rank, inserted in random order.
ROWS = [(item_id, item_id // 4, "even" if item_id % 2 == 0 else "odd") for item_id in range(30)]


@pytest.fixture
async def db() -> AsyncIterator[AsyncSession]:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    async with engine.begin() as connection:
        await connection.run_sync(_Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        shuffled = ROWS[:]
        random.Random(7).shuffle(shuffled)
        session.add_all(Item(id=i, rank=r, kind=k) for i, r, k in shuffled)
        await session.commit()
        yield session
    await engine.dispose()


def expected(descending: bool, kind: str | None = None) -> list[int]:
    rows = sorted((r, i) for i, r, k in ROWS if kind is None or k == kind)
    ids = [i for _, i in rows]
    return ids[::-1] if descending else ids


def key(item: Item) -> tuple[Any, ...]:
    return (item.rank, item.id)


async def walk(
    db: AsyncSession, *, limit: int, descending: bool, kind: str | None = None
) -> list[list[int]]:
    stmt = select(Item) if kind is None else select(Item).where(Item.kind == kind)
    pages: list[list[int]] = []
    cursor = None
    while True:
        request = PageRequest(limit=limit, descending=descending, cursor=cursor)
        rows, has_more = await fetch_page(db, stmt, SORT, request)
        pages.append([row.id for row in rows])
        if not has_more:
            return pages
        cursor = key(rows[-1])


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 4, 7, 10, 29, 30, 100])
async def test_walking_after_returns_every_row_once_in_order(
    db: AsyncSession, descending: bool, limit: int
) -> None:
    pages = await walk(db, limit=limit, descending=descending)

    assert [i for page in pages for i in page] == expected(descending)
    assert all(len(page) == limit for page in pages[:-1])
    assert 0 < len(pages[-1]) <= limit  # no empty page after an exact fit


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
async def test_before_returns_the_rows_just_before_the_cursor_in_list_order(
    db: AsyncSession, descending: bool
) -> None:
    order = expected(descending)
    items = {item.id: item for item in (await db.execute(select(Item))).scalars()}

    for position in (1, 5, 13, 29):
        cursor = key(items[order[position]])
        request = PageRequest(limit=4, descending=descending, cursor=cursor, direction="before")
        rows, has_more = await fetch_page(db, select(Item), SORT, request)
        assert [row.id for row in rows] == order[max(0, position - 4) : position]
        assert has_more is (position > 4)


@pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
async def test_walking_before_retraces_the_pages(db: AsyncSession, descending: bool) -> None:
    forward = await walk(db, limit=6, descending=descending)
    items = {item.id: item for item in (await db.execute(select(Item))).scalars()}

    backward: list[list[int]] = []
    cursor = key(items[forward[-1][0]])
    while True:
        request = PageRequest(limit=6, descending=descending, cursor=cursor, direction="before")
        rows, has_more = await fetch_page(db, select(Item), SORT, request)
        backward.append([row.id for row in rows])
        if not has_more:
            break
        cursor = key(rows[0])

    assert backward == forward[-2::-1]


async def test_the_cursor_past_the_end_gives_an_empty_page(db: AsyncSession) -> None:
    last = (await db.execute(select(Item).where(Item.id == expected(True)[-1]))).scalar_one()

    rows, has_more = await fetch_page(
        db, select(Item), SORT, PageRequest(limit=5, descending=True, cursor=key(last))
    )

    assert (rows, has_more) == ([], False)


async def test_the_statements_own_filters_are_kept(db: AsyncSession) -> None:
    pages = await walk(db, limit=4, descending=True, kind="even")

    assert [i for page in pages for i in page] == expected(True, kind="even")
