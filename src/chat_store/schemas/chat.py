"""Chat turns: a user message the service answers itself with a model (docs/generation.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

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
        "them completes with tool_calls and finish_reason `tool_calls` (docs/generation.md).",
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

    def tool_definitions(self) -> list[dict[str, Any]] | None:
        """The tools as the provider is sent them."""
        if self.tools is None:
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]


class ChatTurn(OutputModel):
    object: Literal["chat.turn"] = "chat.turn"
    user_message: MessageRead | None = Field(
        description="The user's message; null for a turn sent without content."
    )
    assistant_message: MessageRead
