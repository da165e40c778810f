"""Import: a conversation from chat-store, ChatGPT or a plain list becomes a session."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from chat_store.api.deps import API_PREFIX, Context, IdempotencyKey
from chat_store.api.responses import problems
from chat_store.errors import IdempotencyKeyReused
from chat_store.schemas.export import IMPORT_EXAMPLES, ImportFormat, ImportResult
from chat_store.services import imports as import_service

router = APIRouter(prefix=f"{API_PREFIX}/sessions", tags=["export"])


@router.post(
    "/import",
    status_code=201,
    responses={
        200: {"model": ImportResult, "description": "Imported before: that session."},
        **problems(IdempotencyKeyReused),
    },
)
async def import_chat_session(
    ctx: Context,
    response: Response,
    body: Annotated[dict[str, Any], Body(openapi_examples=IMPORT_EXAMPLES)],
    import_format: Annotated[
        ImportFormat | None,
        Query(alias="format", description="Default: recognised from the body."),
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> ImportResult:
    """Import one conversation (chat-store/1 export, ChatGPT conversation, or plain messages)."""
    result = await import_service.import_document(ctx, body, import_format, idempotency_key)
    if not result.created:
        response.status_code = 200
    return result
