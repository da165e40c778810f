"""Chat sessions: ownership, ids, titles, the list order."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from chat_store.crud import archive as archive_crud
from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.crud import generations as generation_crud
from chat_store.crud.pagination import PageRequest
from chat_store.errors import ChatSessionExists, ChatSessionNotFound, ValidationFailed
from chat_store.ids import uuid7
from chat_store.models import ChatSession
from chat_store.schemas.chat_sessions import (
    ChatSessionCreate,
    ChatSessionFilters,
    ChatSessionPage,
    ChatSessionRead,
    ChatSessionUpdate,
    Workspace,
)
from chat_store.schemas.pagination import Pagination
from chat_store.services import events, idempotency, limits
from chat_store.services.archive import deletions
from chat_store.services.context import RequestContext

AUTO_TITLE_CHARS = 80


def title_from_first_message(text: str) -> str | None:
    """First line of the first user message, whitespace stripped, cut to 80 characters."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            return stripped[:AUTO_TITLE_CHARS]
    return None


def title_from_user_texts(texts: Iterable[str]) -> str | None:
    """The title the first of these user messages' texts with a line of text gives: a blank
    one names nothing (appended one by one, the next would name the session)."""
    titles = (title_from_first_message(text) for text in texts)
    return next((title for title in titles if title is not None), None)


async def create_chat_session(
    ctx: RequestContext, body: ChatSessionCreate, idempotency_key: str | None
) -> ChatSessionRead:
    _check_limits(ctx, body.title, body.metadata)

    async def produce() -> ChatSessionRead:
        return ChatSessionRead.from_model(await _insert(ctx, body))

    creating = idempotency.Create("create_chat_session", "", body, ChatSessionRead)
    return await idempotency.run_once(ctx, idempotency_key, creating, produce)


async def _insert(ctx: RequestContext, body: ChatSessionCreate) -> ChatSession:
    session_id = body.id or uuid7()
    now = datetime.now(UTC)
    row = ChatSession(
        id=session_id,
        user_id=ctx.principal.user_id,
        title=body.title,
        is_favorite=False,
        status="active",
        metadata_=body.metadata,
        system_prompt=body.system_prompt,
        message_count=0,
        total_tokens=0,
        last_seq=0,
        history_version=0,
        updated_version=0,
        last_message_at=None,
        last_activity_at=now,
        created_at=now,
        updated_at=now,
        ended_at=None,
    )
    _apply_workspace(row, body.workspace)
    # ON CONFLICT DO NOTHING: a taken id (also one inserted concurrently) is a 409, with no
    # SAVEPOINT around the insert.
    if not await chat_session_crud.insert_if_new(ctx.db, row, standalone=True):
        raise ChatSessionExists(f"A session with id {session_id} already exists")
    return row


async def get_owned(
    ctx: RequestContext, session_id: uuid.UUID, *, for_update: bool = False
) -> ChatSession:
    row = await chat_session_crud.get_for_owner(
        ctx.db, ctx.principal.user_id, session_id, for_update=for_update
    )
    if row is None:
        raise ChatSessionNotFound()
    return row


async def get_chat_session(ctx: RequestContext, session_id: uuid.UUID) -> ChatSessionRead:
    return ChatSessionRead.from_model(await get_owned(ctx, session_id))


async def list_chat_sessions(
    ctx: RequestContext,
    filters: ChatSessionFilters,
    pagination: Pagination,
    cursor: str | None = None,
) -> ChatSessionPage:
    """The caller's sessions, newest activity first unless `order=asc`.

    `after`/`before` name a session and continue from where it is now; `cursor` (a page's
    `next_cursor`) continues from where the page's last session was when the page was read, so
    a session that got a message meanwhile (and moved to the top) does not repeat the list.
    """
    user_id = ctx.principal.user_id
    if cursor is not None:
        place = _ListPlace.decode(cursor, pagination)
    else:
        place = await _place_of_session(ctx, pagination)
    page = PageRequest(
        limit=pagination.limit,
        descending=place.order == "desc",
        cursor=place.key,
        direction=place.direction,
    )
    rows, has_more = await chat_session_crud.list_for_owner(
        ctx.db, user_id, page, **filters.model_dump()
    )
    data = [ChatSessionRead.from_model(row) for row in rows]
    answer = ChatSessionPage.of(data, has_more=has_more)
    if has_more and rows:
        last = rows[-1] if place.direction == "after" else rows[0]
        following = _ListPlace(place.direction, place.order, (last.last_activity_at, last.id))
        answer.next_cursor = following.encode()
    return answer


