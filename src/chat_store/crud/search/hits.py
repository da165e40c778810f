"""What a search asks for and what it finds, the same on both engines."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime

# The matches in an excerpt lie between these two characters (Unicode private use). The
# indexed texts have them turned into spaces (migration 0003_search), so any found in an excerpt
# are marks.
MARK_START = "\ue000"
MARK_END = "\ue001"


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
    # The first page ranks at most this many matching messages, the newest.
    ranked_matches: int | None = None
    # The oldest message the first page ranked, when it ranked fewer than all matches: later
    # pages rank the matches from it on (to the newest), so no hit is skipped or repeated.
    oldest_ranked: RankedFrom | None = None


@dataclass(frozen=True)
class RankedFrom:
    """Where a bounded ranking starts: a message's (created_at, id), Postgres' order of the
    newest; and on SQLite its place in the full-text index (rowid: the order rows were stored
    in), SQLite's order of the newest."""

    created_at: datetime
    message_id: uuid.UUID
    fts_rowid: int | None = None


@dataclass(frozen=True)
class SearchFound:
    hits: list[SearchHit]
    has_more: bool
    # The request's, or the oldest message this page ranked when it ranked fewer than all.
    oldest_ranked: RankedFrom | None


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
