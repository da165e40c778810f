"""Chat turns: a user message the service answers itself with a model (docs/generation.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, ValidationInfo, field_validator

from chat_store.schemas import common
from chat_store.schemas.chat_sessions import SYSTEM_PROMPT_MAX_CHARS
from chat_store.schemas.common import InputModel, OutputModel, RagContext, SafeStr, Seq
from chat_store.schemas.messages import MAX_TOOL_CALLS, TOOL_NAME_PATTERN, MessageRead


class FunctionDefinition(InputModel):
    """A function the model may call, as the OpenAI chat API describes one."""

    name: str = Field(pattern=TOOL_NAME_PATTERN, examples=["run_tests"])
    description: SafeStr | None = Field(default=None, examples=["Run the project's tests"])
    parameters: common.Metadata | None = Field(
        default=None,
        description="Its arguments as a JSON Schema object (forwarded as given).",
        examples=[{"type": "object", "properties": {"path": {"type": "string"}}}],
    )
    strict: bool | None = None


class ToolDefinition(InputModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(InputModel):
    name: str = Field(pattern=TOOL_NAME_PATTERN, examples=["read_file"])


class NamedToolChoice(InputModel):
    """Call this function (one of the turn's `tools`), as the OpenAI chat API names one."""

    type: Literal["function"]
    function: FunctionName


ToolChoiceMode = Literal["none", "auto", "required"]


def _tool_choice_form(value: Any) -> str:
    """Which of OpenAI's two forms of `tool_choice` a value is: a mode (a string) or a named
    function (an object). Told apart first, so a malformed value is refused with the errors of
    its own form only."""
    if isinstance(value, str):
        return "mode"
    return "function"


ToolChoice = Annotated[
    Annotated[ToolChoiceMode, Tag("mode")] | Annotated[NamedToolChoice, Tag("function")],
    Discriminator(_tool_choice_form),
]


def _check_tools(tools: list[ToolDefinition]) -> list[ToolDefinition]:
    if not 1 <= len(tools) <= MAX_TOOL_CALLS:
        raise ValueError(f"tools holds 1 to {MAX_TOOL_CALLS} functions")
    names = [tool.function.name for tool in tools]
    if len(set(names)) != len(names):
        raise ValueError("function names differ within tools")
    return tools


class ChatTurnCreate(InputModel):
    content: SafeStr | None = Field(
        default=None,
        min_length=1,
        description="The user's message. Left out: the model answers the stored history as it "
        "stands (e.g. after the client appended the results of its tool calls).",
        examples=["Why does test_billing fail on CI?"],
    )
    context: RagContext | None = Field(
        default=None,
        description="RAG data stored with the user message; its `documents` are sent to the "
        "model with it (docs/generation.md).",
    )
    tools: Annotated[list[ToolDefinition], AfterValidator(_check_tools)] | None = Field(
        default=None,
        description="Functions the model may call, sent to it as given. An answer that calls "
        "them completes with tool_calls and finish_reason `tool_calls` (`length` when the "
        "output limit cut it off; docs/generation.md).",
    )
    tool_choice: ToolChoice | None = Field(
        default=None,
        description="Whether and which of `tools` the model calls, as the OpenAI chat API takes "
        'it: `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name"}}` '
        "(one of `tools`). Needs `tools`; sent as given, left out: the provider's default.",
        examples=["required"],
    )
    parallel_tool_calls: bool | None = Field(
        default=None,
        description="Whether the model may call several of `tools` in one answer. Needs "
        "`tools`; sent as given, left out: the provider's default.",
    )
    model: SafeStr | None = Field(
        default=None,
        max_length=200,
        description="One of the server's LLM_MODELS; LLM_MODEL when left out.",
    )
    system: SafeStr | None = Field(
        default=None,
        max_length=SYSTEM_PROMPT_MAX_CHARS,
        description="The system prompt for this turn, instead of the session's system_prompt.",
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    stream: bool = Field(
        default=True,
        description="true: answer with Server-Sent Events (`turn`, then the message stream); "
        "false: wait for the answer (201), or 202 when REQUEST_TIMEOUT_SECONDS comes first.",
    )
    expected_last_seq: Seq | None = Field(
        default=None,
        description="Start the turn only if the session's last seq is this (else 409).",
    )

    @field_validator("context")
    @classmethod
    def _context_of_a_message(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        if value is not None and "content" in info.data and info.data["content"] is None:
            raise ValueError("context is stored with the user message: give content with it")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(
        cls, value: str | NamedToolChoice | None, info: ValidationInfo
    ) -> str | NamedToolChoice | None:
        # Without `tools` in info.data, they were refused themselves: their error is enough.
        if value is None or "tools" not in info.data:
            return value
        tools: list[ToolDefinition] | None = info.data["tools"]
        if tools is None:
            raise ValueError("tool_choice needs tools")
        if isinstance(value, NamedToolChoice):
            names = [tool.function.name for tool in tools]
            if value.function.name not in names:
                raise ValueError(
                    f"tool_choice names {value.function.name!r}, which is not one of tools "
                    f"({', '.join(names)})"
                )
        return value

    @field_validator("parallel_tool_calls")
    @classmethod
    def _parallel_with_tools(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value is not None and "tools" in info.data and info.data["tools"] is None:
            raise ValueError("parallel_tool_calls needs tools")
        return value

    def tool_definitions(self) -> list[dict[str, Any]] | None:
        """The tools as the provider is sent them."""
        if self.tools is None:
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]

    def tool_choice_sent(self) -> str | dict[str, Any] | None:
        """The tool_choice as the provider is sent it."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.model_dump()
        return self.tool_choice


class ChatTurn(OutputModel):
    object: Literal["chat.turn"] = "chat.turn"
    user_message: MessageRead | None = Field(
        description="The user's message; null for a turn sent without content."
    )
    assistant_message: MessageRead
