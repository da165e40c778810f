"""Change events of a session, published after commit on the bus (one channel per session).

Events carry the session's history version they were made at; readers use it to drop what
they have already seen and to notice what they missed (then they re-read the database). The
writers and the readers (services/streams.py) share the types below; on the bus an event is the
dict its `to_dict` gives, read back with `from_dict`. The stop requests of generated answers
(a cancel, a takeover, a deletion) go on a channel of their own, heard by every process's runner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.cache.bus import Bus
from chat_store.services import hooks


class _Event:
    __slots__: tuple[str, ...] = ()
    type: ClassVar[str]
    version: int

    def data(self) -> dict[str, Any]:
        """The event's fields, as the change feed shows them (its SSE event's data)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.data()}


@dataclass(frozen=True, slots=True)
class MessageDelta(_Event):
    """Text streamed into a message: `delta` at code point `start`; `offset` is the length of
    its text after it."""

    type: ClassVar[str] = "message.delta"
    version: int
    message_id: str
    start: int
    delta: str
    offset: int


@dataclass(frozen=True, slots=True)
class _MessageShown(_Event):
    version: int
    message: dict[str, Any]  # as the API shows it (a MessageRead in JSON)

    @property
    def message_id(self) -> str:
        return str(self.message["id"])


@dataclass(frozen=True, slots=True)
class MessageCreated(_MessageShown):
    """A new message."""

    type: ClassVar[str] = "message.created"


@dataclass(frozen=True, slots=True)
class MessageUpdated(_MessageShown):
    """A message changed (status, text, metadata, ...)."""

    type: ClassVar[str] = "message.updated"


@dataclass(frozen=True, slots=True)
class MessageDeleted(_Event):
    type: ClassVar[str] = "message.deleted"
    version: int
    message_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class SessionUpdated(_Event):
    """The session's own fields changed (title, status, ...), as the API now shows it."""

    type: ClassVar[str] = "session.updated"
    version: int
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VersionUsed(_Event):
    """A version taken with no visible change (a refused delta): readers see no gap."""

    type: ClassVar[str] = "sync"
    version: int


@dataclass(frozen=True, slots=True)
class OwnerChanged(_Event):
    """The session was given to another account (a guest's, claimed): its followers check
    at once that they may still follow it. Never shown to a reader; it changes no history (its
    version is 0)."""

    type: ClassVar[str] = "session.owner_changed"
    version: int = 0


@dataclass(frozen=True, slots=True)
class SessionGone(_Event):
    """The session was deleted: its followers re-read at once, find it gone and say so
    (`session.deleted`, or `done` with status `deleted`). Never shown to a reader as it is."""

    type: ClassVar[str] = "session.gone"
    version: int = 0


SessionEvent: TypeAlias = (
    MessageDelta
    | MessageCreated
    | MessageUpdated
    | MessageDeleted
    | SessionUpdated
    | VersionUsed
    | OwnerChanged
    | SessionGone
)
MessageEvent: TypeAlias = MessageDelta | MessageCreated | MessageUpdated | MessageDeleted

_TYPES: dict[str, type[SessionEvent]] = {
    kind.type: kind
    for kind in (
        MessageDelta,
        MessageCreated,
        MessageUpdated,
        MessageDeleted,
        SessionUpdated,
        VersionUsed,
        OwnerChanged,
        SessionGone,
    )
}


def from_dict(data: dict[str, Any]) -> SessionEvent | None:
    """The event `to_dict` gave, or None for anything else (the reader re-reads the store)."""
    kind = _TYPES.get(data.get("type", ""))
    if kind is None:
        return None
    try:
        return kind(**{key: value for key, value in data.items() if key != "type"})
    except TypeError:
        return None


def channel(session_id: uuid.UUID) -> str:
    return f"session:{session_id}"


def publish_after_commit(
    db: AsyncSession, bus: Bus, session_id: uuid.UUID, event: SessionEvent
) -> None:
    """Publish once the request's transaction has committed (never, if it is rolled back)."""
    hooks.after_commit(db, _publisher(bus, session_id, event))


def publish_to_each_after_commit(
    db: AsyncSession, bus: Bus, session_ids: Sequence[uuid.UUID], event: SessionEvent
) -> None:
    """Publish `event` on each session's channel once committed, all at once: they share the
    bus's round trips rather than wait for one each."""
    if not session_ids:
        return
    data = event.to_dict()

    async def publish() -> None:
        # In parts: the bus drops what is queued beyond its outbox's bound.
        for start in range(0, len(session_ids), _PUBLISH_PART):
            part = session_ids[start : start + _PUBLISH_PART]
            await asyncio.gather(*(bus.publish(channel(each), data) for each in part))

    hooks.after_commit(db, publish)


_PUBLISH_PART = 500


async def publish_when_committed(
    db: AsyncSession, bus: Bus, session_id: uuid.UUID, event: SessionEvent
) -> None:
    """Publish what a write the session ran has changed, once it is committed: after the open
    transaction commits, or at once when the write committed by itself."""
    await hooks.when_committed(db, _publisher(bus, session_id, event))


def _publisher(
    bus: Bus, session_id: uuid.UUID, event: SessionEvent
) -> Callable[[], Awaitable[None]]:
    async def publish() -> None:
        await bus.publish(channel(session_id), event.to_dict())

    return publish


# The bus channel of stop requests, heard by every process's generation runner (internal: "_"
# channels are not counted as readers).
STOP_CHANNEL = "_generation"


@dataclass(frozen=True)
class StopRequest:
    """Stop generating this answer, sent on the bus to every process: it was cancelled, or
    (`taken_by`) that process took it over, and any other still running it has lost it."""

    message_id: uuid.UUID
    taken_by: str | None = None  # the process that goes on with it

    def to_dict(self) -> dict[str, Any]:
        data = {"type": "generation.stop", "message_id": str(self.message_id)}
        if self.taken_by is not None:
            data["taken_by"] = self.taken_by
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StopRequest | None:
        if data.get("type") != "generation.stop":
            return None
        taken_by = data.get("taken_by")
        try:
            return cls(
                uuid.UUID(str(data["message_id"])),
                taken_by if isinstance(taken_by, str) else None,
            )
        except (KeyError, ValueError):
            return None


def stop_generations_after_commit(
    db: AsyncSession, bus: Bus, message_ids: Sequence[uuid.UUID]
) -> None:
    """Once the transaction commits, every process generating one of these answers stops: they
    are deleted, and a run would otherwise call the model on until its next write or renewal."""
    if not message_ids:
        return

    async def announce() -> None:
        for message_id in message_ids:
            await bus.publish(STOP_CHANNEL, StopRequest(message_id).to_dict())

    hooks.after_commit(db, announce)
