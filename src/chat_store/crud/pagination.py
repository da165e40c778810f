"""Keyset pagination: a cursor is the sort key of a row, never an OFFSET."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute


@dataclass(frozen=True)
class PageRequest:
    limit: int = 20
    descending: bool = True
    # Sort-key values of the cursor row, and which side of it the page lies on.
    cursor: tuple[Any, ...] | None = None
    direction: Literal["after", "before"] = "after"


async def fetch_page(
    db: AsyncSession,
    stmt: Select[Any],
    sort_columns: Sequence[InstrumentedAttribute[Any]],
    page: PageRequest,
) -> tuple[list[Any], bool]:
    """Rows of one page in list order, and whether more rows lie beyond it.

    The last sort column must be unique (the id), so equal leading keys never skip or repeat a row.
    """
    key = tuple_(*sort_columns)
    # A "before" page is read walking backwards from the cursor, then turned around.
    walk_descending = page.descending if page.direction == "after" else not page.descending
    if page.cursor is not None:
        cursor = tuple_(*page.cursor)
        stmt = stmt.where(key < cursor if walk_descending else key > cursor)
    ordering = [col.desc() if walk_descending else col.asc() for col in sort_columns]
    result = await db.execute(stmt.order_by(*ordering).limit(page.limit + 1))
    rows = list(result.scalars())
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if page.direction == "before":
        rows.reverse()
    return rows, has_more
