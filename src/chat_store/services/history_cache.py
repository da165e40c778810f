"""Hot history: the newest messages of a session, cached as ready-made JSON.

An entry is tagged with the session's `history_version`, which every change to the session's
messages bumps in the same transaction. A read compares the tag with the version it reads from
the database (the ownership check reads that row anyway), so a read after a write never gets a
stale copy, whatever happened to Redis in between; a lost invalidation can only cause a miss.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from chat_store.cache import Cache

_RS = "\x1e"
WINDOW = 100  # messages kept per session: more than a client's usual "last N" read
TTL_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class SerializedPage:
    """A page of messages already in JSON, each as the API shows it (a MessageRead): what the
    cache keeps, handed to the router to put into the list answer without serialising them
    again. `ids` are the messages' ids, in the page's order."""

    documents: list[str]
    ids: list[str]
    has_more: bool


@dataclass(frozen=True)
class HistoryWindow:
    version: int
    # Unix time after which an open message in the copy would read as stale; None: never.
    fresh_until: float | None
    # Seqs, ids and JSON documents of the newest messages, in ascending seq order.
    seqs: list[int]
    ids: list[str]
    documents: list[str]
    # True when the window starts at the session's first message (nothing older exists).
    reaches_start: bool

    def encode(self) -> bytes:
        """A small JSON header line, then the documents as they are, separated by RS (0x1E).

        JSON text never holds a raw 0x1E (control characters are escaped), so the split is
        exact; and a read decodes only the header, not a hundred documents.
        """
        header = json.dumps(
            {
                "v": self.version,
                "f": self.fresh_until,
                "s": self.seqs,
                "i": self.ids,
                "r": self.reaches_start,
            },
            separators=(",", ":"),
        )
        return (header + "\n" + _RS.join(self.documents)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> HistoryWindow:
        header_text, _, body = raw.decode().partition("\n")
        header = json.loads(header_text)
        documents = body.split(_RS) if header["s"] else []
        if len(documents) != len(header["s"]):
            raise ValueError("damaged history window")
        return cls(
            version=header["v"],
            fresh_until=header["f"],
            seqs=header["s"],
            ids=header["i"],
            documents=documents,
            reaches_start=header["r"],
        )

    def page(
        self, *, after_seq: int | None, before_seq: int | None, descending: bool, limit: int
    ) -> tuple[list[int], bool] | None:
        """Indexes of the page's rows in the window and has_more, or None when the window
        cannot answer exactly."""
        low = after_seq if after_seq is not None else -1
        high = before_seq if before_seq is not None else 1 << 62
        indexes = [i for i, seq in enumerate(self.seqs) if low < seq < high]
        if descending:
            indexes.reverse()
        # Rows in range may lie below the window, unless the range starts inside it.
        window_low = self.seqs[0] if self.seqs else None
        covers_range = self.reaches_start or (window_low is not None and low >= window_low - 1)
        if len(indexes) > limit and (descending or covers_range):
            # Newest first, the page is the top of the range, which the window holds whole.
            return indexes[:limit], True
        if not covers_range:
            return None
        return indexes, False

    def serialized_page(self, indexes: list[int], has_more: bool) -> SerializedPage:
        """The rows at `indexes`, as they are stored."""
        return SerializedPage(
            [self.documents[i] for i in indexes], [self.ids[i] for i in indexes], has_more
        )


# The shape of the cached documents (a MessageRead's JSON): bumped when that shape changes, so a
# copy written by an older release is never answered as the new shape (2: tool calls).
DOCUMENT_SHAPE = 2


def cache_key(session_id: uuid.UUID, created_at: datetime) -> str:
    """The cache key of a session's history (scripts/bench flushes these to measure misses)."""
    # A session id can be taken again once its session is deleted, and the new session counts
    # its versions from 0 again: the creation time tells the two apart.
    return f"hist:{DOCUMENT_SHAPE}:{session_id}:{created_at.timestamp():.6f}"


async def load(
    cache: Cache, session_id: uuid.UUID, created_at: datetime, version: int
) -> HistoryWindow | None:
    raw = await cache.get(cache_key(session_id, created_at))
    if raw is None:
        return None
    try:
        window = HistoryWindow.decode(raw)
    except (ValueError, KeyError):
        return None
    if window.version != version:
        return None
    if window.fresh_until is not None and time.time() >= window.fresh_until:
        return None
    return window


async def store(
    cache: Cache, session_id: uuid.UUID, created_at: datetime, window: HistoryWindow
) -> None:
    await cache.set(cache_key(session_id, created_at), window.encode(), TTL_SECONDS)