@dataclass(frozen=True)
class _ListPlace:
    """Where a page of the session list starts: a side of a (last activity, id) key."""

    direction: Literal["after", "before"]
    order: Literal["asc", "desc"]
    key: tuple[datetime, uuid.UUID] | None

    def encode(self) -> str:
        assert self.key is not None
        at, session_id = self.key
        fields = [self.direction, self.order, at.isoformat(), str(session_id)]
        raw = json.dumps(fields, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str, pagination: Pagination) -> _ListPlace:
        if pagination.after is not None or pagination.before is not None:
            raise ValidationFailed("give a cursor or after/before, not both", ["query", "cursor"])
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            direction, order, at, session_id = json.loads(raw)
            if direction not in ("after", "before") or order not in ("asc", "desc"):
                raise ValueError("not a direction")
            activity = datetime.fromisoformat(at)
            if activity.tzinfo is None:
                raise ValueError("a time without its offset")
            place = cls(direction, order, (activity.astimezone(UTC), uuid.UUID(session_id)))
        # TypeError and AttributeError: fields of the wrong JSON type; OverflowError: a time at
        # the calendar's edge that UTC cannot hold (0001-01-01T00:00:00+14:00).
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise ValidationFailed(
                "the cursor is not one this list gave (pass a page's next_cursor as it is)",
                ["query", "cursor"],
            ) from exc
        if pagination.order is not None and pagination.order != place.order:
            raise ValidationFailed(
                f"the cursor continues a list in {place.order} order", ["query", "order"]
            )
        return place


async def _place_of_session(ctx: RequestContext, pagination: Pagination) -> _ListPlace:
    """The place of the `after`/`before` session as it is now (the start without either)."""
    direction: Literal["after", "before"] = "before" if pagination.before is not None else "after"
    order: Literal["asc", "desc"] = "desc" if pagination.descending("desc") else "asc"
    cursor_id = pagination.after or pagination.before
    if cursor_id is None:
        return _ListPlace(direction, order, None)
    key = await chat_session_crud.get_sort_key(ctx.db, ctx.principal.user_id, cursor_id)
    if key is None:
        raise ChatSessionNotFound("The cursor session does not exist")
    return _ListPlace(direction, order, (key[0], key[1]))


async def update_chat_session(
    ctx: RequestContext, session_id: uuid.UUID, body: ChatSessionUpdate
) -> ChatSessionRead:
    _check_limits(ctx, body.title, body.metadata)
    row = await get_owned(ctx, session_id, for_update=True)
    changes = body.model_dump(exclude_unset=True)
    now = datetime.now(UTC)
    if "title" in changes:
        row.title = changes["title"]
    if "is_favorite" in changes:
        row.is_favorite = changes["is_favorite"]
    if "metadata" in changes:
        row.metadata_ = changes["metadata"]
    if "workspace" in changes:
        _apply_workspace(row, body.workspace)
    if "system_prompt" in changes:
        row.system_prompt = changes["system_prompt"]
    if "status" in changes and changes["status"] != row.status:
        row.status = changes["status"]
        row.ended_at = now if row.status == "ended" else None
    return await _save_change(ctx, row, now)


async def toggle_favorite(
    ctx: RequestContext, session_id: uuid.UUID, value: bool | None
) -> ChatSessionRead:
    row = await get_owned(ctx, session_id, for_update=True)
    row.is_favorite = (not row.is_favorite) if value is None else value
    return await _save_change(ctx, row, datetime.now(UTC))


async def _save_change(ctx: RequestContext, row: ChatSession, now: datetime) -> ChatSessionRead:
    """Store a change to the session's own fields and announce it on the change feed."""
    row.updated_at = now
    row.history_version += 1
    row.updated_version = row.history_version
    await chat_session_crud.flush(ctx.db)
    read = ChatSessionRead.from_model(row)
    event = events.SessionUpdated(row.updated_version, read.model_dump(mode="json"))
    events.publish_after_commit(ctx.db, ctx.bus, row.id, event)
    return read


async def delete_chat_session(ctx: RequestContext, session_id: uuid.UUID) -> None:
    user_id = ctx.principal.user_id
    # The lease rows of its answers first, before the session's row (which lock_keys takes):
    # the order a completion or a cancel takes them in (crud/generations.py).
    generating = await generation_crud.lock_leases(ctx.db, user_id, session_id=session_id)
    # Its archive object is deleted once the rows are committed gone.
    keys = await archive_crud.lock_keys(ctx.db, user_id, session_id)
    await deletions.delete_after_commit(ctx.db, ctx.app.sessionmaker, ctx.app.archive, keys)
    if not await chat_session_crud.delete_for_owner(ctx.db, user_id, session_id):
        raise ChatSessionNotFound()
    events.stop_generations_after_commit(ctx.db, ctx.bus, generating)
    # Its followers end at once, not at their next poll of the store.
    events.publish_after_commit(ctx.db, ctx.bus, session_id, events.SessionGone())


def _check_limits(ctx: RequestContext, title: str | None, metadata: dict[str, Any] | None) -> None:
    limits.check_title(ctx.settings, title, ["body", "title"])
    limits.check_metadata(ctx.settings, metadata, ["body", "metadata"])


def _apply_workspace(row: ChatSession, workspace: Workspace | None) -> None:
    row.workspace_repo = workspace.repo if workspace else None
    row.workspace_branch = workspace.branch if workspace else None
    row.workspace_path = workspace.path if workspace else None
