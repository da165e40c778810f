"""Live streams: follow one message's text, or a session's changes, from a durable cursor.

Readers subscribe first, then replay from the database, then follow the bus, dropping what
they already have by offset (message streams) or version (change feeds). The bus only wakes
readers up: any gap, dropped event or quiet period makes them re-read the database, so a lost
publish delays a reader by at most `poll_seconds` and never loses text. Both tell of an open
message whose writer went silent with one `stale` event a silence (services/silences.py).

A streaming reader never holds a database connection while it waits: each read is a short
session of its own.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.cache.bus import Subscription
from chat_store.crud import chat_sessions as chat_session_crud
from chat_store.crud import messages as message_crud
from chat_store.crud.messages import StoredMessage
from chat_store.db import read_snapshot, run_to_the_end
from chat_store.errors import MessageNotFound, OffsetMismatch
from chat_store.models import ChatSession
from chat_store.schemas.chat_sessions import ChatSessionRead
from chat_store.schemas.messages import OPEN_STATUSES
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services import events
from chat_store.services import messages as message_service
from chat_store.services import principals as principal_service
from chat_store.services.context import RequestContext
from chat_store.services.principals import Principal
from chat_store.services.silences import Silence, Silences
from chat_store.state import AppState

_REPLAY_BATCH = 200
_MESSAGE_EVENTS = (
    events.MessageDelta,
    events.MessageCreated,
    events.MessageUpdated,
    events.MessageDeleted,
)
_WAKE_SECONDS = 1.0  # how often a waiting reader checks for shutdown


@dataclass(frozen=True)
class StreamEvent:
    event: str
    data: dict[str, Any]
    id: str | None = None


class _CredentialRevoked(Exception):
    """The key or user a stream was opened with is gone: the stream ends."""


@dataclass
class StreamContext:
    """One stream: the app's state, who reads it, and the signal that the server stops.

    Its credential is checked in the database at its re-reads of the store, at most every
    STREAM_CREDENTIAL_CHECK_SECONDS (at every re-read with 0), and a pass ends for that check
    however busy the stream is (`recheck_by`): a revoked key, a deleted user or an expired access
    token ends the stream at most that plus STREAM_POLL_SECONDS after it happened. The request
    that opened the stream, which has just authenticated the caller, counts as the first check."""

    app: AppState
    principal: Principal
    shutdown: anyio.Event = field(default_factory=anyio.Event)
    # Counted among the live SSE streams (the stream stats): not a `stream: false` chat turn,
    # which follows its answer only to wait for it.
    counted: bool = True
    credential: principal_service.CredentialCheck = field(init=False)

    def __post_init__(self) -> None:
        trusted_for = self.app.settings.stream_credential_check_seconds
        self.credential = principal_service.CredentialCheck(self.principal, trusted_for)

    @property
    def poll_seconds(self) -> float:
        return self.app.settings.stream_poll_seconds

    @asynccontextmanager
    async def following(self, session_id: uuid.UUID) -> AsyncIterator[Subscription]:
        """The stream open: counted in the app's stream stats (if `counted`), subscribed to the
        session."""
        stats = self.app.streams if self.counted else None
        if stats is not None:
            stats.opened()
        try:
            async with self.app.bus.subscribe(events.channel(session_id)) as subscription:
                yield subscription
        finally:
            if stats is not None:
                stats.closed()

    def passes(self, subscription: Subscription) -> Iterator[None]:
        """One pass for each read of the store, until the server stops; each begins with
        nothing lost (what a pass misses, the next read covers)."""
        while not self.shutdown.is_set():
            subscription.lost = False
            yield

    def recheck_by(self) -> float:
        """When the current pass must end at the latest (time.monotonic()), so that the next
        re-read checks the credential although events keep arriving: a busy stream would
        otherwise never fall quiet for a poll interval, and never re-read."""
        return self.credential.checked_at + max(self.credential.trusted_for, self.poll_seconds)

    @asynccontextmanager
    async def reading(self, *, snapshot: bool = False) -> AsyncIterator[RequestContext]:
        """One read of the store, in a short session of its own, while the credential the
        stream was opened with still stands (checked first when it is due); with `snapshot`,
        every statement of it reads one point in time (db.read_snapshot)."""
        async with self.app.snapshot_sessionmaker() as db:
            if snapshot:
                await read_snapshot(db)
            if self.credential.due() and not await self.credential.holds(db):
                raise _CredentialRevoked
            yield RequestContext(db, self.principal, self.app)


_REVOKED_EVENT = StreamEvent("close", {"reason": "unauthorized"})


@dataclass(frozen=True)
class _Snapshot:
    row: StoredMessage
    text: str


async def _snapshot(
    context: StreamContext, session_id: uuid.UUID, message_id: uuid.UUID
) -> _Snapshot | None:
    async with context.reading() as ctx:
        row = await message_crud.get_for_owner(
            ctx.db, ctx.principal.user_id, session_id, message_id
        )
        if row is None:
            return None
        row, _, text = await message_service.read_text(ctx.db, row)
        return _Snapshot(row, text)


async def check_message_stream(
    ctx: RequestContext, session_id: uuid.UUID, message_id: uuid.UUID, offset: int
) -> None:
    """Before the stream starts (so errors are real HTTP errors): ownership and the offset."""
    await chat_session_service.get_owned(ctx, session_id)
    row = await message_crud.get_for_owner(ctx.db, ctx.principal.user_id, session_id, message_id)
    if row is None:
        raise MessageNotFound()
    length = len((await message_service.read_text(ctx.db, row))[2])
    if offset > length:
        raise OffsetMismatch(length)


async def _wait(
    subscription: Subscription, context: StreamContext, deadline: float
) -> events.SessionEvent | None:
    """The next bus event, or None when it is time to re-read the store (the deadline of this
    pass, or shutdown). The deadline is per pass, not per event: a busy channel (other messages
    of the session) must not postpone the re-read that covers a lost publish. What is no event
    (of this version) is passed over; a change of owner is a re-read now, with the credential
    checked, and so is the session's deletion."""
    while not context.shutdown.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        received = await subscription.next(min(remaining, _WAKE_SECONDS))
        if received is not None and (event := events.from_dict(received)) is not None:
            if isinstance(event, events.OwnerChanged):
                # Given to another account: the re-read checks the credential and the owner.
                context.credential.check_now()
                return None
            if isinstance(event, events.SessionGone):
                return None  # deleted: the re-read finds it gone
            return event
    return None


