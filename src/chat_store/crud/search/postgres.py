"""Postgres: `message.search_vector` (tsvector) and an expression over `chat_session.title`,
each in a GIN index led by user_id (btree_gin), so a common word is looked up among the owner's
rows only. Ranked by ts_rank_cd (it depends on the row and the query alone, so a hit's rank does
not move when other rows are written); excerpts by ts_headline, for the page's rows only."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Float,
    Select,
    Text,
    bindparam,
    func,
    literal,
    literal_column,
    null,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud.search import shared
from chat_store.crud.search.hits import MARK_END, MARK_START, SearchHit, SearchRequest

_M = shared.message_columns
_S = shared.session_columns

# About 25 words around the best match; titles whole.
_MESSAGE_HEADLINE = f"StartSel={MARK_START},StopSel={MARK_END},MaxWords=25,MinWords=12"
_TITLE_HEADLINE = f"StartSel={MARK_START},StopSel={MARK_END},HighlightAll=true"

_QUERY = func.chat_store_search_query(bindparam("b_query", type_=Text), type_=postgresql.TSQUERY)
_HAS_WORDS = select(func.numnode(_QUERY) > 0)


async def search(db: AsyncSession, request: SearchRequest) -> list[SearchHit]:
    """The page's hits and one more, best first."""
    params = shared.bound_params(request)
    params["b_query"] = request.websearch
    result = await db.execute(_statement(shared.shape_of(request)), params)
    return [SearchHit(*row) for row in result]


async def query_has_words(db: AsyncSession, websearch: str) -> bool:
    result = await db.execute(_HAS_WORDS, {"b_query": websearch})
    return bool(result.scalar_one())


@functools.cache
def _statement(shape: shared.Shape) -> Select[Any]:
    # chat_store_search_query(:b_query) is an IMMUTABLE function of a parameter: evaluated once
    # per execution, not per row.
    query = _QUERY
    vector = literal_column("message.search_vector", postgresql.TSVECTOR)
    messages = select(
        _M.id.label("hit_id"),
        _M.id.label("message_id"),
        _M.session_id.label("session_id"),
        func.ts_rank_cd(vector, query, 1, type_=Float).label("rank"),
    ).where(vector.op("@@")(query), *shared.message_filters(shape))
    parts = [shared.with_sessions(messages, shape)]
    if shape.titles:
        # The expression of ix_chat_session_search, so that index answers it.
        title_vector = func.chat_store_search_vector(_S.title, type_=postgresql.TSVECTOR)
        weighted = func.setweight(title_vector, literal_column("'A'"))
        parts.append(
            select(
                _S.id.label("hit_id"),
                null().label("message_id"),
                _S.id.label("session_id"),
                func.ts_rank_cd(weighted, query, 1, type_=Float).label("rank"),
            ).where(title_vector.op("@@")(query), *shared.title_filters(shape))
        )
    # Excerpts only for the page: ts_headline parses the whole text again.
    snippet = func.coalesce(
        func.chat_store_search_snippet(
            func.coalesce(_M.content, _M.partial_content), query, literal(_MESSAGE_HEADLINE)
        ),
        func.chat_store_search_snippet(_S.title, query, literal(_TITLE_HEADLINE)),
        "",
    )
    return shared.page_rows(shared.page_of(shape, parts), snippet)
