"""Search results: a page of hits, each a message (or a session's title) with an excerpt."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from chat_store.schemas.chat_sessions import ChatSessionStatus
from chat_store.schemas.common import OutputModel
from chat_store.schemas.messages import Role


@dataclass(frozen=True)
class SearchParams:
    """A search as asked (the query parameters of GET /search), dates already in UTC."""

    q: str
    limit: int = 20
    cursor: str | None = None
    session_id: uuid.UUID | None = None
    role: Role | None = None
    repo: str | None = None
    favorite: bool | None = None
    status: ChatSessionStatus | None = None
    after: datetime | None = None
    before: datetime | None = None


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
