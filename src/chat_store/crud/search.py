"""Full-text search over one owner's messages and session titles.

The index is the database's own (migration 0003_search), kept by triggers in the transaction of
every write, so a search sees exactly what is committed:

- Postgres: `message.search_vector` (tsvector) and an expression over `chat_session.title`, each
  in a GIN index led by user_id (btree_gin), so a common word is looked up among the owner's rows
  only. Ranked by ts_rank_cd (it depends on the row and the query alone, so a hit's rank does not
  move when other rows are written); excerpts by ts_headline, for the page's rows only.
- SQLite: FTS5 tables `message_fts` and `chat_session_fts`, with the owner's id as a column so
  that FTS5 matches within one owner's rows; ranked by bm25 (lower is better, negated here so
  that higher is better on both), excerpts by snippet() and highlight().

The statements are written per dialect: the engines share no syntax for any of this.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    Select,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    null,
    select,
    table,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from chat_store.models import ChatSession, Message

_M = cast(Table, Message.__table__).c
_S = cast(Table, ChatSession.__table__).c

# The matches in an excerpt lie between these two characters (Unicode private use). The
# indexed texts have them turned into spaces (migration 0003_search), so any found in an excerpt
# are marks.
MARK_START = "\ue000"
MARK_END = "\ue001"

# About 25 words around the best match; titles whole.
_PG_MESSAGE_HEADLINE = f"StartSel={MARK_START},StopSel={MARK_END},MaxWords=25,MinWords=12"
_PG_TITLE_HEADLINE = f"StartSel={MARK_START},StopSel={MARK_END},HighlightAll=true"
_SNIPPET_TOKENS = 25
# A text up to this long is shown whole (highlight() rather than snippet()), as Postgres'
# excerpt function does (WHOLE_TEXT_CHARS of migration 0003_search).
_WHOLE_TEXT_CHARS = 200
# A title that matches outranks a message with the same matches: on Postgres its words carry
# weight A (1.0) against the messages' D (0.1); bm25 has no weights across tables, so a factor.
_SQLITE_TITLE_FACTOR = 10.0
_OPEN = ("pending", "in_progress")


@dataclass(frozen=True)
class SearchFilters:
    """What a search is narrowed to; None leaves a filter out."""

    session_id: uuid.UUID | None = None
    role: str | None = None
    repo: str | None = None
    favorite: bool | None = None
    status: str | None = None  # the session's
    after: datetime | None = None  # the hit's time (a message's created_at, a session's)
    before: datetime | None = None

    @property
    def given(self) -> frozenset[str]:
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) is not None)


@dataclass(frozen=True)
class SearchRequest:
    user_id: uuid.UUID
    # The query in each engine's syntax (search_query.SearchQuery.websearch() / .fts5()).
    websearch: str
    fts5: str
    filters: SearchFilters
    limit: int
    # (rank, hit id) of the last hit of the previous page: this page continues below it.
    cursor: tuple[float, uuid.UUID] | None = None


@dataclass(frozen=True)
class SearchHit:
    hit_id: uuid.UUID  # the message's id, or the session's for a title
    rank: float
    session_id: uuid.UUID
    session_title: str | None
    message_id: uuid.UUID | None
    message_seq: int | None
    message_role: str | None
    message_created_at: datetime | None
    snippet: str  # with MARK_START/MARK_END around the matches


async def search(db: AsyncSession, request: SearchRequest) -> tuple[list[SearchHit], bool]:
    """One page of hits, best first (equal ranks: newest id first), and whether more follow."""
    if db.get_bind().dialect.name == "postgresql":
        hits = await _search_postgres(db, request)
    else:
        hits = await _search_sqlite(db, request)
    return hits[: request.limit], len(hits) > request.limit


async def query_has_words(db: AsyncSession, websearch: str) -> bool:
    """Whether the query keeps a word once the language's stop words are dropped (Postgres
    with a language such as `english`; `simple` and SQLite have no stop words)."""
    if db.get_bind().dialect.name != "postgresql":
        return True
    result = await db.execute(_HAS_WORDS, {"b_query": websearch})
    return bool(result.scalar_one())


# The statements are built once per shape (which filters are given, whether a cursor is), with
# every value a bound parameter: building and walking one per request cost more CPU than the
# database spends on a rare word.

_PG_QUERY = func.chat_store_search_query(bindparam("b_query", type_=Text), type_=postgresql.TSQUERY)
_HAS_WORDS = select(func.numnode(_PG_QUERY) > 0)


@dataclass(frozen=True)
class _Shape:
    given: frozenset[str]
    cursor: bool

    @property
    def titles(self) -> bool:
        return "role" not in self.given  # a role belongs to messages: titles are not hits

    @property
    def on_sessions(self) -> bool:
        return bool(self.given & {"repo", "favorite", "status"})


def _shape(request: SearchRequest) -> _Shape:
    return _Shape(request.filters.given, request.cursor is not None)


def _params(request: SearchRequest) -> dict[str, Any]:
    filters = request.filters
    params: dict[str, Any] = {"b_user_id": request.user_id, "b_limit": request.limit + 1}
    params.update({f"b_{name}": getattr(filters, name) for name in filters.given})
    if request.cursor is not None:
        params["b_cursor_rank"], params["b_cursor_id"] = request.cursor
    return params


def _unindexed(column: Column[Any], fts_first: bool) -> ColumnElement[Any]:
    """SQLite: the column behind a unary `+`, which SQLite's planner reads as "do not start at
    this column's index". Started at the owner's index, it runs the whole FTS5 query once per
    row of the owner (1,000 messages: 200 ms rather than 1 ms); the full-text match must lead,
    each hit then found by rowid."""
    if not fts_first:
        return column
    return literal_column(f"+{column.table.name}.{column.name}", column.type)


def _time_filters(shape: _Shape, time: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if "after" in shape.given:
        where.append(time > bindparam("b_after", type_=_M.created_at.type))
    if "before" in shape.given:
        where.append(time < bindparam("b_before", type_=_M.created_at.type))
    return where


def _session_filters(shape: _Shape) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if "repo" in shape.given:
        where.append(_S.workspace_repo == bindparam("b_repo", type_=String))
    if "favorite" in shape.given:
        where.append(_S.is_favorite == bindparam("b_favorite", type_=Boolean))
    if "status" in shape.given:
        where.append(_S.status == bindparam("b_status", type_=String))
    return where


def _message_filters(shape: _Shape, *, fts_first: bool = False) -> list[ColumnElement[bool]]:
    where = [
        _unindexed(_M.user_id, fts_first) == bindparam("b_user_id", type_=Uuid()),
        *_time_filters(shape, _M.created_at),
    ]
    if "session_id" in shape.given:
        where.append(
            _unindexed(_M.session_id, fts_first) == bindparam("b_session_id", type_=Uuid())
        )
    if "role" in shape.given:
        where.append(_M.role == bindparam("b_role", type_=String))
    return where


def _title_filters(shape: _Shape, *, fts_first: bool = False) -> list[ColumnElement[bool]]:
    where = [
        _unindexed(_S.user_id, fts_first) == bindparam("b_user_id", type_=Uuid()),
        *_time_filters(shape, _S.created_at),
        *_session_filters(shape),
    ]
    if "session_id" in shape.given:
        where.append(_unindexed(_S.id, fts_first) == bindparam("b_session_id", type_=Uuid()))
    return where


def _with_sessions(messages: Select[Any], shape: _Shape) -> Select[Any]:
    if not shape.on_sessions:
        return messages
    return messages.join(ChatSession, _S.id == _M.session_id).where(*_session_filters(shape))


def _page(shape: _Shape, parts: list[Select[Any]]) -> Any:
    """The page of the hits (the union of `parts`: hit_id, message_id, session_id, rank, ...)
    below the cursor, in rank order, one more than the page to tell whether more follow."""
    hits = union_all(*parts).subquery("hits") if len(parts) > 1 else parts[0].subquery("hits")
    stmt = select(hits)
    if shape.cursor:
        stmt = stmt.where(
            tuple_(hits.c.rank, hits.c.hit_id)
            < tuple_(
                bindparam("b_cursor_rank", type_=Float), bindparam("b_cursor_id", type_=Uuid())
            )
        )
    ordered = stmt.order_by(hits.c.rank.desc(), hits.c.hit_id.desc())
    return ordered.limit(bindparam("b_limit", type_=Integer)).subquery("page")


def _page_rows(page: Any, *extra: ColumnElement[Any]) -> Select[Any]:
    return (
        select(
            page.c.hit_id,
            page.c.rank,
            page.c.session_id,
            _S.title,
            page.c.message_id,
            _M.seq,
            _M.role,
            _M.created_at,
            *extra,
        )
        .select_from(page)
        .join(ChatSession, _S.id == page.c.session_id)
        .outerjoin(Message, _M.id == page.c.message_id)
        .order_by(page.c.rank.desc(), page.c.hit_id.desc())
    )


# --- Postgres


@functools.cache
def _postgres_statement(shape: _Shape) -> Select[Any]:
    # chat_store_search_query(:b_query) is an IMMUTABLE function of a parameter: evaluated once
    # per execution, not per row.
    query = _PG_QUERY
    vector = literal_column("message.search_vector", postgresql.TSVECTOR)
    messages = select(
        _M.id.label("hit_id"),
        _M.id.label("message_id"),
        _M.session_id.label("session_id"),
        func.ts_rank_cd(vector, query, 1, type_=Float).label("rank"),
    ).where(vector.op("@@")(query), *_message_filters(shape))
    parts = [_with_sessions(messages, shape)]
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
            ).where(title_vector.op("@@")(query), *_title_filters(shape))
        )
    # Excerpts only for the page: ts_headline parses the whole text again.
    snippet = func.coalesce(
        func.chat_store_search_snippet(
            func.coalesce(_M.content, _M.partial_content), query, literal(_PG_MESSAGE_HEADLINE)
        ),
        func.chat_store_search_snippet(_S.title, query, literal(_PG_TITLE_HEADLINE)),
        "",
    )
    return _page_rows(_page(shape, parts), snippet)


async def _search_postgres(db: AsyncSession, request: SearchRequest) -> list[SearchHit]:
    params = _params(request)
    params["b_query"] = request.websearch
    result = await db.execute(_postgres_statement(_shape(request)), params)
    return [SearchHit(*row) for row in result]


# --- SQLite


def _fts5_match(request: SearchRequest, column: str) -> str:
    """The caller's rows (the `owner` column holds the owner's id as SQLite stores it: 32 hex
    digits) whose text matches the query. FTS5 intersects the two, so a common word costs what
    it costs among the caller's rows, not among everyone's."""
    return f'owner : "{request.user_id.hex}" AND {column} : ({request.fts5})'


@functools.cache
def _sqlite_statement(shape: _Shape) -> Select[Any]:
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
            *_message_filters(shape, fts_first=True),
        )
    )
    parts = [_with_sessions(messages, shape)]
    if shape.titles:
        session_fts: ColumnElement[Any] = literal_column("chat_session_fts")
        rank = -func.bm25(session_fts, 1.0, 0.0, type_=Float) * _SQLITE_TITLE_FACTOR
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
                *_title_filters(shape, fts_first=True),
            )
        )
    page = _page(shape, parts)
    return _page_rows(page, page.c.fts_rowid)


def _sqlite_excerpts(fts: str, excerpt: bool) -> Select[Any]:
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


_MESSAGE_EXCERPTS = _sqlite_excerpts("message_fts", True)
_TITLES = _sqlite_excerpts("chat_session_fts", False)


async def _search_sqlite(db: AsyncSession, request: SearchRequest) -> list[SearchHit]:
    shape = _shape(request)
    params = _params(request)
    params["b_message_match"] = _fts5_match(request, "body")
    if shape.titles:
        params["b_title_match"] = _fts5_match(request, "title")
    rows = list(await db.execute(_sqlite_statement(shape), params))
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