async def follow_message(
    context: StreamContext, session_id: uuid.UUID, message_id: uuid.UUID, offset: int
) -> AsyncIterator[StreamEvent]:
    """`delta` events from `offset` (ids are code-point offsets), then one `done`; a `stale`
    event (no id) each time the writer falls silent."""
    position = offset
    sent = _SentText(offset)
    silences = Silences(context.app.stale_after)
    try:
        async with context.following(session_id) as subscription:
            for _ in context.passes(subscription):
                snapshot = await run_to_the_end(_snapshot(context, session_id, message_id))
                if snapshot is None:  # deleted while followed
                    yield _done("deleted", None, position)
                    return
                if not sent.extended_by(snapshot.text):
                    # Its text was replaced (PATCH partial_content, or completed with another
                    # content): what was sent is not the start of it any more.
                    yield _reset(snapshot.text)
                    position = len(snapshot.text)
                    sent = _SentText(0, snapshot.text)
                elif len(snapshot.text) > position:
                    yield sent.add(_delta(snapshot.text[position:], len(snapshot.text)))
                    position = len(snapshot.text)
                row = snapshot.row
                if row.status not in OPEN_STATUSES:
                    yield _done(row.status, row.error_message, position)
                    return
                for silence in silences.untold([row], datetime.now(UTC)):
                    yield _stale(silence)
                async for event in _live_deltas(
                    subscription, context, message_id, position, silences
                ):
                    position = int(event.data["offset"])
                    yield sent.add(event)
            yield StreamEvent("close", {"reason": "shutdown", "offset": position}, str(position))
    except _CredentialRevoked:
        yield _REVOKED_EVENT


async def _live_deltas(
    subscription: Subscription,
    context: StreamContext,
    message_id: uuid.UUID,
    position: int,
    silences: Silences,
) -> AsyncIterator[StreamEvent]:
    """Deltas from the bus while they continue the text exactly; returns to re-read otherwise
    (and when the message may have fallen silent)."""
    wanted = str(message_id)
    deadline = time.monotonic() + context.poll_seconds
    while True:
        limit = min(deadline, context.recheck_by())
        event = await _wait(subscription, context, silences.deadline(limit))
        if event is None or subscription.lost:
            return
        if not isinstance(event, _MESSAGE_EVENTS) or event.message_id != wanted:
            continue  # another message of the session: the timer keeps running
        deadline = time.monotonic() + context.poll_seconds
        if not isinstance(event, events.MessageDelta):
            return  # a status change or deletion: the store says what it is
        start, delta = event.start, event.delta
        end = start + len(delta)
        if end <= position:
            continue  # already sent (replayed before this event arrived)
        if start > position:
            return  # a gap: something was missed; re-read
        silences.moved()
        yield _delta(delta[position - start :], end)
        position = end


