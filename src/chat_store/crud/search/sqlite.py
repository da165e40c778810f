"""SQLite: FTS5 tables `message_fts_0` to `message_fts_f` (the owner's messages are in the one
named by the last hex digit of its id) and `chat_session_fts`, with the owner's id as a column
so that FTS5 matches within one owner's rows; ranked by bm25 (lower is better, negated here so
that higher is better on both engines), excerpts by snippet() and highlight(), all in one
statement.

bm25 costs 2 to 10 µs a match, besides what it costs once per search to count how many rows
of the table have each of the query's words (a sixteenth of the messages). So the first page
ranks at most `ranked_matches` messages, the newest matches (in rowid order: the order they
were stored in), and reports the oldest it ranked when it ranked fewer than all; later pages
rank the matches from that one on, as on Postgres. (A write between two pages may still move
ranks: it changes how rare a word is in the table, which bm25 weighs.)"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    null,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE

from chat_store.crud.search import shared
from chat_store.crud.search.hits import (
    MARK_END,
    MARK_START,
    SearchFound,
    SearchRequest,
)
from chat_store.models import ChatSession, Message
from chat_store.models.search import message_fts_table

_M = shared.message_columns
_S = shared.session_columns

_SNIPPET_TOKENS = 25
# A text up to this long is shown whole (highlight() rather than snippet()), as Postgres'
# excerpt function does (WHOLE_TEXT_CHARS of migration 0003_search).
_WHOLE_TEXT_CHARS = 200
# A title that matches outranks a message with the same matches: on Postgres its words carry
# weight A (1.0) against the messages' D (0.1); bm25 has no weights across tables, so a factor.
_TITLE_FACTOR = 10.0


async def search(db: AsyncSession, request: SearchRequest) -> SearchFound:
    """The page's hits with their excerpts, whether more follow, and where the ranking
    starts: one statement (each costs a few hand-overs to the database's thread and back)."""
    shape = shared.shape_of(request)
    params = shared.bound_params(request)
    params["b_message_match"] = _fts5_match(request, "body")
    if shape.titles:
        params["b_title_match"] = _fts5_match(request, "title")
    statement = _statement(shape, message_fts_table(request.user_id))
    rows = list(await db.execute(statement, params))
    return shared.found(request, rows)


def _fts5_match(request: SearchRequest, column: str) -> str:
    """The caller's rows (the `owner` column holds the owner's id as SQLite stores it: 32 hex
    digits) whose text matches the query. FTS5 intersects the two, so a common word costs what
    it costs among the caller's rows, not among everyone's."""
    return f'owner : "{request.user_id.hex}" AND {column} : ({request.fts5})'


@functools.cache
def _statement(shape: shared.Shape, message_fts: str) -> Select[Any]:
    ranked = _ranked(shape, message_fts)
    parts = [
        select(
            ranked.c.hit_id,
            ranked.c.message_id,
            ranked.c.session_id,
            ranked.c.rank,
            ranked.c.fts_rowid,
        )
    ]
    if shape.titles:
        session_fts: ColumnElement[Any] = literal_column("chat_session_fts")
        rank = -func.bm25(session_fts, 1.0, 0.0, type_=Float) * _TITLE_FACTOR
        parts.append(
            select(
                _S.id.label("hit_id"),
                null().label("message_id"),
                _S.id.label("session_id"),
                rank.label("rank"),
                literal_column("chat_session_fts.rowid").label("fts_rowid"),
            )
            .select_from(table("chat_session_fts"))
            .join(
                ChatSession,
                literal_column("chat_session.rowid") == literal_column("chat_session_fts.rowid"),
            )
            .where(
                session_fts.op("MATCH")(bindparam("b_title_match", type_=Text)),
                *shared.title_filters(shape, fts_first=True),
            )
        )
    page = shared.page_of(shape, parts).cte("page")
    excerpts = [_excerpts(page, message_fts, "b_message_match", of_messages=True)]
    if shape.titles:
        excerpts.append(_excerpts(page, "chat_session_fts", "b_title_match", of_messages=False))
    snippet = func.coalesce(*(excerpt.c.excerpt for excerpt, _ in excerpts), "")
    return shared.page_rows(
        page,
        snippet,
        *shared.oldest_ranked(
            shape,
            at=ranked.c.created_at,
            message_id=ranked.c.hit_id,
            order=[ranked.c.fts_rowid.desc()],
            fts_rowid=ranked.c.fts_rowid,
        ),
        outer=excerpts,
    )


def _ranked(shape: shared.Shape, fts: str) -> CTE:
    """The messages to rank: every match, or (a bounded ranking) the newest matches. FTS5 hands
    out its matches in rowid order, which is the order the rows were stored in: the newest
    `b_ranked_matches` are read from the newest on and the scan stops there, so bm25, about
    2 to 10 µs a match, runs for those only."""
    message_fts: ColumnElement[Any] = literal_column(fts)
    fts_rowid: ColumnElement[Any] = literal_column(f"{fts}.rowid", Integer)
    matches: Select[Any] = (
        select(
            _M.id.label("hit_id"),
            _M.id.label("message_id"),
            _M.session_id.label("session_id"),
            # Weights per column: the text counts, the owner column does not.
            (-func.bm25(message_fts, 1.0, 0.0, type_=Float)).label("rank"),
            fts_rowid.label("fts_rowid"),
            _M.created_at.label("created_at"),
        )
        .select_from(table(fts))
        .join(Message, literal_column("message.rowid") == fts_rowid)
        .where(
            message_fts.op("MATCH")(bindparam("b_message_match", type_=Text)),
            *shared.message_filters(shape, fts_first=True),
        )
    )
    matches = shared.with_sessions(matches, shape)
    if not shape.cursor:
        matches = matches.order_by(fts_rowid.desc()).limit(
            bindparam("b_ranked_matches", type_=Integer)
        )
    elif shape.ranked_from:
        # A later page of a bounded ranking: the matches from the oldest the first page ranked
        # on (and those stored since).
        matches = matches.where(fts_rowid >= bindparam("b_ranked_from_rowid", type_=Integer))
    # A later page of a ranking that was not bounded ranks all matches again: they were few.
    return matches.cte("ranked")


def _excerpts(
    page: CTE, fts: str, match: str, *, of_messages: bool
) -> tuple[CTE, ColumnElement[bool]]:
    """Excerpts (or whole titles) of the page's messages (or titles): the matches between the
    lowest and the highest of their rowids, read in one pass, with the page's picked out. (A
    lookup per rowid costs FTS5 a seek for each of the query's words in each segment of its
    index: 0.1 to 0.7 ms a row with the dozens of segments that rows indexed one by one
    leave, 2 to 10 ms for a page of 20, against 0.5 to 2 ms for the pass.) MATERIALIZED: read
    once, not looked up for each row of the page."""
    here = page.c.message_id.is_not(None) if of_messages else page.c.message_id.is_(None)
    fts_table: ColumnElement[Any] = literal_column(fts)
    marks = (literal(MARK_START, Text), literal(MARK_END, Text))
    whole = func.highlight(fts_table, 0, *marks, type_=Text)
    text: ColumnElement[Any] = whole
    if of_messages:
        short = func.length(literal_column(f"{fts}.body")) <= _WHOLE_TEXT_CHARS
        cut = func.snippet(fts_table, 0, *marks, literal("…", Text), _SNIPPET_TOKENS, type_=Text)
        text = case((short, whole), else_=cut)
    rowid: ColumnElement[Any] = literal_column(f"{fts}.rowid", Integer)
    # `+`: the list is a filter on the pass, not a lookup per value.
    picked: ColumnElement[Any] = literal_column(f"+{fts}.rowid", Integer)
    found = (
        select(rowid.label("fts_rowid"), text.label("excerpt"))
        .select_from(table(fts))
        .where(
            fts_table.op("MATCH")(bindparam(match, type_=Text)),
            rowid >= select(func.min(page.c.fts_rowid)).where(here).scalar_subquery(),
            rowid <= select(func.max(page.c.fts_rowid)).where(here).scalar_subquery(),
            picked.in_(select(page.c.fts_rowid).where(here)),
        )
        .cte(f"{fts}_excerpt")
        .prefix_with("MATERIALIZED")
    )
    return found, and_(here, found.c.fts_rowid == page.c.fts_rowid)
