"""Archived sessions: the explicit restore, and the restore every message access goes through."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request

from chat_store.api.deps import API_PREFIX, CurrentPrincipal, DbSession, app_state
from chat_store.api.responses import problems
from chat_store.errors import ArchiveUnavailable, ChatSessionNotFound
from chat_store.schemas.chat_sessions import ChatSessionRead
from chat_store.services import archive as archive_service
from chat_store.services.archive import Archiver

router = APIRouter(prefix=f"{API_PREFIX}/sessions", tags=["sessions"])


def archiver(request: Request) -> Archiver:
    state = app_state(request)
    return Archiver(state.sessionmaker, state.archive)


_FINDS_ARCHIVED = "__chat_store_finds_archived__"

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def finds_archived_itself(endpoint: Endpoint) -> Endpoint:
    """Mark a route whose service finds an archived session in the statement it runs anyway
    (and restores it then), so that restore_archived_session spends no read of its own: the
    busiest routes, where that read was a sixth of the CPU (docs/benchmarks.md)."""
    setattr(endpoint, _FINDS_ARCHIVED, True)
    return endpoint


async def restore_archived_session(
    request: Request, db: DbSession, principal: CurrentPrincipal, session_id: uuid.UUID
) -> None:
    """A router dependency of every message and stream route: an archived session's messages
    are brought back (in the request's transaction) before the route reads or writes them."""
    if getattr(request.scope.get("endpoint"), _FINDS_ARCHIVED, False):
        return
    await archive_service.ensure_restored(db, archiver(request), principal, session_id)


@router.post(
    "/{session_id}/restore",
    responses=problems(ChatSessionNotFound, ArchiveUnavailable),
)
async def restore_chat_session(
    request: Request, db: DbSession, principal: CurrentPrincipal, session_id: uuid.UUID
) -> ChatSessionRead:
    """Bring an archived session's messages back into the database (a no-op if not archived)."""
    return await archive_service.restore_chat_session(db, archiver(request), principal, session_id)
