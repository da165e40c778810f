"""Idempotent creates: the first answer is stored with the write, in the same transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from pydantic import BaseModel

from chat_store.crud import idempotency as idempotency_crud
from chat_store.errors import AppError, IdempotencyKeyReused
from chat_store.services.context import RequestContext

ResponseT = TypeVar("ResponseT", bound=BaseModel)


def fingerprint(operation: str, scope: str, body: BaseModel) -> str:
    """Same operation, same target and the same body (as validated) give the same fingerprint.
    The body is taken as canonical JSON (keys sorted at every level, one spelling of
    separators): a retry that sends a JSON field's keys in another order is the same request.
    Every field is in it, given or not: a create leaves out a field and gives its default
    alike, so a retry that spells a default out is the same request."""
    return _digest(operation, scope, body.model_dump(mode="json"))


def given_fields_fingerprint(operation: str, scope: str, body: BaseModel) -> str:
    """The fingerprint as it was taken until 2026-12-07, of the fields given only: a key
    stored before is still matched by its retry (keys live IDEMPOTENCY_TTL_HOURS)."""
    return _digest(operation, scope, body.model_dump(mode="json", exclude_unset=True))


def _digest(operation: str, scope: str, fields: dict[str, object]) -> str:
    canonical = json.dumps(
        fields,
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


# Claims of a key: the second is the one after an expired record was removed, a third only
# after that record was purged meanwhile by the housekeeping (services/maintenance.py).
_CLAIM_TRIES = 3


async def run_once(
    ctx: RequestContext,
    key: str | None,
    create: Create[ResponseT],
    produce: Callable[[], Awaitable[ResponseT]],
) -> ResponseT:
    """Run a create once per Idempotency-Key (every create answers 201), keeping its answer
    for IDEMPOTENCY_TTL_HOURS.

    The key is claimed first, with one insert that does nothing when the key has a record:
    a concurrent request with the same key waits at that insert until the first one's
    transaction ends, then replays its answer (or, if it was undone, claims the key itself).
    So no SAVEPOINT is needed, and a retry never does the work a second time. The answer is
    written into the claimed record once `produce` has made it, in the same transaction."""
    if key is None:
        return await produce()
    db, user_id, response_type = ctx.db, ctx.principal.user_id, create.response_type
    request_hash = fingerprint(create.operation, create.scope, create.body)
    ttl = timedelta(hours=ctx.settings.idempotency_ttl_hours)
    status_code = 201
    now = datetime.now(UTC)
    for _ in range(_CLAIM_TRIES):
        record_id = await idempotency_crud.claim(
            db,
            user_id=user_id,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            created_at=now,
            expires_at=now + ttl,
        )
        if record_id is not None:
            break
        stored = await idempotency_crud.get(db, user_id, key, now)
        if stored is not None:
            matches = {
                request_hash,
                given_fields_fingerprint(create.operation, create.scope, create.body),
            }
            return _replay(stored.request_hash, stored.response_body, matches, response_type)
        # The key's record has expired and is not purged yet: it is replaced.
        await idempotency_crud.delete_expired_key(db, user_id, key, now)
    else:
        raise RuntimeError(f"Idempotency-Key record could not be claimed in {_CLAIM_TRIES} tries")
    try:
        response = await produce()
    except AppError as exc:
        if exc.commit:  # the request keeps its writes, but the key has no answer to keep
            await idempotency_crud.forget(db, record_id)
        raise
    await idempotency_crud.set_response(db, record_id, response.model_dump_json())
    return response


def _replay(
    stored_hash: str, body: str, request_hashes: set[str], response_type: type[ResponseT]
) -> ResponseT:
    if stored_hash not in request_hashes:
        raise IdempotencyKeyReused()
    return response_type.model_validate_json(body)