class _SentText:
    """What a message stream has sent of the text, from where it started (the reader's own
    text before that is not known here): a digest of it, to tell whether the stored text still
    starts with it."""

    def __init__(self, start: int, text: str = "") -> None:
        self.start, self.end = start, start + len(text)
        self._digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)

    def add(self, event: StreamEvent) -> StreamEvent:
        delta = str(event.data["delta"])
        self._digest.update(delta.encode("utf-8", "surrogatepass"))
        self.end = int(event.data["offset"])
        return event

    def extended_by(self, text: str) -> bool:
        if len(text) < self.end:
            return False
        if self.end == self.start:
            return True
        seen = text[self.start : self.end].encode("utf-8", "surrogatepass")
        return hashlib.blake2b(seen, digest_size=16).digest() == self._digest.digest()


def _reset(text: str) -> StreamEvent:
    # The whole text again: the reader's copy is replaced, and a reconnect goes on from its end.
    return StreamEvent("reset", {"text": text, "offset": len(text)}, str(len(text)))


def _delta(text: str, end: int) -> StreamEvent:
    return StreamEvent("delta", {"delta": text, "offset": end}, str(end))


def _done(status: str, error_message: str | None, length: int) -> StreamEvent:
    data = {"status": status, "error_message": error_message, "length": length}
    return StreamEvent("done", data, str(length))


def _stale(silence: Silence) -> StreamEvent:
    # No id: nothing stored changed, so where a reconnect resumes stays where it was.
    return StreamEvent("stale", silence.data())


async def check_session_feed(ctx: RequestContext, session_id: uuid.UUID) -> None:
    await chat_session_service.get_owned(ctx, session_id)


async def follow_session(
    context: StreamContext, session_id: uuid.UUID, after_version: int
) -> AsyncIterator[StreamEvent]:
    """The session's changes after `after_version`; event ids are history versions.

    The replay gives the current state of whatever changed (`message.created` for messages made
    after the cursor, `message.updated` for the rest, `session.updated`); live events add
    `message.delta` and `message.deleted`, which a replay folds into the state it shows. An open
    message whose writer falls silent is told with a `stale` event (no id), once a silence.
    """
    position = after_version
    silences = Silences(context.app.stale_after)
    first = True
    # Where the replay under way began: a message made after it is `message.created` in every
    # part of it (the reader has not seen it), whatever part it comes in.
    replay_from: int | None = None
    try:
        async with context.following(session_id) as subscription:
            for _ in context.passes(subscription):
                if replay_from is None:
                    replay_from = position
                replayed = await run_to_the_end(
                    _replay_session(
                        context,
                        session_id,
                        position,
                        created_after=replay_from,
                        find_open=first or silences.due,
                    )
                )
                if replayed is None:
                    yield StreamEvent("session.deleted", {"session_id": str(session_id)})
                    return
                position, replay_from = replayed.version, replayed.began
                for event in replayed.events:
                    yield event
                if replayed.events:
                    silences.moved()  # what changed meanwhile may fall silent from now on
                if replayed.more:
                    continue  # the replay goes on from where this part of it ended
                replay_from, first = None, False
                if replayed.open_messages is not None:
                    for silence in silences.untold(replayed.open_messages, datetime.now(UTC)):
                        yield _stale(silence)
                deadline = time.monotonic() + context.poll_seconds
                while True:
                    limit = min(deadline, context.recheck_by())
                    change = await _wait(subscription, context, silences.deadline(limit))
                    if change is None or subscription.lost:
                        break
                    if change.version <= position:
                        continue
                    if change.version > position + 1:
                        break  # missed something: replay from the store
                    position = change.version
                    deadline = time.monotonic() + context.poll_seconds
                    if isinstance(change, _MESSAGE_EVENTS):
                        silences.moved()
                    if isinstance(change, events.VersionUsed):
                        continue  # a version used up without a visible change
                    yield _feed_event(change)
            yield StreamEvent("close", {"reason": "shutdown"}, str(position))
    except _CredentialRevoked:
        yield _REVOKED_EVENT


