"""Streamed deltas over many texts and cuts (hypothesis): offsets are code points, and a text
sent in deltas cut anywhere (inside multi-code-point emoji too, never inside a code point) is
stored, read, resumed, completed and replayed as exactly that text. Deltas sent again at offsets
already written are answered as docs/api.md says: the same text at that offset, when it is the
last text stored (a retry), is a 200 that changes nothing, anything else a 409 offset_mismatch
with the stored length."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from chat_store.client._follow import parse_events
from tests.assertions import assert_problem
from tests.factories import API, Account, Factory
from tests.support.properties import API_PROPERTY

# Astral characters, emoji sequences of several code points (skin tone, ZWJ, flags) and
# multibyte letters, among any other code point that is valid text (no surrogates, no NUL).
_PIECES = st.one_of(
    st.sampled_from(["a", " ", "é", "\n", "🙂", "😀", "𝄞", "👍🏽", "👩\u200d💻", "🇫🇷", "€"]),
    st.characters(codec="utf-8", exclude_characters="\x00"),
)
_TEXTS = st.lists(_PIECES, min_size=1, max_size=24).map("".join)


@dataclass
class Writer:
    client: httpx.AsyncClient
    account: Account
    session_id: str

    async def open_message(self) -> str:
        response = await self.client.post(
            f"{API}/sessions/{self.session_id}/messages",
            json={"role": "assistant", "status": "pending"},
            headers=self.account.headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def url(self, message_id: str) -> str:
        return f"{API}/sessions/{self.session_id}/messages/{message_id}"

    async def append(
        self, message_id: str, delta: str, offset: int, *, minimal: bool
    ) -> httpx.Response:
        headers = {**self.account.headers, **({"Prefer": "return=minimal"} if minimal else {})}
        return await self.client.post(
            f"{self.url(message_id)}/append",
            json={"delta": delta, "offset": offset},
            headers=headers,
        )

    async def read(self, message_id: str) -> dict[str, Any]:
        response = await self.client.get(self.url(message_id), headers=self.account.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())


async def _writer(client: httpx.AsyncClient, factory: Factory) -> Writer:
    account = await factory.account()
    session = await factory.chat_session(account)
    return Writer(client, account, session["id"])


def _cut(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({cut for cut in cuts if 0 < cut < len(text)}), len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


def _expect(stored: str, offset: int, delta: str) -> int | None:
    """The model of an append to `stored`: the new length if it is appended or answered as a
    retry (200), None if it is refused as offset_mismatch (409)."""
    if offset == len(stored):
        return len(stored) + len(delta)
    if offset + len(delta) == len(stored) and stored[offset:] == delta:
        return len(stored)
    return None


async def _send(
    writer: Writer, message_id: str, stored: str, delta: str, offset: int, minimal: bool
) -> str:
    """Send one delta, check the answer against the model, and return the text now stored."""
    response = await writer.append(message_id, delta, offset, minimal=minimal)
    expected = _expect(stored, offset, delta)
    if expected is None:
        problem = assert_problem(response, 409, "offset_mismatch")
        assert problem["length"] == len(stored), (offset, delta, stored)
        return stored
    assert response.status_code == 200, (offset, delta, stored, response.text)
    answer = response.json()
    assert answer["length"] == expected
    now = stored + delta if offset == len(stored) else stored
    if not minimal:
        assert answer["partial_content"] == now
    return now


async def _replay(writer: Writer, message_id: str, offset: int) -> tuple[str, dict[str, Any]]:
    """The stream of a finished message from `offset`: the text it replays and its done event."""
    response = await writer.client.get(
        f"{writer.url(message_id)}/stream",
        headers={**writer.account.headers, "Last-Event-ID": str(offset)},
    )
    assert response.status_code == 200, response.text
    text, done = "", None
    for event in parse_events(response.text.splitlines()):
        data = json.loads(event.data)
        if event.event == "delta":
            text += data["delta"]
            assert int(event.id or -1) == data["offset"] == offset + len(text)
        elif event.event == "done":
            done = data
    assert done is not None, response.text
    return text, done


@API_PROPERTY
@given(
    text=_TEXTS,
    cuts=st.lists(st.integers(1, 39), max_size=8),
    probes=st.lists(st.tuples(st.integers(0, 45), _TEXTS, st.booleans()), max_size=4),
    retry_each=st.booleans(),
    minimal=st.booleans(),
    replay_from=st.integers(0, 40),
)
async def test_deltas_cut_anywhere_add_up_to_the_text(
    client: httpx.AsyncClient,
    factory: Factory,
    text: str,
    cuts: list[int],
    probes: list[tuple[int, str, bool]],
    retry_each: bool,
    minimal: bool,
    replay_from: int,
) -> None:
    writer = await _writer(client, factory)
    message_id = await writer.open_message()
    stored = ""
    deltas = _cut(text, cuts)
    for index, delta in enumerate(deltas):
        offset = len(stored)
        stored = await _send(writer, message_id, stored, delta, offset, minimal)
        if retry_each:  # the answer was lost: the same delta again, at the same offset
            stored = await _send(writer, message_id, stored, delta, offset, minimal)
        if index < len(probes):
            # A delta at an offset written already (or beyond the text): a slice of what is
            # stored there (a retry, perhaps across deltas) or other text.
            at, other, take_slice = probes[index]
            at = min(at, len(stored) + 2)
            probe = stored[at : at + len(other)] if take_slice and at < len(stored) else other
            if _expect(stored, at, probe) != len(stored) + len(probe):  # never an append
                stored = await _send(writer, message_id, stored, probe, at, minimal)
    assert stored == text

    read = await writer.read(message_id)
    assert (read["status"], read["content"], read["partial_content"]) == ("in_progress", None, text)
    resumed = await client.post(
        f"{API}/sessions/{writer.session_id}/resume", headers=writer.account.headers
    )
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["offset"] == len(text)
    assert resumed.json()["message"]["partial_content"] == text

    completed = await client.patch(
        writer.url(message_id), json={"status": "complete"}, headers=writer.account.headers
    )
    assert completed.status_code == 200, completed.text
    assert (completed.json()["content"], completed.json()["partial_content"]) == (text, None)

    start = min(replay_from, len(text))
    replayed, done = await _replay(writer, message_id, start)
    assert replayed == text[start:]
    assert (done["status"], done["length"]) == ("complete", len(text))
