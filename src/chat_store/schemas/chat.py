"""Chat turns: a user message the service answers itself with a model (docs/generation.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chat_store.schemas.chat_sessions import SYSTEM_PROMPT_MAX_CHARS
from chat_store.schemas.common import INT32_MAX, InputModel, OutputModel, RagContext, SafeStr
from chat_store.schemas.messages import MessageRead


class ChatTurnCreate(InputModel):
    content: SafeStr = Field(min_length=1, examples=["Why does test_billing fail on CI?"])
    context: RagContext | None = Field(
        default=None,
        description="RAG data stored with the user message; its `documents` are sent to the "
        "model with it (docs/generation.md).",
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
    expected_last_seq: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="Start the turn only if the session's last seq is this (else 409).",
    )


class ChatTurn(OutputModel):
    object: Literal["chat.turn"] = "chat.turn"
    user_message: MessageRead
    assistant_message: MessageRead
