"""Search results: a page of hits, each a message (or a session's title) with an excerpt."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chat_store.schemas.chat_sessions import ChatSessionStatus
from chat_store.schemas.common import InputDate, InputDatetime, OutputModel, SafeStr
from chat_store.schemas.messages import Role
from chat_store.search_query import MAX_QUERY_CHARS


class SearchParams(BaseModel):
    """A search as asked: the query parameters of GET /search, declared once here."""

    model_config = ConfigDict(frozen=True)

    q: SafeStr = Field(
        max_length=MAX_QUERY_CHARS,
        description='Words, "quoted phrases", -excluded, `or` between alternatives.',
        examples=['test_billing "fixture clock" -flaky'],
    )
    limit: int = Field(default=20, ge=1, le=100, description="Page size.")
    cursor: str | None = Field(
        default=None, max_length=512, description="`next_cursor` of the previous page."
    )
    session_id: uuid.UUID | None = Field(default=None, description="Only this session.")
    role: Role | None = Field(default=None, description="Only messages of this role.")
    repo: SafeStr | None = Field(
        default=None, max_length=500, description="Sessions with this workspace repo."
    )
    favorite: bool | None = Field(default=None, description="Favourite sessions (or not).")
    status: ChatSessionStatus | None = Field(default=None, description="Session status.")
    # A time with an offset, or a date: the start of that day in UTC.
    after: InputDatetime | InputDate | None = Field(
        default=None, description="Hits from this time (or the start of this date, UTC)."
    )
    before: InputDatetime | InputDate | None = Field(
        default=None, description="Hits before this time (or this date's start, UTC)."
    )


class SearchSession(OutputModel):
    id: uuid.UUID
    title: str | None


class SearchMessage(OutputModel):
    id: uuid.UUID
    seq: int
    role: Role
    created_at: datetime


class SearchResult(OutputModel):
    object: Literal["search_result"] = "search_result"
    session: SearchSession
    message: SearchMessage | None = Field(
        description="The message that matched; null when the hit is the session's title."
    )
    snippet: str = Field(
        description="The text around the best match ('…' where it is cut), or the whole title."
    )
    highlights: list[tuple[int, int]] = Field(
        description="[start, end) of each match in `snippet`, counted in code points.",
        examples=[[[9, 21]]],
    )
    rank: float = Field(description="Relevance, higher is better; compare within one search.")


class SearchPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchResult]
    has_more: bool
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same query and filters) for the next page."
    )
