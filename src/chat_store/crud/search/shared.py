"""What the two engines' statements share: a statement's shape, its bound parameters, the
filters and the page of hits.

The statements are built once per shape (which filters are given, whether a cursor is), with
every value a bound parameter: building and walking one per request cost more CPU than the
database spends on a rare word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    Select,
    String,
    Table,
    Uuid,
    bindparam,
    literal_column,
    null,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Row
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause

from chat_store.crud.search.hits import RankedFrom, SearchFound, SearchHit, SearchRequest
from chat_store.models import ChatSession, Message

# The tables' columns, as the statements of both engines name them.
message_columns = cast(Table, Message.__table__).c
session_columns = cast(Table, ChatSession.__table__).c
_M = message_columns
_S = session_columns


# The ranking's bound when the request gives none: every match.
UNBOUNDED = 2**31 - 1
HIT_COLUMNS = 9  # page_rows' columns and the snippet: SearchHit's fields


@dataclass(frozen=True)
class Shape:
    given: frozenset[str]
    cursor: bool
    # A later page of a bounded ranking: the matches from RankedFrom on.
    ranked_from: bool = False

    @property
    def titles(self) -> bool:
        return "role" not in self.given  # a role belongs to messages: titles are not hits

    @property
    def on_sessions(self) -> bool:
        return bool(self.given & {"repo", "favorite", "status"})


def shape_of(request: SearchRequest) -> Shape:
    return Shape(
        request.filters.given, request.cursor is not None, request.oldest_ranked is not None
    )


def bound_params(request: SearchRequest) -> dict[str, Any]:
    """The values of the filters, the cursor and the limit (one more than the page)."""
    filters = request.filters
    params: dict[str, Any] = {"b_user_id": request.user_id, "b_limit": request.limit + 1}
    params.update({f"b_{name}": getattr(filters, name) for name in filters.given})
    if request.cursor is not None:
        params["b_cursor_rank"], params["b_cursor_id"] = request.cursor
    params["b_ranked_matches"] = (
        UNBOUNDED if request.ranked_matches is None else request.ranked_matches
    )
    if request.oldest_ranked is not None:
        params["b_ranked_from_at"] = request.oldest_ranked.created_at
        params["b_ranked_from_id"] = request.oldest_ranked.message_id
        # A cursor of a ranking without it (Postgres') ranks from the start on SQLite.
        params["b_ranked_from_rowid"] = request.oldest_ranked.fts_rowid or 0
    return params


def _unindexed(column: Column[Any], fts_first: bool) -> ColumnElement[Any]:
    """SQLite: the column behind a unary `+`, which SQLite's planner reads as "do not start at
    this column's index". Started at the owner's index, it runs the whole FTS5 query once per
    row of the owner (1,000 messages: 200 ms rather than 1 ms); the full-text match must lead,
    each hit then found by rowid."""
    if not fts_first:
        return column
    return literal_column(f"+{column.table.name}.{column.name}", column.type)


def _time_filters(shape: Shape, time: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if "after" in shape.given:
        where.append(time > bindparam("b_after", type_=_M.created_at.type))
    if "before" in shape.given:
        where.append(time < bindparam("b_before", type_=_M.created_at.type))
    return where


def _session_filters(shape: Shape) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if "repo" in shape.given:
        where.append(_S.workspace_repo == bindparam("b_repo", type_=String))
    if "favorite" in shape.given:
        where.append(_S.is_favorite == bindparam("b_favorite", type_=Boolean))
    if "status" in shape.given:
        where.append(_S.status == bindparam("b_status", type_=String))
    return where


def message_filters(
    shape: Shape, *, fts_first: bool = False, owner_by_index: bool = True
) -> list[ColumnElement[bool]]:
    """The hits' filters. `owner_by_index=False` (Postgres) writes the owner's comparison so
    that no index serves it: `(user_id = :id) IS TRUE`, for a statement that must start at
    another index and not AND that one with the owner's (about 50,000 entries read for one
    user with as many messages)."""
    owner: ColumnElement[bool] = _unindexed(_M.user_id, fts_first) == bindparam(
        "b_user_id", type_=Uuid()
    )
    if not owner_by_index:
        owner = owner.is_(true())
    where = [owner, *_time_filters(shape, _M.created_at)]
    if "session_id" in shape.given:
        where.append(
            _unindexed(_M.session_id, fts_first) == bindparam("b_session_id", type_=Uuid())
        )
    if "role" in shape.given:
        where.append(_M.role == bindparam("b_role", type_=String))
    return where


def title_filters(shape: Shape, *, fts_first: bool = False) -> list[ColumnElement[bool]]:
    where = [
        _unindexed(_S.user_id, fts_first) == bindparam("b_user_id", type_=Uuid()),
        *_time_filters(shape, _S.created_at),
        *_session_filters(shape),
    ]
    if "session_id" in shape.given:
        where.append(_unindexed(_S.id, fts_first) == bindparam("b_session_id", type_=Uuid()))
    return where


def with_sessions(messages: Select[Any], shape: Shape) -> Select[Any]:
    """The message hits joined to their sessions when a filter is on the session."""
    if not shape.on_sessions:
        return messages
    return messages.join(ChatSession, _S.id == _M.session_id).where(*_session_filters(shape))


def page_of(shape: Shape, parts: list[Select[Any]]) -> Select[Any]:
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
    return ordered.limit(bindparam("b_limit", type_=Integer))


def page_rows(
    page: FromClause,
    *extra: ColumnElement[Any],
    outer: Sequence[tuple[FromClause, ColumnElement[bool]]] = (),
) -> Select[Any]:
    """The page's hits with their session's title and their message's seq, role and time
    (and what `outer` joins, left, to them)."""
    rows = page.join(ChatSession, _S.id == page.c.session_id).outerjoin(
        Message, _M.id == page.c.message_id
    )
    for joined, on in outer:
        rows = rows.outerjoin(joined, on)
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
        .select_from(rows)
        .order_by(page.c.rank.desc(), page.c.hit_id.desc())
    )


def oldest_ranked(
    shape: Shape,
    *,
    at: ColumnElement[Any],
    message_id: ColumnElement[Any],
    order: Sequence[ColumnElement[Any]],
    fts_rowid: ColumnElement[Any] | None = None,
) -> list[ColumnElement[Any]]:
    """page_rows' extra columns naming the oldest message a first page ranked when it reached
    the bound: the `b_ranked_matches`-th of the ranked messages in `order` (newest first);
    NULL when fewer were ranked, and on later pages (their request carries it)."""
    named = {"oldest_ranked_at": at, "oldest_ranked_id": message_id}
    if fts_rowid is not None:
        named["oldest_ranked_rowid"] = fts_rowid
    if shape.cursor:
        return [null().label(name) for name in named]
    oldest = (
        select(*(column.label(name) for name, column in named.items()))
        .order_by(*order)
        .offset(bindparam("b_ranked_matches", type_=Integer) - 1)
        .limit(1)
        .subquery("oldest")
    )
    return [select(column).scalar_subquery().label(column.name) for column in oldest.c]


def found(request: SearchRequest, rows: Sequence[Row[Any]]) -> SearchFound:
    """The page's hits (rows: page_rows', the snippet, then oldest_ranked's), whether more
    follow, and where the ranking starts: the request's, or the one the first page reports."""
    hits = [SearchHit(*row[:HIT_COLUMNS]) for row in rows[: request.limit]]
    oldest = request.oldest_ranked
    if request.cursor is None and rows and rows[0].oldest_ranked_id is not None:
        first = rows[0]._mapping
        oldest = RankedFrom(
            first["oldest_ranked_at"], first["oldest_ranked_id"], first.get("oldest_ranked_rowid")
        )
    return SearchFound(hits, len(rows) > request.limit, oldest)
