"""Errors of the service's own chat turns (rendered as problem+json like every AppError)."""

from __future__ import annotations

import uuid

from chat_store.errors import AppError, Conflict, RateLimited


class GenerationUnavailable(AppError):
    status, code, title = 503, "generation_unavailable", "No model provider configured"

    def __init__(self) -> None:
        super().__init__(
            "This server has no model provider: set LLM_BASE_URL and LLM_MODEL to an "
            "OpenAI-compatible server (docs/generation.md). Everything else works without one."
        )


class GenerationInProgress(Conflict):
    code, title = "generation_in_progress", "A generation is running"

    def __init__(self, message_id: uuid.UUID, detail: str) -> None:
        super().__init__(detail, message_id=str(message_id))


class NothingToAnswer(Conflict):
    code, title = "nothing_to_answer", "Nothing to answer"


class ToolResultsMissing(Conflict):
    """Raised with `tool_call_ids`: the calls without a result."""

    code, title = "tool_results_missing", "Tool calls without results"


class TooManyGenerations(RateLimited):
    code, title = "too_many_generations", "Too many live generations"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"At most {limit} answers may be generated at once per user "
            "(GENERATION_CONCURRENCY_PER_USER); retry when one has finished"
        )
        self.headers["Retry-After"] = "1"


class GenerationBusy(AppError):
    status, code, title = 503, "generation_busy", "This server is generating all it can"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This server process generates at most {limit} answers at once "
            "(LLM_MAX_CONCURRENT); retry shortly"
        )
        self.headers["Retry-After"] = "1"


class _TurnFailed(AppError):
    """A turn answered without streaming whose generation failed; names both messages."""

    def __init__(
        self, detail: str, user_message_id: uuid.UUID | None, assistant_message_id: uuid.UUID
    ) -> None:
        super().__init__(
            detail,
            user_message_id=None if user_message_id is None else str(user_message_id),
            assistant_message_id=str(assistant_message_id),
        )


class ProviderError(_TurnFailed):
    status, code, title = 502, "provider_error", "The model provider failed"


class ProviderTimeout(_TurnFailed):
    status, code, title = 504, "provider_timeout", "The model provider did not answer in time"
