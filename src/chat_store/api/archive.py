"""Archived sessions: the explicit restore, and the restore every message access goes through."""

from __future__ import annotations

import uuid

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


async def restore_archived_session(
    request: Request, db: DbSession, principal: CurrentPrincipal, session_id: uuid.UUID
) -> None:
    """A router dependency of every message and stream route: an archived session's messages
    are brought back (in the request's transaction) before the route reads or writes them."""
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
