from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from chat_store.api.deps import API_PREFIX, AppSettings, CurrentPrincipal, DbSession, PrincipalCache
from chat_store.api.responses import problems
from chat_store.errors import ApiKeyLimit, ApiKeyNotFound, GuestNotAllowed
from chat_store.schemas.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from chat_store.schemas.common import Page
from chat_store.services import api_keys as api_key_service

router = APIRouter(prefix=f"{API_PREFIX}/api-keys", tags=["api-keys"])


@router.post(
    "",
    status_code=201,
    responses=problems(
        GuestNotAllowed("Guests cannot create API keys; register and claim the sessions"),
        ApiKeyLimit(20),
    ),
)
async def create_api_key(
    db: DbSession, settings: AppSettings, principal: CurrentPrincipal, body: ApiKeyCreate
) -> ApiKeyCreated:
    """Create an API key; the secret (`key`) is shown in this answer only."""
    return await api_key_service.create_api_key(
        db,
        settings,
        principal.user_id,
        body,
        guest=principal.kind == "guest",
        made_with_key=principal.api_key_id,
    )


@router.get("")
async def list_api_keys(db: DbSession, principal: CurrentPrincipal) -> Page[ApiKeyRead]:
    """The caller's keys, newest first: name, prefix, expiry and last use, never the secret."""
    return await api_key_service.list_api_keys(db, principal.user_id)


@router.delete(
    "/{key_id}",
    status_code=204,
    responses=problems(ApiKeyNotFound),
)
async def revoke_api_key(
    db: DbSession,
    settings: AppSettings,
    cache: PrincipalCache,
    principal: CurrentPrincipal,
    key_id: uuid.UUID,
) -> Response:
    """Revoke a key at once."""
    await api_key_service.revoke_api_key(db, settings, cache, principal.user_id, key_id)
    return Response(status_code=204)