@dataclass(frozen=True)
class _Replay:
    events: list[StreamEvent]
    version: int  # the history version the replay brings the follower to
    more: bool  # changed after `version` too: replayed in the next part
    # Where the replay began, as it was taken: 0 for a cursor past the session's version.
    began: int
    # The session's open messages, read in the same snapshot, when asked for: when the feed
    # opens (one may be silent already) and when the first of those known may turn stale.
    open_messages: list[StoredMessage] | None


async def _replay_session(
    context: StreamContext,
    session_id: uuid.UUID,
    after_version: int,
    *,
    created_after: int,
    find_open: bool,
) -> _Replay | None:
    # One snapshot for the version and every row and chunk read below. Read apart, a delta
    # committed between two reads is in the replayed text (or shows a version past `current`)
    # and then comes again live; no filter on versions can take it out of the text (chunks carry
    # none). In one snapshot the replay is the state at `current`, and the live events
    # (subscribed before this read) continue at `current + 1`.
    async with context.reading(snapshot=True) as ctx:
        db = ctx.db
        chat_session = await chat_session_crud.get_for_owner(db, ctx.principal.user_id, session_id)
        if chat_session is None:
            return None
        current = chat_session.history_version
        if current < after_version:
            # A position past the session's version is one of a session deleted and created
            # again with the same id (a client's id): this one is replayed from its start.
            after_version = created_after = 0
        changes: list[events.SessionEvent] = []
        reached: int | None = None
        if current > after_version:
            changes, reached = await _changes(ctx, chat_session, after_version, created_after)
        # Once, with the replay's last part (it is what the feed goes on from).
        open_messages = (
            await message_crud.open_in_session(db, session_id)
            if find_open and reached is None
            else None
        )
        version = current if reached is None else reached
        return _Replay(
            [_feed_event(event) for event in changes],
            version,
            reached is not None,
            created_after,
            open_messages,
        )


async def _changes(
    ctx: RequestContext, chat_session: ChatSession, after_version: int, created_after: int
) -> tuple[list[events.SessionEvent], int | None]:
    """What changed in the session after `after_version`, in version order: all of it, or (with
    the version it reaches) the first part, of about _REPLAY_BATCH messages and deletions. A
    replay of a long session is sent in parts, each read as it is sent, not held whole; a
    message made after `created_after` (where the replay began) is `message.created`."""
    db, session_id = ctx.db, chat_session.id
    rows = await _changed_rows(db, session_id, after_version)
    reached = rows[-1].version if len(rows) >= _REPLAY_BATCH else None
    tombstones = await message_crud.deleted_since(
        db, session_id, after_version, upto=reached, limit=_REPLAY_BATCH
    )
    if len(tombstones) == _REPLAY_BATCH:
        # As many deletions: the part ends at the last of them, or before (a version is one
        # change: a deletion's is no message's).
        last_deleted = tombstones[-1].version
        reached = last_deleted if reached is None else min(reached, last_deleted)
        rows = [row for row in rows if row.version <= reached]
    changes: list[events.SessionEvent] = []
    updated = chat_session.updated_version
    if after_version < updated and (reached is None or updated <= reached):
        chat_session_read = ChatSessionRead.from_model(chat_session)
        changes.append(events.SessionUpdated(updated, chat_session_read.model_dump(mode="json")))
    reads = await message_service.to_reads(ctx, rows)
    for row, read in zip(rows, reads, strict=True):
        kind = (
            events.MessageCreated if row.created_version > created_after else events.MessageUpdated
        )
        changes.append(kind(row.version, read.model_dump(mode="json")))
    for tombstone in tombstones:
        changes.append(
            events.MessageDeleted(
                tombstone.version, message_id=str(tombstone.message_id), seq=tombstone.seq
            )
        )
    changes.sort(key=lambda event: event.version)
    return changes, reached


async def _changed_rows(
    db: AsyncSession, session_id: uuid.UUID, after_version: int
) -> list[StoredMessage]:
    """About _REPLAY_BATCH messages changed after `after_version`, in change order, and every
    message of the last version read (a batch append once gave several messages one version: a
    part never splits them)."""
    # Strictly after the cursor: a version is never shown twice (seq only breaks ties
    # between rows of one version).
    rows = await message_crud.changed_since(db, session_id, (after_version, 1 << 62), _REPLAY_BATCH)
    if len(rows) >= _REPLAY_BATCH:
        last = rows[-1]
        rows += await message_crud.changed_since(
            db, session_id, (last.version, last.seq), None, only_version=last.version
        )
    return rows


def _feed_event(event: events.SessionEvent) -> StreamEvent:
    """A change as the session's feed sends it: its id is the history version."""
    return StreamEvent(event.type, event.data(), str(event.version))
