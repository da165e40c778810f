"""What a generation takes from one process to another: what a turn asked for (kept with its
lease in the database), and the run a process makes of it. Stop requests are sent on the bus
with the session's events (services/events.py), which deletions send too."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

from chat_store.services.generation.store import PromptSource


@dataclass(frozen=True)
class GenerationParams:
    """What a turn asked for; kept with the lease, so a continuation asks the same."""

    model: str
    temperature: float | None = None
    max_output_tokens: int | None = None
    system: str | None = None
    # The functions the model may call (OpenAI's `tools`), as the turn gave them.
    tools: list[dict[str, Any]] | None = None
    # OpenAI's `tool_choice` ("none", "auto", "required" or {"type": "function", "function":
    # {"name"}}) and `parallel_tool_calls`, as the turn gave them; None: not sent. Params stored
    # before a turn could give them have neither.
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_model: str) -> GenerationParams:
        return cls(
            model=str(data.get("model") or default_model),
            temperature=data.get("temperature"),
            max_output_tokens=data.get("max_output_tokens"),
            system=data.get("system"),
            tools=data.get("tools"),
            tool_choice=data.get("tool_choice"),
            parallel_tool_calls=data.get("parallel_tool_calls"),
        )


@dataclass(frozen=True)
class Job:
    """One run of an answer's generation in this process."""

    message_id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID
    attempt: int
    params: GenerationParams
    takeover: bool = False
    # The answer and what its prompt is made of, as the turn read them in its transaction: the
    # provider is called as soon as that commits. None: read when the run starts (a continue,
    # a takeover).
    source: PromptSource | None = None
