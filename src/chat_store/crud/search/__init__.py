"""Full-text search over one owner's messages and session titles.

The index is the database's own (migration 0003_search), kept by triggers in the transaction of
every write, so a search sees exactly what is committed. The statements are written per dialect
(`postgres`, `sqlite`): the engines share no syntax for any of this; what they do share, the
filters and the page of hits, is `shape`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud.search import postgres, sqlite
from chat_store.crud.search.hits import (
    MARK_END,
    MARK_START,
    RankedFrom,
    SearchFilters,
    SearchFound,
    SearchHit,
    SearchRequest,
)
from chat_store.db import read_only

__all__ = [
    "MARK_END",
    "MARK_START",
    "RankedFrom",
    "SearchFilters",
    "SearchFound",
    "SearchHit",
    "SearchRequest",
    "query_has_words",
    "search",
]


async def search(db: AsyncSession, request: SearchRequest) -> SearchFound:
    """One page of hits, best first (equal ranks: newest id first), and whether more follow.

    Read on a connection of its own where the database has them for reads (SQLite): searches
    run side by side rather than one after another on the one connection that writes."""
    async with read_only(db) as reader:
        if reader.get_bind().dialect.name == "postgresql":
            return await postgres.search(reader, request)
        return await sqlite.search(reader, request)


async def query_has_words(db: AsyncSession, websearch: str) -> bool:
    """Whether the query keeps a word once the language's stop words are dropped (Postgres
    with a language such as `english`; `simple` and SQLite have no stop words)."""
    if db.get_bind().dialect.name != "postgresql":
        return True
    return await postgres.query_has_words(db, websearch)


async def queries_have_words(db: AsyncSession, websearches: Sequence[str]) -> list[bool]:
    """query_has_words of each, in one round trip."""
    if not websearches or db.get_bind().dialect.name != "postgresql":
        return [True] * len(websearches)
    return await postgres.queries_have_words(db, websearches)
