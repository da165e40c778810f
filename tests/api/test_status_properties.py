"""A message's status over many sequences of moves and deltas (hypothesis), against a model
written from docs/api.md rather than from services/messages.py's TRANSITIONS table:

    pending -> in_progress -> complete | failed | cancelled
    pending -> complete | failed | cancelled
    failed -> in_progress (a failed answer resumed)

Staying in a status is not a move. Any other move, and a delta to a complete, failed or
cancelled message, is 409 invalid_transition and changes nothing. The text follows the status:
open messages show it in partial_content, a complete one in content, failed and cancelled ones
keep partial_content and carry error_message until resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from tests.assertions import assert_problem
from tests.factories import API, Factory
from tests.support.properties import API_PROPERTY

STATUSES = ("pending", "in_progress", "complete", "failed", "cancelled")
OPEN = {"pending", "in_progress"}
ENDED_WITH_ERROR = {"failed", "cancelled"}
MOVES = {
    ("pending", "in_progress"),
    ("in_progress", "complete"),
    ("in_progress", "failed"),
    ("in_progress", "cancelled"),
    ("pending", "complete"),
    ("pending", "failed"),
    ("pending", "cancelled"),
    ("failed", "in_progress"),
}


@dataclass
class Model:
    status: str
    text: str
    error_message: str | None = None

    def allows(self, new: str) -> bool:
        return new == self.status or (self.status, new) in MOVES

    def move(self, new: str, error_message: str | None) -> None:
        if new == "in_progress" and self.status == "failed":
            self.error_message = None
        if error_message is not None:
            self.error_message = error_message
        self.status = new

    def expected_read(self) -> dict[str, Any]:
        complete = self.status == "complete"
        return {
            "status": self.status,
            "content": self.text if complete else None,
            "partial_content": None if complete else self.text,
            "error_message": self.error_message,
        }


_ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("move"), st.sampled_from(STATUSES), st.sampled_from([None, "boom"])),
        st.tuples(st.just("delta"), st.sampled_from(["a", "é", "🙂", " ok"]), st.none()),
    ),
    min_size=1,
    max_size=8,
)


def _create_body(status: str, error_message: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"role": "assistant", "status": status}
    if status == "complete":
        body["content"] = "start"
    else:
        body["partial_content"] = "start"
    if status in ENDED_WITH_ERROR and error_message is not None:
        body["error_message"] = error_message
    return body


@API_PROPERTY
@given(
    first=st.sampled_from(STATUSES),
    first_error=st.sampled_from([None, "lost"]),
    actions=_ACTIONS,
)
async def test_status_moves_follow_the_documented_table(
    client: httpx.AsyncClient,
    factory: Factory,
    first: str,
    first_error: str | None,
    actions: list[tuple[str, str, str | None]],
) -> None:
    account = await factory.account()
    session = await factory.chat_session(account)
    created = await client.post(
        f"{API}/sessions/{session['id']}/messages",
        json=_create_body(first, first_error),
        headers=account.headers,
    )
    assert created.status_code == 201, created.text
    url = f"{API}/sessions/{session['id']}/messages/{created.json()['id']}"
    model = Model(first, "start", first_error if first in ENDED_WITH_ERROR else None)

    for kind, value, error_message in actions:
        if kind == "move":
            body: dict[str, Any] = {"status": value}
            if value in ENDED_WITH_ERROR and error_message is not None:
                body["error_message"] = error_message
            response = await client.patch(url, json=body, headers=account.headers)
            if model.allows(value):
                assert response.status_code == 200, (model, body, response.text)
                model.move(value, body.get("error_message"))
            else:
                assert_problem(response, 409, "invalid_transition")
        else:
            response = await client.post(
                f"{url}/append",
                json={"delta": value, "offset": len(model.text)},
                headers=account.headers,
            )
            if model.status in OPEN:
                assert response.status_code == 200, (model, value, response.text)
                model.text += value
                model.move("in_progress", None)
            else:
                assert_problem(response, 409, "invalid_transition")

        read = await client.get(url, headers=account.headers)
        assert read.status_code == 200, read.text
        stored = read.json()
        expected = model.expected_read()
        assert {key: stored[key] for key in expected} == expected, (kind, value)
        assert (stored["completed_at"] is not None) == (model.status == "complete")
