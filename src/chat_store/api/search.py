from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chat_store.api.deps import API_PREFIX, Context
from chat_store.api.direct import DirectRoute, direct
from chat_store.api.responses import problems
from chat_store.errors import ChatSessionNotFound
from chat_store.schemas.search import SearchPage, SearchParams
from chat_store.services import search as search_service

router = APIRouter(prefix=f"{API_PREFIX}/search", tags=["search"], route_class=DirectRoute)


@router.get("", responses=problems(ChatSessionNotFound))
@direct
async def search(ctx: Context, params: Annotated[SearchParams, Query()]) -> SearchPage:
    """Search the caller's messages and session titles, best match first."""
    return await search_service.search(ctx, params)
