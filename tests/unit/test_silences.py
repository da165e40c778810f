"""What a follower is told of silent writers: each silence once, a new one after a change."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from chat_store.crud.messages import StoredMessage
from chat_store.services.silences import Silences

THRESHOLD = timedelta(seconds=300)
START = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def message(status: str, updated_at: datetime, length: int = 5) -> StoredMessage:
    return StoredMessage(
        id=uuid.UUID(int=1),
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        seq=3,
        role="assistant",
        content=None,
        partial_content="x" * length,
        partial_length=length,
        partial_bytes=length,
        status=status,
        error_message=None,
        context=None,
        metadata_={},
        token_count=None,
        model=None,
        latency_ms=None,
        created_version=1,
        version=2,
        created_at=START,
        updated_at=updated_at,
        completed_at=None,
    )


def test_each_silence_is_told_once_and_a_change_starts_a_new_one() -> None:
    silences = Silences(THRESHOLD)
    written = message("in_progress", START)
    assert silences.untold([written], START + THRESHOLD / 2) == []
    assert not silences.due  # the next look is half a threshold away

    [told] = silences.untold([written], START + THRESHOLD)
    assert told.data() == {
        "message_id": str(written.id),
        "seq": 3,
        "status": "in_progress",
        "length": 5,
        "since": "2026-12-05T12:00:00Z",
    }
    # However often the stream looks again, the same silence is not told twice.
    assert silences.untold([written], START + 3 * THRESHOLD) == []

    moved = message("in_progress", START + 3 * THRESHOLD, length=9)
    assert silences.untold([moved], START + 3 * THRESHOLD) == []
    [again] = silences.untold([moved], START + 4 * THRESHOLD)
    assert (again.length, again.since) == (9, START + 3 * THRESHOLD)


def test_only_open_messages_fall_silent() -> None:
    silences = Silences(THRESHOLD)
    later = START + 10 * THRESHOLD
    for status in ("complete", "failed", "cancelled"):
        assert silences.untold([message(status, START)], later) == []
    assert [s.status for s in silences.untold([message("pending", START)], later)] == ["pending"]
