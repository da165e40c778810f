"""Postgres: `message.search_vector` (tsvector, each word tagged with its owner: migration
0007_search_owned) in a GIN index of its own, so a word's list in the index holds one user's
messages; and `chat_session.search_vector`, the title's (stored, untagged), in a GIN index
led by user_id (btree_gin). Ranked by ts_rank_cd (it depends on the row and the query alone,
so a hit's rank does not move when other rows are written); excerpts by ts_headline, for the
page's rows only.

Ranking reads each match's row (GIN keeps no positions), about 2 to 5 µs a match: a word in
tens of thousands of a user's messages would cost a hundred milliseconds. So the first page
ranks at most `ranked_matches` messages, the newest matches. Where they are read from is
decided in the statement by a probe of the caller's 200 newest messages (as filtered): when
18 or more match (or 60 have its words: a phrase), the query is common and its matches are
read newest first from ix_message_user_id_created_at, stopping once enough match; else the
GIN index finds them all.
The planner cannot tell the two apart itself: it takes the tagged words and the owner for
independent, and so thinks a user's matches 20 times (the number of users) fewer than they are.
When it ranked fewer than all, it reports the oldest it ranked, and later pages rank the
matches from that one on: the set ranked stays put between pages (new messages only join it).
Statements run on connections that plan them for their values (db.planned_for_its_values)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    Select,
    Text,
    Uuid,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnClause, ColumnElement
from sqlalchemy.sql.selectable import CTE

from chat_store.crud.search import shared
from chat_store.crud.search.hits import (
    MARK_END,
    MARK_START,
    SearchFound,
    SearchRequest,
)
from chat_store.db import planned_for_its_values
from chat_store.models import Message

_M = shared.message_columns
_S = shared.session_columns

# About 25 words around the best match; titles whole.
_MESSAGE_HEADLINE = f"StartSel={MARK_START},StopSel={MARK_END},MaxWords=25,MinWords=12"
_TITLE_HEADLINE = f"StartSel={MARK_START},StopSel={MARK_END},HighlightAll=true"

_QUERY = func.chat_store_search_query(bindparam("b_query", type_=Text), type_=postgresql.TSQUERY)
# The query with each word tagged with the caller's id, as the messages' vectors are.
_OWNED_QUERY = func.chat_store_owned_query(
    bindparam("b_user_id", type_=Uuid()), _QUERY, type_=postgresql.TSQUERY
)
_VECTOR = literal_column("message.search_vector", postgresql.TSVECTOR)
_CTID: ColumnClause[Any] = literal_column("message.ctid")
# What the GIN index finds for a query: its words, phrases taken as plain ANDs (the index keeps
# no positions: each message with the words is read to check the phrase).
_CANDIDATES_QUERY = cast(
    func.regexp_replace(cast(_OWNED_QUERY, Text), "<(-|[0-9]+)>", "&", "g"), postgresql.TSQUERY
)
# A query is common when, of the caller's PROBE_ROWS newest messages (those the filters let
# through), at least COMMON_HITS match it, or at least COMMON_CANDIDATES have its words (a
# phrase of common words, rare as a phrase, would have the GIN index find and read every
# message with the words): its newest matches are then read newest first.
# Reading newest first costs about ranked_matches / share rows, the GIN index the user's
# messages * share: they cost the same near 7% (docs/operations.md). A probe of 100 with 7
# hits sent words rarer than that the slow way by chance: 2% of the searches of a word in 2.8%
# of the messages and 18% of one in 4.6% read 18,000 or 11,000 rows (the slowest searches,
# 200 to 300 ms at 8 at a time). 200 with 18 (9%) sends a word in 4.6% that way 1 time in
# 200, and one in 15% the GIN way 1 time in 250, for about 100 more rows read by the probe.
PROBE_ROWS = 200
COMMON_HITS = 18
COMMON_CANDIDATES = 60
_HAS_WORDS = select(func.numnode(_QUERY) > 0)


async def search(db: AsyncSession, request: SearchRequest) -> SearchFound:
    """The page's hits, best first, whether more follow, and where the ranking starts."""
    shape = shared.shape_of(request)
    params = shared.bound_params(request)
    params["b_query"] = request.websearch
    async with planned_for_its_values(db) as planned:
        rows = list(await planned.execute(_statement(shape), params))
    return shared.found(request, rows)


async def query_has_words(db: AsyncSession, websearch: str) -> bool:
    result = await db.execute(_HAS_WORDS, {"b_query": websearch})
    return bool(result.scalar_one())


async def queries_have_words(db: AsyncSession, websearches: Sequence[str]) -> list[bool]:
    """query_has_words of each, in one statement."""
    checks = [
        func.numnode(
            func.chat_store_search_query(
                bindparam(f"b_query_{index}", value, type_=Text), type_=postgresql.TSQUERY
            )
        )
        > 0
        for index, value in enumerate(websearches)
    ]
    row = (await db.execute(select(*checks))).one()
    return [bool(value) for value in row]


