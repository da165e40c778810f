from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query

from chat_store.api.deps import API_PREFIX, Context, IdempotencyKey, PaginationParams
from chat_store.api.direct import DirectRoute, direct
from chat_store.api.responses import problems
from chat_store.errors import (
    ChatSessionExists,
    ChatSessionNotFound,
    IdempotencyKeyReused,
)
from chat_store.schemas.chat_sessions import (
    ChatSessionCreate,
    ChatSessionFilters,
    ChatSessionPage,
    ChatSessionRead,
    ChatSessionRename,
    ChatSessionUpdate,
    FavoriteUpdate,
)
from chat_store.schemas.common import Deleted
from chat_store.services import chat_sessions as chat_session_service

router = APIRouter(prefix=f"{API_PREFIX}/sessions", tags=["sessions"], route_class=DirectRoute)

_ERRORS = problems(ChatSessionNotFound)
_FAVORITE_EXAMPLES = {
    "set": {"summary": "Mark as a favourite", "value": {"is_favorite": True}},
    "toggle": {"summary": "Toggle (no body, or an empty object)", "value": {}},
}


@router.post(
    "",
    status_code=201,
    responses=problems(
        ChatSessionExists("A session with id 3f1c9a52-8d7e-4b1a-9c55-0b6e2f4d8a10 already exists"),
        IdempotencyKeyReused,
    ),
)
@direct
async def create_chat_session(
    ctx: Context,
    body: Annotated[
        ChatSessionCreate,
        Body(
            openapi_examples={
                "minimal": {"summary": "Untitled (the first user message names it)", "value": {}},
                "workspace": {
                    "summary": "A coding session tied to a repository",
                    "value": {
                        "title": "Fix flaky test in billing",
                        "workspace": {"repo": "github.com/acme/api", "branch": "main"},
                        "metadata": {"client": "cli/1.4"},
                    },
                },
            }
        ),
    ],
    key: IdempotencyKey = None,
) -> ChatSessionRead:
    """Start a chat session (an `id` may be chosen by the client)."""
    return await chat_session_service.create_chat_session(ctx, body, key)


@router.get("", responses=problems(ChatSessionNotFound("The cursor session does not exist")))
async def list_chat_sessions(
    ctx: Context,
    pagination: PaginationParams,
    filters: Annotated[ChatSessionFilters, Query()],
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="A page's `next_cursor`: the page after it."),
    ] = None,
) -> ChatSessionPage:
    """The caller's sessions, newest activity first (keyset-paginated)."""
    return await chat_session_service.list_chat_sessions(ctx, filters, pagination, cursor)


@router.get("/{session_id}", responses=_ERRORS)
async def get_chat_session(ctx: Context, session_id: uuid.UUID) -> ChatSessionRead:
    """One session."""
    return await chat_session_service.get_chat_session(ctx, session_id)


@router.patch("/{session_id}", responses=_ERRORS)
async def update_chat_session(
    ctx: Context, session_id: uuid.UUID, body: ChatSessionUpdate
) -> ChatSessionRead:
    """Change title, favourite flag, metadata, workspace or status (only the fields given)."""
    return await chat_session_service.update_chat_session(ctx, session_id, body)


@router.put("/{session_id}", responses=_ERRORS)
async def rename_chat_session(
    ctx: Context, session_id: uuid.UUID, body: ChatSessionRename
) -> ChatSessionRead:
    """Rename a session (alias of PATCH with a title)."""
    update = ChatSessionUpdate(title=body.title)
    return await chat_session_service.update_chat_session(ctx, session_id, update)


@router.patch("/{session_id}/favorite", responses=_ERRORS)
async def set_chat_session_favorite(
    ctx: Context,
    session_id: uuid.UUID,
    body: Annotated[FavoriteUpdate | None, Body(openapi_examples=_FAVORITE_EXAMPLES)] = None,
) -> ChatSessionRead:
    """Toggle the favourite flag, or set it with `{"is_favorite": bool}`."""
    value = body.is_favorite if body is not None else None
    return await chat_session_service.toggle_favorite(ctx, session_id, value)


@router.delete("/{session_id}", responses=_ERRORS)
async def delete_chat_session(ctx: Context, session_id: uuid.UUID) -> Deleted:
    """Delete a session and all its messages."""
    await chat_session_service.delete_chat_session(ctx, session_id)
    return Deleted(id=session_id, object="session.deleted")
