"""SQLite: FTS5 tables `message_fts` and `chat_session_fts`, with the owner's id as a column so
that FTS5 matches within one owner's rows; ranked by bm25 (lower is better, negated here so that
higher is better on both engines), excerpts by snippet() and highlight()."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Float,
    Select,
    Text,
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

from chat_store.crud.search import shared
from chat_store.crud.search.hits import MARK_END, MARK_START, SearchHit, SearchRequest
from chat_store.models import ChatSession, Message

_M = shared.message_columns
_S = shared.session_columns

_SNIPPET_TOKENS = 25
# A text up to this long is shown whole (highlight() rather than snippet()), as Postgres'
# excerpt function does (WHOLE_TEXT_CHARS of migration 0003_search).
_WHOLE_TEXT_CHARS = 200
# A title that matches outranks a message with the same matches: on Postgres its words carry
# weight A (1.0) against the messages' D (0.1); bm25 has no weights across tables, so a factor.
_TITLE_FACTOR = 10.0


async def search(db: AsyncSession, request: SearchRequest) -> list[SearchHit]:
    """The page's hits and one more, best first; the excerpts read for the page's rows only."""
    shape = shared.shape_of(request)
    params = shared.bound_params(request)
    params["b_message_match"] = _fts5_match(request, "body")
    if shape.titles:
        params["b_title_match"] = _fts5_match(request, "title")
    rows = list(await db.execute(_statement(shape), params))
    snippets: dict[tuple[bool, int], str] = {}
    for is_message, statement, column in (
        (True, _MESSAGE_EXCERPTS, "body"),
        (False, _TITLES, "title"),
    ):
        rowids = [row.fts_rowid for row in rows if (row.message_id is not None) == is_message]
        if rowids:
            found = await db.execute(
                statement, {"b_match": _fts5_match(request, column), "b_rowids": rowids}
            )
            snippets.update({(is_message, rowid): text or "" for rowid, text in found})
    return [
        SearchHit(
            hit_id=row.hit_id,
            rank=row.rank,
            session_id=row.session_id,
            session_title=row.title,
            message_id=row.message_id,
            message_seq=row.seq,
            message_role=row.role,
            message_created_at=row.created_at,
            snippet=snippets.get((row.message_id is not None, row.fts_rowid), ""),
        )
        for row in rows
    ]


def _fts5_match(request: SearchRequest, column: str) -> str:
    """The caller's rows (the `owner` column holds the owner's id as SQLite stores it: 32 hex
    digits) whose text matches the query. FTS5 intersects the two, so a common word costs what
    it costs among the caller's rows, not among everyone's."""
    return f'owner : "{request.user_id.hex}" AND {column} : ({request.fts5})'


@functools.cache
def _statement(shape: shared.Shape) -> Select[Any]:
    message_fts: ColumnElement[Any] = literal_column("message_fts")
    messages = (
        select(
            _M.id.label("hit_id"),
            _M.id.label("message_id"),
            _M.session_id.label("session_id"),
            # Weights per column: the text counts, the owner column does not.
            (-func.bm25(message_fts, 1.0, 0.0, type_=Float)).label("rank"),
            literal_column("message_fts.rowid").label("fts_rowid"),
        )
        .select_from(table("message_fts"))
        .join(Message, literal_column("message.rowid") == literal_column("message_fts.rowid"))
        .where(
            message_fts.op("MATCH")(bindparam("b_message_match", type_=Text)),
            *shared.message_filters(shape, fts_first=True),
        )
    )
    parts = [shared.with_sessions(messages, shape)]
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
    page = shared.page_of(shape, parts)
    return shared.page_rows(page, page.c.fts_rowid)


def _excerpts(fts: str, excerpt: bool) -> Select[Any]:
    """Excerpts (or whole titles) of the page's rows, read by rowid: the MATCH is evaluated
    for those rows only."""
    fts_table: ColumnElement[Any] = literal_column(fts)
    marks = (literal(MARK_START, Text), literal(MARK_END, Text))
    whole = func.highlight(fts_table, 0, *marks, type_=Text)
    if excerpt:
        short = func.length(literal_column(f"{fts}.body")) <= _WHOLE_TEXT_CHARS
        cut = func.snippet(fts_table, 0, *marks, literal("…", Text), _SNIPPET_TOKENS, type_=Text)
        text: ColumnElement[Any] = case((short, whole), else_=cut)
    else:
        text = whole
    rowid: ColumnElement[Any] = literal_column(f"{fts}.rowid")
    return (
        select(rowid, text)
        .select_from(table(fts))
        .where(
            fts_table.op("MATCH")(bindparam("b_match", type_=Text)),
            rowid.in_(bindparam("b_rowids", expanding=True)),
        )
    )


_MESSAGE_EXCERPTS = _excerpts("message_fts", True)
_TITLES = _excerpts("chat_session_fts", False)
