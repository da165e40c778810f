from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from chat_store.api.deps import API_PREFIX, Context
from chat_store.api.responses import problems
from chat_store.errors import ChatSessionNotFound
from chat_store.schemas.chat_sessions import ChatSessionStatus
from chat_store.schemas.common import SafeStr
from chat_store.schemas.messages import Role
from chat_store.schemas.search import SearchPage, SearchParams
from chat_store.search_query import MAX_QUERY_CHARS
from chat_store.services import search as search_service

router = APIRouter(prefix=f"{API_PREFIX}/search", tags=["search"])

# A time with an offset, or a date: the start of that day in UTC.
When = AwareDatetime | date


def _utc(value: When | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.combine(value, time(), tzinfo=UTC)


@router.get(
    "",
    response_model=SearchPage,
    responses=problems(ChatSessionNotFound),
)
async def search(
    ctx: Context,
    q: Annotated[
        SafeStr,
        Query(
            max_length=MAX_QUERY_CHARS,
            description='Words, "quoted phrases", -excluded, `or` between alternatives.',
            examples=['test_billing "fixture clock" -flaky'],
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
    session_id: Annotated[uuid.UUID | None, Query(description="Only this session.")] = None,
    role: Annotated[Role | None, Query(description="Only messages of this role.")] = None,
    repo: Annotated[
        SafeStr | None, Query(max_length=500, description="Sessions with this workspace repo.")
    ] = None,
    favorite: Annotated[bool | None, Query(description="Favourite sessions (or not).")] = None,
    status: Annotated[ChatSessionStatus | None, Query(description="Session status.")] = None,
    after: Annotated[
        When | None, Query(description="Hits from this time (or the start of this date, UTC).")
    ] = None,
    before: Annotated[
        When | None, Query(description="Hits before this time (or this date's start, UTC).")
    ] = None,
) -> SearchPage:
    """Search the caller's messages and session titles, best match first."""
    params = SearchParams(
        q=q,
        limit=limit,
        cursor=cursor,
        session_id=session_id,
        role=role,
        repo=repo,
        favorite=favorite,
        status=status,
        after=_utc(after),
        before=_utc(before),
    )
    return await search_service.search(ctx, params)
