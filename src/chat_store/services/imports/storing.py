"""Storing an imported conversation: one session and its messages, all of it or nothing;
the same conversation imported again answers the session it made."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.crud import export as export_crud
from chat_store.crud import messages as message_crud
from chat_store.ids import uuid7
from chat_store.models import ChatSession
from chat_store.models.base import attribute_columns
from chat_store.schemas.chat_sessions import ChatSessionRead
from chat_store.schemas.export import ImportFormat, ImportResult, ImportSource
from chat_store.services import export, idempotency
from chat_store.services.context import RequestContext
from chat_store.services.imports.formats import parse
from chat_store.services.imports.spec import ImportSpec

_SESSION_COLUMNS = attribute_columns(ChatSession)


async def import_document(
    ctx: RequestContext, document: Any, format: ImportFormat | None, key: str | None
) -> ImportResult:
    """Validate a source conversation and import it for the caller, once per Idempotency-Key
    (see import_chat_session)."""
    spec = parse(document, ctx.settings, format)

    async def produce() -> ImportResult:
        return await import_chat_session(ctx.db, ctx.principal.user_id, spec)

    source = ImportSource(format=spec.format, fingerprint=spec.fingerprint)
    create = idempotency.Create("import_chat_session", "", source, ImportResult)
    return await idempotency.run_once(ctx, key, create, produce)


def _result(row: ChatSession, spec: ImportSpec, *, created: bool) -> ImportResult:
    return ImportResult(
        session=ChatSessionRead.from_model(row),
        created=created,
        format=spec.format,
        message_count=row.message_count,
    )


async def import_chat_session(
    db: AsyncSession, user_id: uuid.UUID, spec: ImportSpec
) -> ImportResult:
    """Store a validated conversation as a session of `user_id`; the same conversation
    imported before answers that session (created=False)."""
    existing = await export_crud.find_imported(db, user_id, spec.fingerprint)
    if existing is not None:
        return _result(existing, spec, created=False)
    now = datetime.now(UTC)
    session_id = uuid7()
    created_at = spec.created_at or export.parse_time(
        spec.messages[0]["created_at"] if spec.messages else None
    )
    created_at = created_at or now
    rows = []
    for index, message in enumerate(spec.messages):
        # Seqs and change-feed versions of a chat-store export are kept; others count from 1.
        number = index + 1
        rows.append(
            export.message_row(
                message,
                message_id=uuid7(),
                session_id=session_id,
                user_id=user_id,
                seq=message["seq"] or number,
                created_version=message["created_version"] or number,
                version=message["version"] or message["created_version"] or number,
                default_time=created_at,
            )
        )
    last_message_at = spec.last_message_at or (
        max(message.created_at for message in rows) if rows else None
    )
    updated_at = spec.updated_at or last_message_at or created_at
    row = ChatSession(
        id=session_id,
        user_id=user_id,
        title=spec.title,
        is_favorite=spec.is_favorite,
        status=spec.status,
        metadata_=spec.metadata,
        system_prompt=spec.system_prompt,
        workspace_repo=spec.workspace.repo if spec.workspace else None,
        workspace_branch=spec.workspace.branch if spec.workspace else None,
        workspace_path=spec.workspace.path if spec.workspace else None,
        message_count=len(rows),
        total_tokens=sum(message.token_count or 0 for message in rows),
        last_seq=max([spec.last_seq or 0, *(message.seq for message in rows)]),
        history_version=max([0, *(message.version for message in rows)]),
        updated_version=0,
        last_message_at=last_message_at,
        # An import is activity: an old conversation brought in is not archived or purged as
        # idle the next hour.
        last_activity_at=now,
        created_at=created_at,
        updated_at=updated_at,
        ended_at=(spec.ended_at or updated_at) if spec.status == "ended" else None,
        archived_at=None,
        archive_key=None,
        restored_at=None,
        source_fingerprint=spec.fingerprint,
    )
    values = {column: getattr(row, key) for key, column in _SESSION_COLUMNS}
    if not await export_crud.insert_imported_session(db, values):
        # Imported concurrently by another request, which committed first.
        found = await export_crud.find_imported(db, user_id, spec.fingerprint)
        assert found is not None
        return _result(found, spec, created=False)
    await message_crud.insert_messages(db, rows)
    return _result(row, spec, created=True)
