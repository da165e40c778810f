"""Open messages whose writer went silent, as a live stream tells its follower: once a silence.

A message is stale when it is open and has not changed for STALE_STREAM_SECONDS
(`messages.is_stale`, the same rule as the read model's `stale`). A silence is known by the time
of the message's last change: a follower is told of it once, and a change after it (a resumed
writer, a takeover) starts a new silence that may be told again.

What a stream reads tells whether a message is stale; the clock kept here only says when to
read again, so a follower waiting on a quiet bus still hears of a silence on time.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chat_store.crud.messages import StoredMessage
from chat_store.schemas.messages import OPEN_STATUSES
from chat_store.services import messages as message_service


@dataclass(frozen=True)
class Silence:
    """A stale message as the `stale` event shows it: `length` code points stored, no change
    `since`."""

    message_id: uuid.UUID
    seq: int
    status: str
    length: int
    since: datetime

    @classmethod
    def of(cls, row: StoredMessage) -> Silence:
        return cls(row.id, row.seq, row.status, row.partial_length, row.updated_at)

    def data(self) -> dict[str, Any]:
        return {
            "message_id": str(self.message_id),
            "seq": self.seq,
            "status": self.status,
            "length": self.length,
            "since": self.since.isoformat().replace("+00:00", "Z"),
        }


class Silences:
    """The silences one follower has been told, and when to look again for the next one."""

    def __init__(self, stale_after: timedelta) -> None:
        self.stale_after = stale_after
        self._told: dict[uuid.UUID, datetime] = {}  # message -> the last change of its told silence
        self._look_at = math.inf  # time.monotonic() at which an open message may turn stale

    def untold(self, rows: Iterable[StoredMessage], now: datetime) -> list[Silence]:
        """The silences of `rows` (all the open messages the stream covers, as just read) not
        yet told, now counted as told; the next look is when the first of the others turns
        stale."""
        silences: list[Silence] = []
        seen: dict[uuid.UUID, datetime] = {}
        turns_stale = math.inf
        for row in rows:
            if message_service.is_stale(row.status, row.updated_at, now, self.stale_after):
                seen[row.id] = row.updated_at
                if self._told.get(row.id) != row.updated_at:
                    silences.append(Silence.of(row))
            elif row.status in OPEN_STATUSES:
                left = (row.updated_at + self.stale_after - now).total_seconds()
                turns_stale = min(turns_stale, left)
        # Only messages still silent are remembered: one that moved and fell silent again has
        # a new last change anyway, and one that ended is no longer followed for this.
        self._told = seen
        self._look_at = time.monotonic() + turns_stale
        return silences

    def moved(self) -> None:
        """A message changed: it may turn stale one threshold from now."""
        self._look_at = min(self._look_at, time.monotonic() + self.stale_after.total_seconds())

    @property
    def due(self) -> bool:
        return time.monotonic() >= self._look_at

    def deadline(self, deadline: float) -> float:
        """`deadline` (a time.monotonic()), or the next look if it comes first."""
        return min(deadline, self._look_at)
