"""The tool calls of a streamed answer put together from their fragments (ToolCallParts), as
OpenAI streams them and as Ollama's OpenAI-compatible server does (every call under index 0,
or under no index at all in its older versions)."""

from __future__ import annotations

from typing import Any

from chat_store.services.generation.provider import ToolCallParts


def _head(call_id: str, name: str, arguments: str = "", **index: int) -> dict[str, Any]:
    """A call's first fragment: its id and name (and `index=` when given)."""
    return {
        **index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _more(arguments: str, **index: int) -> dict[str, Any]:
    """A following fragment: more of a call's arguments, without its id."""
    return {**index, "function": {"arguments": arguments}}


def _joined(*chunks: list[dict[str, Any]]) -> list[dict[str, str]]:
    parts = ToolCallParts()
    for fragments in chunks:
        assert parts.add(fragments)
    return parts.calls()


READ_A = {"id": "call_a", "name": "read_file", "arguments": '{"path":"a"}'}
READ_B = {"id": "call_b", "name": "read_file", "arguments": '{"path":"b"}'}


def test_openai_fragments_are_joined_by_index() -> None:
    calls = _joined(
        [_head("call_a", "read_file", index=0)],
        [_more('{"path"', index=0)],
        [_more(':"a"}', index=0)],
        [_head("call_b", "read_file", index=1)],
        [_more('{"path":"b"}', index=1)],
    )

    assert calls == [READ_A, READ_B]


def test_fragments_of_two_calls_in_one_chunk_go_to_their_own_index() -> None:
    calls = _joined(
        [_head("call_a", "read_file", index=0), _head("call_b", "read_file", index=1)],
        [_more('{"path":"b"}', index=1), _more('{"path":"a"}', index=0)],
    )

    assert calls == [READ_A, READ_B]


def test_calls_that_all_come_under_index_0_stay_apart_by_their_ids() -> None:
    """Ollama: each call whole in one fragment, every one with `index: 0`."""
    calls = _joined(
        [_head("call_a", "read_file", '{"path":"a"}', index=0)],
        [_head("call_b", "read_file", '{"path":"b"}', index=0)],
    )

    assert calls == [READ_A, READ_B]


def test_a_call_under_a_repeated_index_keeps_its_following_fragments() -> None:
    calls = _joined(
        [_head("call_a", "read_file", index=0)],
        [_more('{"path":"a"}', index=0)],
        [_head("call_b", "read_file", index=0)],
        [_more('{"path"', index=0)],
        [_more(':"b"}', index=0)],
    )

    assert calls == [READ_A, READ_B]


def test_calls_without_an_index_are_told_apart_by_their_ids() -> None:
    """Older Ollama: no index; a fragment with an id starts a call, one without continues the
    last one."""
    calls = _joined(
        [_head("call_a", "read_file", '{"path"')],
        [_more(':"a"}')],
        [_head("call_b", "read_file")],
        [_more('{"path":"b"}')],
    )

    assert calls == [READ_A, READ_B]


def test_a_server_that_repeats_the_id_in_every_fragment_makes_one_call() -> None:
    with_id = {"id": "call_a", "function": {"arguments": ':"a"}'}}
    calls = _joined(
        [_head("call_a", "read_file", '{"path"', index=0)],
        [with_id | {"index": 0}],
    )
    without_index = _joined([_head("call_a", "read_file", '{"path"')], [with_id])

    assert calls == [READ_A]
    assert without_index == [READ_A]


def test_an_id_sent_after_the_name_completes_its_call() -> None:
    calls = _joined(
        [{"index": 0, "function": {"name": "read_file", "arguments": ""}}],
        [{"index": 0, "id": "call_a", "function": {"arguments": '{"path":"a"}'}}],
    )

    assert calls == [READ_A]


def test_a_call_without_an_id_gets_one_made_up() -> None:
    [call] = _joined([{"index": 0, "function": {"name": "run_tests", "arguments": "{}"}}])

    assert call["id"].startswith("call_") and len(call["id"]) > len("call_")
    assert (call["name"], call["arguments"]) == ("run_tests", "{}")


def test_no_fragments_is_no_call() -> None:
    parts = ToolCallParts()

    assert not parts.add(None)
    assert not parts.add([])
    assert parts.calls() == []


def test_calls_without_ids_under_one_index_are_told_apart_by_their_names() -> None:
    calls = _joined(
        [{"index": 0, "function": {"name": "f", "arguments": '{"a": 1}'}}],
        [{"index": 0, "function": {"name": "g", "arguments": '{"b": 2}'}}],
        [{"index": 0, "function": {"name": "g", "arguments": '{"b": 3}'}}],
    )

    assert [(call["name"], call["arguments"]) for call in calls] == [
        ("f", '{"a": 1}'),
        ("g", '{"b": 2}'),
        ("g", '{"b": 3}'),
    ]


def test_a_name_repeated_in_every_fragment_of_a_call_keeps_one_call() -> None:
    [call] = _joined(
        [{"index": 0, "function": {"name": "read_file", "arguments": '{"pa'}}],
        [{"index": 0, "function": {"name": "read_file", "arguments": 'th":"a"}'}}],
    )

    assert (call["name"], call["arguments"]) == ("read_file", '{"path":"a"}')


def test_arguments_sent_as_a_json_object_are_kept_as_its_text() -> None:
    [call] = _joined(
        [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": {"path": "ü"}}}]
    )

    assert call["arguments"] == '{"path": "ü"}'
