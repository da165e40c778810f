"""Postgres: `message.search_vector` (tsvector) and an expression over `chat_session.title`,
each in a GIN index led by user_id (btree_gin), so a common word is looked up among the owner's
rows only. Ranked by ts_rank_cd (it depends on the row and the query alone, so a hit's rank does
not move when other rows are written); excerpts by ts_headline, for the page's rows only.

Ranking reads each match's row (GIN keeps no positions), about 5 to 15 µs a match: a word in
tens of thousands of a user's messages would cost hundreds of milliseconds. So the first page
ranks at most `ranked_matches` messages, the newest matches (read newest first from
ix_message_user_id_created_at, stopping once enough match; the planner still takes the GIN
index when the matches are few, which it can tell only when it plans for the query's value:
see db.planned_for_its_values). When it ranked fewer than all, it reports the oldest it
ranked, and later pages rank the matches from that one on: the set ranked stays put between
pages (new messages only join it)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Select,
    Text,
    Uuid,
    bindparam,
    func,
    literal,
    literal_column,
    null,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from chat_store.crud.search import shared
from chat_store.crud.search.hits import (
    MARK_END,
    MARK_START,
    RankedFrom,
    SearchFound,
    SearchHit,
    SearchRequest,
)
from chat_store.db import planned_for_its_values

_M = shared.message_columns
_S = shared.session_columns

# About 25 words around the best match; titles whole.
_MESSAGE_HEADLINE = f"StartSel={MARK_START},StopSel={MARK_END},MaxWords=25,MinWords=12"
_TITLE_HEADLINE = f"StartSel={MARK_START},StopSel={MARK_END},HighlightAll=true"

_QUERY = func.chat_store_search_query(bindparam("b_query", type_=Text), type_=postgresql.TSQUERY)
_HAS_WORDS = select(func.numnode(_QUERY) > 0)


async def search(db: AsyncSession, request: SearchRequest) -> SearchFound:
    """The page's hits, best first, whether more follow, and where the ranking starts."""
    shape = shared.shape_of(request)
    params = shared.bound_params(request)
    params["b_query"] = request.websearch
    if request.ranked_matches is None:
        params["b_ranked_matches"] = _UNBOUNDED
    async with planned_for_its_values(db):
        rows = list(await db.execute(_statement(shape), params))
    hits = [SearchHit(*row[:_HIT_COLUMNS]) for row in rows]
    oldest = request.oldest_ranked
    if not shape.cursor and rows and rows[0].oldest_ranked_at is not None:
        oldest = RankedFrom(rows[0].oldest_ranked_at, rows[0].oldest_ranked_id)
    return SearchFound(hits[: request.limit], len(hits) > request.limit, oldest)


async def query_has_words(db: AsyncSession, websearch: str) -> bool:
    result = await db.execute(_HAS_WORDS, {"b_query": websearch})
    return bool(result.scalar_one())


@functools.cache
def _statement(shape: shared.Shape) -> Select[Any]:
    # chat_store_search_query(:b_query) is an IMMUTABLE function of a parameter: evaluated once
    # per execution, not per row.
    query = _QUERY
    vector = literal_column("message.search_vector", postgresql.TSVECTOR)
    matches = select(_M.id, _M.session_id, _M.created_at, vector.label("search_vector")).where(
        vector.op("@@")(query), *shared.message_filters(shape)
    )
    matches = shared.with_sessions(matches, shape)
    if shape.ranked_from:
        since = tuple_(
            bindparam("b_ranked_from_at", type_=_M.created_at.type),
            bindparam("b_ranked_from_id", type_=Uuid()),
        )
        matches = matches.where(tuple_(_M.created_at, _M.id) >= since)
    elif not shape.cursor:
        # The first page: the newest matches. (A later page of a ranking that was not bounded
        # ranks all matches again: bounding it now could leave out hits not yet shown.)
        matches = matches.order_by(_M.created_at.desc(), _M.id.desc()).limit(
            bindparam("b_ranked_matches", type_=Integer)
        )
    ranked = matches.cte("ranked")
    messages = select(
        ranked.c.id.label("hit_id"),
        ranked.c.id.label("message_id"),
        ranked.c.session_id.label("session_id"),
        func.ts_rank_cd(ranked.c.search_vector, query, 1, type_=Float).label("rank"),
    )
    parts: list[Select[Any]] = [messages]
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
    oldest_at: ColumnElement[Any] = null()
    oldest_id: ColumnElement[Any] = null()
    if not shape.cursor:
        # The oldest message ranked, when the bound was reached (the bound-th newest match).
        oldest = (
            select(ranked.c.created_at, ranked.c.id)
            .order_by(ranked.c.created_at.desc(), ranked.c.id.desc())
            .offset(bindparam("b_ranked_matches", type_=Integer) - 1)
            .limit(1)
            .subquery("oldest")
        )
        oldest_at = select(oldest.c.created_at).scalar_subquery()
        oldest_id = select(oldest.c.id).scalar_subquery()
    return shared.page_rows(
        shared.page_of(shape, parts),
        snippet,
        oldest_at.label("oldest_ranked_at"),
        oldest_id.label("oldest_ranked_id"),
    )


_UNBOUNDED = 2**31 - 1
_HIT_COLUMNS = 9  # page_rows' columns and the snippet: SearchHit's fields