@functools.cache
def _statement(shape: shared.Shape) -> Select[Any]:
    # chat_store_search_query(:b_query) is an IMMUTABLE function of a parameter: evaluated once
    # per execution, not per row; so is its tagged form.
    query = _QUERY
    ranked = _ranked(shape)
    messages = select(
        ranked.c.id.label("hit_id"),
        ranked.c.id.label("message_id"),
        ranked.c.session_id.label("session_id"),
        func.ts_rank_cd(ranked.c.search_vector, _OWNED_QUERY, 1, type_=Float).label("rank"),
    )
    parts: list[Select[Any]] = [messages]
    if shape.titles:
        # chat_session.search_vector: the title's, stored (migration 0007_search_owned).
        title_vector = literal_column("chat_session.search_vector", postgresql.TSVECTOR)
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
    return shared.page_rows(
        shared.page_of(shape, parts).subquery("page"),
        snippet,
        *shared.oldest_ranked(
            shape,
            at=ranked.c.created_at,
            message_id=ranked.c.id,
            order=[ranked.c.created_at.desc(), ranked.c.id.desc()],
        ),
    )


def _ranked(shape: shared.Shape) -> CTE:
    """The messages to rank: every match, or (a bounded ranking) the newest matches, from one
    of two starts chosen by a probe of the caller's newest messages."""
    if shape.cursor and not shape.ranked_from:
        # A later page of a ranking that was not bounded ranks all matches again (bounding it
        # now could leave out hits not yet shown): they were few, the index finds them.
        return _matches(shape, newest_first=False).cte("ranked")
    newest = (
        shared.with_sessions(select(_VECTOR.label("search_vector")).select_from(Message), shape)
        .where(*shared.message_filters(shape))
        .order_by(_M.created_at.desc(), _M.id.desc())
        .limit(PROBE_ROWS)
        .subquery("newest")
    )
    sample = newest.c.search_vector
    hits = func.count().filter(sample.op("@@")(_OWNED_QUERY))
    candidates = func.count().filter(sample.op("@@")(_CANDIDATES_QUERY))
    probe = (
        select(or_(hits >= COMMON_HITS, candidates >= COMMON_CANDIDATES).label("common"))
        .select_from(newest)
        .cte("probe")
    )
    common = select(probe.c.common).scalar_subquery()
    by_index = _matches(shape, newest_first=False, keys_only=True).where(~common)
    by_time = _matches(shape, newest_first=True, keys_only=True).where(common)
    chosen = union_all(_bounded(by_index, shape), _bounded(by_time, shape)).subquery("chosen")
    # The vectors of the chosen only, each fetched again by its row's address (ctid): sorting
    # the matches by time with their vectors (about 600 bytes each) cost more than this.
    again = _M.id.table.alias("chosen_message")
    return (
        select(
            chosen.c.id,
            chosen.c.session_id,
            chosen.c.created_at,
            literal_column("chosen_message.search_vector", postgresql.TSVECTOR).label(
                "search_vector"
            ),
        )
        .select_from(chosen.join(again, literal_column("chosen_message.ctid") == chosen.c.ctid))
        .cte("ranked")
    )


def _matches(shape: shared.Shape, *, newest_first: bool, keys_only: bool = False) -> Select[Any]:
    """The caller's matching messages, found by the GIN index (the owner's comparison out of
    any index's reach: the planner, which takes the tagged words and the owner for independent
    though each tagged word is one owner's, would AND the GIN index with the owner's btree), or
    read from the owner's btree newest first (the match out of the GIN index's reach, which
    the planner would otherwise take, thinking the matches 20 times fewer than they are)."""
    # ts_match_vq is the function behind @@: called by name, it is out of the GIN index's
    # reach and the planner, which has no estimate for it, takes it for a third of the rows.
    match: ColumnElement[bool] = (
        func.ts_match_vq(_VECTOR, _OWNED_QUERY, type_=Boolean)
        if newest_first
        else _VECTOR.op("@@")(_OWNED_QUERY)
    )
    last = _CTID.label("ctid") if keys_only else _VECTOR.label("search_vector")
    matches = select(_M.id, _M.session_id, _M.created_at, last).where(
        match, *shared.message_filters(shape, owner_by_index=newest_first)
    )
    return shared.with_sessions(matches, shape)


def _bounded(matches: Select[Any], shape: shared.Shape) -> Select[Any]:
    if shape.ranked_from:
        # A later page of a bounded ranking: the matches from the oldest the first page ranked.
        since = tuple_(
            bindparam("b_ranked_from_at", type_=_M.created_at.type),
            bindparam("b_ranked_from_id", type_=Uuid()),
        )
        return matches.where(tuple_(_M.created_at, _M.id) >= since)
    # The first page: the newest matches.
    return matches.order_by(_M.created_at.desc(), _M.id.desc()).limit(
        bindparam("b_ranked_matches", type_=Integer)
    )
