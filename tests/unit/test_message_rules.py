"""The message rules that need no database: status moves, the token estimate, the context
selection, and which pages the hot-history window may answer."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

import pytest

from chat_store.api.messages import page_response
from chat_store.errors import InvalidTransition
from chat_store.schemas.messages import MessageRead
from chat_store.services.history_cache import HistoryWindow, SerializedPage
from chat_store.services.messages import (
    check_transition,
    estimate_tokens,
    message_tokens,
    select_context,
)
from tests.support.statuses import ALLOWED, STATUSES


@pytest.mark.parametrize(("current", "new"), list(itertools.product(STATUSES, STATUSES)))
def test_check_transition(current: str, new: str) -> None:
    if current == new or (current, new) in ALLOWED:
        check_transition(current, new)
    else:
        with pytest.raises(InvalidTransition) as raised:
            check_transition(current, new)
        assert raised.value.code == "invalid_transition"
        assert raised.value.status == 409


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        (None, 1),
        ("", 1),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("a" * 8, 2),
        ("a" * 9, 3),
        ("😀" * 8, 2),  # characters (code points), not bytes
        ("é" * 400, 100),
    ],
)
def test_estimate_tokens(text: str | None, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


_NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
_SESSION = uuid.uuid4()


def _message(
    seq: int,
    role: str = "user",
    *,
    tokens: int | None = None,
    content: str | None = "",
    partial: str | None = None,
    status: str = "complete",
) -> MessageRead:
    return MessageRead.model_validate(
        {
            "id": uuid.uuid4(),
            "session_id": _SESSION,
            "seq": seq,
            "role": role,
            "content": content,
            "partial_content": partial,
            "status": status,
            "error_message": None,
            "context": None,
            "metadata": {},
            "token_count": tokens,
            "model": None,
            "latency_ms": None,
            "created_at": _NOW,
            "updated_at": _NOW,
            "completed_at": _NOW if status == "complete" else None,
        }
    )


def test_message_tokens_prefers_the_stored_count() -> None:
    assert message_tokens(_message(1, tokens=7, content="x" * 400)) == 7
    assert message_tokens(_message(1, tokens=0, content="x" * 400)) == 0
    assert message_tokens(_message(1, content="x" * 400)) == 100
    open_message = _message(1, content=None, partial="y" * 10, status="in_progress")
    assert message_tokens(open_message) == 3
    assert message_tokens(_message(1, content=None, status="pending")) == 1


def _seqs(selected: list[MessageRead]) -> list[int]:
    return [message.seq for message in selected]


def test_select_context_takes_the_newest_that_fit_oldest_first() -> None:
    messages = [_message(i, tokens=10) for i in range(1, 6)]
    assert select_context(messages, 50) == (messages, 50)
    chosen, total = select_context(messages, 35)
    assert (_seqs(chosen), total) == ([3, 4, 5], 30)
    assert select_context(messages, 9) == ([], 0)
    assert select_context([], 10) == ([], 0)


def test_select_context_stops_at_the_first_message_that_does_not_fit() -> None:
    """A contiguous tail: a small old message is not taken over a big newer one."""
    messages = [_message(1, tokens=1), _message(2, tokens=50), _message(3, tokens=5)]
    chosen, total = select_context(messages, 10)
    assert (_seqs(chosen), total) == ([3], 5)


def test_select_context_keeps_tool_results_with_their_call() -> None:
    messages = [
        _message(1, tokens=5),
        _message(2, "assistant", tokens=5),
        _message(3, "tool", tokens=5),
        _message(4, "tool", tokens=5),
        _message(5, "assistant", tokens=5),
    ]
    for budget, expected in (
        (5, [5]),
        (19, [5]),
        (20, [2, 3, 4, 5]),
        (24, [2, 3, 4, 5]),
        (25, [1, 2, 3, 4, 5]),
    ):
        chosen, total = select_context(messages, budget)
        assert _seqs(chosen) == expected, budget
        assert total == 5 * len(expected)

    ending_in_tool = [*messages, _message(6, "assistant", tokens=5), _message(7, "tool", tokens=5)]
    assert _seqs(select_context(ending_in_tool, 9)[0]) == []
    assert _seqs(select_context(ending_in_tool, 10)[0]) == [6, 7]


def test_select_context_tool_results_without_a_call_in_view() -> None:
    """History that starts with tool results (their call deleted): they stay one group."""
    messages = [_message(1, "tool", tokens=5), _message(2, "tool", tokens=5), _message(3, tokens=5)]
    assert _seqs(select_context(messages, 14)[0]) == [3]
    assert _seqs(select_context(messages, 15)[0]) == [1, 2, 3]


def test_select_context_uses_the_estimate() -> None:
    messages = [_message(1, content="a" * 40), _message(2, content="b" * 9)]
    chosen, total = select_context(messages, 12)
    assert (_seqs(chosen), total) == ([2], 3)
    assert select_context(messages, 13)[1] == 13


# --- which pages the hot-history window answers


def _window(seqs: list[int], *, reaches_start: bool) -> HistoryWindow:
    return HistoryWindow(
        version=1,
        fresh_until=None,
        seqs=seqs,
        ids=[f"id{seq}" for seq in seqs],
        documents=[f'{{"seq":{seq}}}' for seq in seqs],
        reaches_start=reaches_start,
    )


def _page_seqs(window: HistoryWindow, **kwargs: object) -> tuple[list[int], bool] | None:
    answer = window.page(**kwargs)  # type: ignore[arg-type]
    if answer is None:
        return None
    indexes, has_more = answer
    return [window.seqs[i] for i in indexes], has_more


def test_window_answers_the_newest_pages() -> None:
    window = _window(list(range(151, 251)), reaches_start=False)  # seqs 1..150 are older
    assert _page_seqs(window, after_seq=None, before_seq=None, descending=True, limit=3) == (
        [250, 249, 248],
        True,
    )
    assert _page_seqs(window, after_seq=245, before_seq=None, descending=False, limit=3) == (
        [246, 247, 248],
        True,
    )
    assert _page_seqs(window, after_seq=245, before_seq=None, descending=False, limit=10) == (
        [246, 247, 248, 249, 250],
        False,
    )
    assert _page_seqs(window, after_seq=150, before_seq=153, descending=True, limit=10) == (
        [152, 151],
        False,
    )
    assert _page_seqs(window, after_seq=None, before_seq=200, descending=True, limit=2) == (
        [199, 198],
        True,
    )


def test_window_leaves_older_rows_to_the_database() -> None:
    window = _window(list(range(151, 251)), reaches_start=False)
    # Ascending from the start of the session: the first rows are not in the window.
    assert window.page(after_seq=None, before_seq=None, descending=False, limit=20) is None
    assert window.page(after_seq=None, before_seq=200, descending=False, limit=20) is None
    assert window.page(after_seq=100, before_seq=None, descending=False, limit=5) is None
    # Newest first, but the range runs out below the window.
    assert window.page(after_seq=None, before_seq=160, descending=True, limit=20) is None
    assert window.page(after_seq=None, before_seq=None, descending=True, limit=100) is None


def test_window_of_a_whole_session_answers_everything() -> None:
    window = _window([1, 2, 4, 5], reaches_start=True)  # 3 was deleted
    assert _page_seqs(window, after_seq=None, before_seq=None, descending=False, limit=3) == (
        [1, 2, 4],
        True,
    )
    assert _page_seqs(window, after_seq=None, before_seq=None, descending=False, limit=4) == (
        [1, 2, 4, 5],
        False,
    )
    assert _page_seqs(window, after_seq=2, before_seq=5, descending=True, limit=4) == ([4], False)
    empty = _window([], reaches_start=True)
    assert _page_seqs(empty, after_seq=None, before_seq=None, descending=True, limit=4) == (
        [],
        False,
    )


def test_a_page_from_the_window_is_a_list_answer() -> None:
    window = _window([7, 8], reaches_start=True)
    page = window.serialized_page([1, 0], True)
    assert page == SerializedPage(['{"seq":8}', '{"seq":7}'], ["id8", "id7"], True)
    assert page_response(page).body == (
        b'{"object":"list","data":[{"seq":8},{"seq":7}],"first_id":"id8","last_id":"id7",'
        b'"has_more":true}'
    )
    assert page_response(SerializedPage([], [], False)).body == (
        b'{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}'
    )
