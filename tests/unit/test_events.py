"""The session events on the bus: what a writer publishes, a reader in any process reads back."""

from __future__ import annotations

from typing import Any

import pytest

from chat_store.services import events

MESSAGE = {"id": "0190c8a0-0000-7000-8000-000000000001", "seq": 1, "role": "user"}


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (
            events.MessageDelta(7, message_id=MESSAGE["id"], start=3, delta="lo", offset=5),
            {
                "type": "message.delta",
                "version": 7,
                "message_id": MESSAGE["id"],
                "start": 3,
                "delta": "lo",
                "offset": 5,
            },
        ),
        (
            events.MessageCreated(2, MESSAGE),
            {"type": "message.created", "version": 2, "message": MESSAGE},
        ),
        (
            events.MessageUpdated(3, MESSAGE),
            {"type": "message.updated", "version": 3, "message": MESSAGE},
        ),
        (
            events.MessageDeleted(4, message_id=MESSAGE["id"], seq=1),
            {"type": "message.deleted", "version": 4, "message_id": MESSAGE["id"], "seq": 1},
        ),
        (
            events.SessionUpdated(5, {"id": "s", "title": "t"}),
            {"type": "session.updated", "version": 5, "session": {"id": "s", "title": "t"}},
        ),
        (events.VersionUsed(6), {"type": "sync", "version": 6}),
    ],
)
def test_an_event_goes_over_the_bus_and_back(
    event: events.SessionEvent, wire: dict[str, Any]
) -> None:
    assert event.to_dict() == wire
    assert list(event.to_dict()) == list(wire)  # the feed shows the fields in this order
    assert events.from_dict(wire) == event


def test_message_events_name_their_message() -> None:
    assert events.MessageCreated(1, MESSAGE).message_id == MESSAGE["id"]
    assert events.MessageUpdated(1, MESSAGE).message_id == MESSAGE["id"]


@pytest.mark.parametrize(
    "wire",
    [{}, {"type": "message.moved", "version": 1}, {"type": "sync"}, {"type": "sync", "v": 1}],
)
def test_what_is_no_event_is_read_as_none(wire: dict[str, Any]) -> None:
    assert events.from_dict(wire) is None
