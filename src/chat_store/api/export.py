"""Export: one session, or everything the caller owns, streamed in the chat-store/1 format."""

from __future__ import annotations

import uuid
from contextlib import suppress
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from chat_store.api.deps import API_PREFIX, CurrentPrincipal, DbSession, State
from chat_store.api.responses import ErrorSpec, problems
from chat_store.errors import ArchiveUnavailable, ChatSessionNotFound
from chat_store.services import export as export_service
from chat_store.services import users as user_service
from chat_store.services.export import (
    EXTENSIONS,
    MEDIA_TYPES,
    ExportCut,
    ExportFormat,
    ExportSource,
)
from chat_store.services.principals import Principal

router = APIRouter(prefix=API_PREFIX, tags=["export"])


def _streamed(
    *formats: ExportFormat, errors: tuple[ErrorSpec, ...]
) -> dict[int | str, dict[str, Any]]:
    # Keyed by the media type each format is sent as, without its parameters (OpenAPI's content
    # keys are media types or ranges); a JSON document is an object, the others text.
    content = {
        MEDIA_TYPES[name].split(";")[0]: {
            "schema": {"type": "object"} if name == "json" else {"type": "string"}
        }
        for name in formats
    }
    return {
        200: {"description": "Streamed as it is read (docs/export-format.md).", "content": content},
        **problems(*errors),
    }


class _ExportResponse(StreamingResponse):
    """A streamed export, which the caller's revoked credential may cut (ExportCut): the
    answer then ends without the end of its body, and the server closes the connection (no
    last chunk), so the client sees it incomplete. Raised further, the cut would be logged as
    an unhandled error, with a traceback, by the app and again by the server."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with suppress(ExportCut):  # logged where it was decided
            await super().__call__(scope, receive, send)


def _source(state: State, principal: Principal) -> ExportSource:
    # The answer outlives the request's session: batches are read in short sessions of their
    # own, and the caller's credential is checked again between them as the client reads on.
    credential = export_service.export_credential(principal, state.settings)
    return ExportSource(state.read_sessionmaker, state.archive, credential)


@router.get(
    "/sessions/{session_id}/export",
    response_class=StreamingResponse,
    responses=_streamed(
        "json", "jsonl", "markdown", errors=(ChatSessionNotFound, ArchiveUnavailable)
    ),
)
async def export_chat_session(
    db: DbSession,
    state: State,
    principal: CurrentPrincipal,
    session_id: uuid.UUID,
    export_format: Annotated[
        ExportFormat,
        Query(
            alias="format",
            description="json (one document), jsonl (a line per record) or markdown (to read).",
        ),
    ] = "json",
) -> StreamingResponse:
    """The session and every message, all fields, in the chat-store/1 format (streamed)."""
    source = _source(state, principal)
    exported = await export_service.get_exportable(db, source, principal, session_id)
    filename = f"chat-store-{session_id}.{EXTENSIONS[export_format]}"
    return _ExportResponse(
        export_service.render_session(source, exported, export_format),
        media_type=MEDIA_TYPES[export_format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/users/me/export",
    response_class=StreamingResponse,
    responses=_streamed("jsonl", errors=(ArchiveUnavailable,)),
)
async def export_account(
    db: DbSession, state: State, principal: CurrentPrincipal
) -> StreamingResponse:
    """Everything the caller owns as chat-store/1 JSONL, streamed in constant memory."""
    user = await user_service.get_me(db, principal)
    return _ExportResponse(
        export_service.render_account(_source(state, principal), user),
        media_type=MEDIA_TYPES["jsonl"],
        headers={"Content-Disposition": 'attachment; filename="chat-store-account.jsonl"'},
    )
