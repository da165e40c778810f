"""Idempotent creates: the first answer is stored with the write, in the same transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from chat_store.crud import idempotency as idempotency_crud
from chat_store.errors import IdempotencyKeyReused
from chat_store.services import hooks
from chat_store.services.context import RequestContext

ResponseT = TypeVar("ResponseT", bound=BaseModel)


def fingerprint(operation: str, scope: str, body: BaseModel) -> str:
    """Same operation, same target and the same body (as validated) give the same fingerprint.
    The body is taken as canonical JSON (keys sorted at every level, one spelling of
    separators): a retry that sends a JSON field's keys in another order is the same request."""
    canonical = json.dumps(
        body.model_dump(mode="json", exclude_unset=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256()
    for part in (operation, scope, canonical):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True)
class Create(Generic[ResponseT]):
    """A create as an Idempotency-Key stands for it: the operation, its target (e.g. the
    session id; "" for none) and the body as validated, which must all match for a replay; and
    the type of its answer, which a replay reads back."""

    operation: str
    scope: str
    body: BaseModel
    response_type: type[ResponseT]


async def run_once(
    ctx: RequestContext,
    key: str | None,
    create: Create[ResponseT],
    produce: Callable[[], Awaitable[ResponseT]],
) -> ResponseT:
    """Run a create once per Idempotency-Key (every create answers 201), keeping its answer
    for IDEMPOTENCY_TTL_HOURS."""
    if key is None:
        return await produce()
    db, user_id, response_type = ctx.db, ctx.principal.user_id, create.response_type
    request_hash = fingerprint(create.operation, create.scope, create.body)
    ttl = timedelta(hours=ctx.settings.idempotency_ttl_hours)
    status_code = 201
    now = datetime.now(UTC)
    stored = await idempotency_crud.get(db, user_id, key, now)
    if stored is not None:
        return _replay(stored.request_hash, stored.response_body, request_hash, response_type)
    marker = hooks.mark(db)
    try:
        # A savepoint: if a concurrent request with the same key commits first, our write is
        # undone (with the events it would have published) and its answer is returned instead.
        async with db.begin_nested():
            response = await produce()
            await idempotency_crud.create(
                db,
                user_id=user_id,
                key=key,
                request_hash=request_hash,
                status_code=status_code,
                response_body=response.model_dump_json(),
                expires_at=now + ttl,
            )
            return response
    except IntegrityError:
        hooks.rollback_to(db, marker)
        stored = await idempotency_crud.get(db, user_id, key, now)
        if stored is None:
            raise
        return _replay(stored.request_hash, stored.response_body, request_hash, response_type)


def _replay(
    stored_hash: str, body: str, request_hash: str, response_type: type[ResponseT]
) -> ResponseT:
    if stored_hash != request_hash:
        raise IdempotencyKeyReused()
    return response_type.model_validate_json(body)
