"""Full-text search over one owner's messages and session titles.

The index is the database's own (migration 0003_search), kept by triggers in the transaction of
every write, so a search sees exactly what is committed:

- Postgres: `message.search_vector` (tsvector) and an expression over `chat_session.title`, each
  in a GIN index led by user_id (btree_gin), so a common word is looked up among the owner's rows
  only. Ranked by ts_rank_cd (it depends on the row and the query alone, so a hit's rank does not
  move when other rows are written); excerpts by ts_headline, for the page's rows only.
- SQLite: FTS5 tables `message_fts` and `chat_session_fts`, ranked by bm25 (lower is better,
  negated here so that higher is better on both), excerpts by snippet() and highlight().

The statements are written per dialect: the engines share no syntax for any of this.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Column,
    Float,
    Select,
    Table,
    Text,
    bindparam,
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
    def titles_searched(self) -> bool:
        # A role belongs to messages: with one, titles are not hits.
        return self.role is None

    @property
    def on_sessions(self) -> bool:
        return self.repo is not None or self.favorite is not None or self.status is not None


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
    result = await db.execute(
        select(func.numnode(func.chat_store_search_query(bindparam("q", websearch, Text))) > 0)
    )
    return bool(result.scalar_one())


def _common_filters(
    request: SearchRequest, *, time: ColumnElement[Any]
) -> list[ColumnElement[bool]]:
    filters = request.filters
    where: list[ColumnElement[bool]] = []
    if filters.after is not None:
        where.append(time > filters.after)
    if filters.before is not None:
        where.append(time < filters.before)
    return where


def _session_filters(filters: SearchFilters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.repo is not None:
        where.append(_S.workspace_repo == filters.repo)
    if filters.favorite is not None:
        where.append(_S.is_favorite.is_(filters.favorite))
    if filters.status is not None:
        where.append(_S.status == filters.status)
    return where


def _unindexed(column: Column[Any], fts_first: bool) -> ColumnElement[Any]:
    """SQLite: the column behind a unary `+`, which SQLite's planner reads as "do not start at
    this column's index". Started at the owner's index, it runs the whole FTS5 query once per
    row of the owner (1,000 messages: 200 ms rather than 1 ms); the full-text match must lead,
    each hit then found by rowid."""
    if not fts_first:
        return column
    return literal_column(f"+{column.table.name}.{column.name}", column.type)


def _message_filters(
    request: SearchRequest, *, fts_first: bool = False
) -> list[ColumnElement[bool]]:
    filters = request.filters
    where = [
        _unindexed(_M.user_id, fts_first) == request.user_id,
        *_common_filters(request, time=_M.created_at),
    ]
    if filters.session_id is not None:
        where.append(_unindexed(_M.session_id, fts_first) == filters.session_id)
    if filters.role is not None:
        where.append(_M.role == filters.role)
    return where


def _title_filters(request: SearchRequest, *, fts_first: bool = False) -> list[ColumnElement[bool]]:
    filters = request.filters
    where = [
        _unindexed(_S.user_id, fts_first) == request.user_id,
        *_common_filters(request, time=_S.created_at),
        *_session_filters(filters),
    ]
    if filters.session_id is not None:
        where.append(_unindexed(_S.id, fts_first) == filters.session_id)
    return where


def _page(request: SearchRequest, hits: Any) -> Select[Any]:
    """The page of `hits` (a subquery of hit_id, message_id, session_id, rank, ...) below the
    cursor, in rank order, one more than the page to tell whether more follow."""
    stmt = select(hits)
    if request.cursor is not None:
        rank, hit_id = request.cursor
        stmt = stmt.where(
            tuple_(hits.c.rank, hits.c.hit_id)
            < tuple_(bindparam("cursor_rank", rank, Float), bindparam("cursor_id", hit_id))
        )
    return stmt.order_by(hits.c.rank.desc(), hits.c.hit_id.desc()).limit(request.limit + 1)


# --- Postgres


def _pg_query(request: SearchRequest) -> ColumnElement[Any]:
    # An IMMUTABLE function of a constant: the planner folds it into a constant tsquery once.
    return func.chat_store_search_query(
        bindparam("websearch", request.websearch, Text), type_=postgresql.TSQUERY
    )


async def _search_postgres(db: AsyncSession, request: SearchRequest) -> list[SearchHit]:
    query = _pg_query(request)
    vector = literal_column("message.search_vector", postgresql.TSVECTOR)
    messages = select(
        _M.id.label("hit_id"),
        _M.id.label("message_id"),
        _M.session_id.label("session_id"),
        func.ts_rank_cd(vector, query, 1, type_=Float).label("rank"),
    ).where(vector.op("@@")(query), *_message_filters(request))
    if request.filters.on_sessions:
        messages = messages.join(ChatSession, _S.id == _M.session_id).where(
            *_session_filters(request.filters)
        )
    parts = [messages]
    if request.filters.titles_searched:
        # The expression of ix_chat_session_search, so that index answers it.
        title_vector = func.chat_store_search_vector(_S.title, type_=postgresql.TSVECTOR)
        parts.append(
            select(
                _S.id.label("hit_id"),
                null().label("message_id"),
                _S.id.label("session_id"),
                func.ts_rank_cd(
                    func.setweight(title_vector, literal_column("'A'")), query, 1, type_=Float
                ).label("rank"),
            ).where(title_vector.op("@@")(query), *_title_filters(request))
        )
    hits = union_all(*parts).subquery("hits") if len(parts) > 1 else parts[0].subquery("hits")
    page = _page(request, hits).subquery("page")
    # Excerpts only for the page: ts_headline parses the whole text again.
    snippet = func.coalesce(
        func.chat_store_search_snippet(
            func.coalesce(_M.content, _M.partial_content),
            query,
            literal(_PG_MESSAGE_HEADLINE, Text),
        ),
        func.chat_store_search_snippet(_S.title, query, literal(_PG_TITLE_HEADLINE, Text)),
        "",
    )
    stmt = (
        select(
            page.c.hit_id,
            page.c.rank,
            page.c.session_id,
            _S.title,
            page.c.message_id,
            _M.seq,
            _M.role,
            _M.created_at,
            snippet,
        )
        .select_from(page)
        .join(ChatSession, _S.id == page.c.session_id)
        .outerjoin(Message, _M.id == page.c.message_id)
        .order_by(page.c.rank.desc(), page.c.hit_id.desc())
    )
    return [SearchHit(*row) for row in await db.execute(stmt)]


# --- SQLite


def _fts5_match(request: SearchRequest, column: str) -> str:
    """The caller's rows (the `owner` column holds the owner's id as SQLite stores it: 32 hex
    digits) whose text matches the query. FTS5 intersects the two, so a common word costs what
    it costs among the caller's rows, not among everyone's."""
    return f'owner : "{request.user_id.hex}" AND {column} : ({request.fts5})'


def _sqlite_search_hits(request: SearchRequest) -> Any:
    message_match = bindparam("message_match", _fts5_match(request, "body"), Text)
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
        .where(message_fts.op("MATCH")(message_match), *_message_filters(request, fts_first=True))
    )
    if request.filters.on_sessions:
        messages = messages.join(ChatSession, _S.id == _M.session_id).where(
            *_session_filters(request.filters)
        )
    parts = [messages]
    if request.filters.titles_searched:
        session_fts: ColumnElement[Any] = literal_column("chat_session_fts")
        parts.append(
            select(
                _S.id.label("hit_id"),
                null().label("message_id"),
                _S.id.label("session_id"),
                (-func.bm25(session_fts, 1.0, 0.0, type_=Float) * _SQLITE_TITLE_FACTOR).label(
                    "rank"
                ),
                literal_column("chat_session_fts.rowid").label("fts_rowid"),
            )
            .select_from(table("chat_session_fts"))
            .join(
                ChatSession,
                literal_column("chat_session.rowid") == literal_column("chat_session_fts.rowid"),
            )
            .where(
                session_fts.op("MATCH")(
                    bindparam("title_match", _fts5_match(request, "title"), Text)
                ),
                *_title_filters(request, fts_first=True),
            )
        )
    return union_all(*parts).subquery("hits") if len(parts) > 1 else parts[0].subquery("hits")


async def _search_sqlite(db: AsyncSession, request: SearchRequest) -> list[SearchHit]:
    hits = _sqlite_search_hits(request)
    page = _page(request, hits).subquery("page")
    stmt = (
        select(
            page.c.hit_id,
            page.c.rank,
            page.c.session_id,
            _S.title,
            page.c.message_id,
            _M.seq,
            _M.role,
            _M.created_at,
            page.c.fts_rowid,
        )
        .select_from(page)
        .join(ChatSession, _S.id == page.c.session_id)
        .outerjoin(Message, _M.id == page.c.message_id)
        .order_by(page.c.rank.desc(), page.c.hit_id.desc())
    )
    rows = list(await db.execute(stmt))
    message_rowids = [row.fts_rowid for row in rows if row.message_id is not None]
    title_rowids = [row.fts_rowid for row in rows if row.message_id is None]
    snippets = {
        ("m", rowid): text
        for rowid, text in await _snippets(db, request, "message_fts", message_rowids, True)
    }
    snippets.update(
        {
            ("s", rowid): text
            for rowid, text in await _snippets(db, request, "chat_session_fts", title_rowids, False)
        }
    )
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
            snippet=snippets.get(("m" if row.message_id else "s", row.fts_rowid), ""),
        )
        for row in rows
    ]


async def _snippets(
    db: AsyncSession, request: SearchRequest, fts: str, rowids: list[int], excerpt: bool
) -> list[tuple[int, str]]:
    """Excerpts (or whole titles) of the page's rows, read by rowid: the MATCH is evaluated
    for those rows only."""
    if not rowids:
        return []
    fts_table: ColumnElement[Any] = literal_column(fts)
    marks = (literal(MARK_START, Text), literal(MARK_END, Text))
    if excerpt:
        text = func.snippet(fts_table, 0, *marks, literal("…", Text), _SNIPPET_TOKENS, type_=Text)
    else:
        text = func.highlight(fts_table, 0, *marks, type_=Text)
    rowid: ColumnElement[Any] = literal_column(f"{fts}.rowid")
    stmt = (
        select(rowid, text)
        .select_from(table(fts))
        .where(
            fts_table.op("MATCH")(
                bindparam("match", _fts5_match(request, "body" if excerpt else "title"), Text)
            ),
            rowid.in_(rowids),
        )
    )
    return [(row[0], row[1] or "") for row in await db.execute(stmt)]
