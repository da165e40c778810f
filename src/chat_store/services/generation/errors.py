"""Errors of the service's own chat turns (rendered as problem+json like every AppError)."""

from __future__ import annotations

import uuid

from chat_store.errors import AppError, Conflict, RateLimited


class GenerationUnavailable(
    AppError, status=503, code="generation_unavailable", title="No model provider configured"
):
    def __init__(self) -> None:
        super().__init__(
            "This server has no model provider: set LLM_BASE_URL and LLM_MODEL to an "
            "OpenAI-compatible server (docs/generation.md). Everything else works without one."
        )


class GenerationInProgress(
    Conflict, code="generation_in_progress", title="A generation is running"
):
    def __init__(self, message_id: uuid.UUID, detail: str) -> None:
        super().__init__(detail, message_id=str(message_id))


class NothingToAnswer(Conflict, code="nothing_to_answer", title="Nothing to answer"): ...


class ToolResultsMissing(Conflict, code="tool_results_missing", title="Tool calls without results"):
    """Raised with `tool_call_ids`: the calls without a result."""


class TooManyGenerations(
    RateLimited, code="too_many_generations", title="Too many live generations", retry_after=1
):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"At most {limit} answers may be generated at once per user "
            "(GENERATION_CONCURRENCY_PER_USER); retry when one has finished"
        )


class GenerationBusy(
    AppError,
    status=503,
    code="generation_busy",
    title="This server is generating all it can",
    retry_after=1,
):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This server process generates at most {limit} answers at once "
            "(LLM_MAX_CONCURRENT); retry shortly"
        )


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


class ProviderError(
    _TurnFailed, status=502, code="provider_error", title="The model provider failed"
): ...


class ProviderTimeout(
    _TurnFailed,
    status=504,
    code="provider_timeout",
    title="The model provider did not answer in time",
): ...
