"""A generation's params as kept with its lease: what a continue or a takeover sends again."""

from __future__ import annotations

import json

from chat_store.services.generation.jobs import GenerationParams

TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]


def test_every_field_comes_back_from_its_stored_json() -> None:
    params = GenerationParams(
        model="other",
        temperature=0.2,
        max_output_tokens=300,
        system="Be brief.",
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "read_file"}},
        parallel_tool_calls=False,
    )

    stored = json.loads(json.dumps(params.to_dict()))

    assert GenerationParams.from_dict(stored, "test") == params


def test_a_mode_tool_choice_comes_back_as_its_string() -> None:
    for mode in ("none", "auto", "required"):
        params = GenerationParams(model="test", tools=TOOLS, tool_choice=mode)
        assert GenerationParams.from_dict(params.to_dict(), "test").tool_choice == mode


def test_params_stored_before_tool_choice_still_load_without_it() -> None:
    older = {"model": "test", "system": "Be brief.", "tools": TOOLS}

    params = GenerationParams.from_dict(older, "default")

    assert params == GenerationParams(model="test", system="Be brief.", tools=TOOLS)
    assert (params.tool_choice, params.parallel_tool_calls) == (None, None)
    assert GenerationParams.from_dict({}, "default") == GenerationParams(model="default")
