"""The service's own chat turns: it calls an OpenAI-compatible model, streams the answer into the
store through the same delta path a client uses, and finishes it even when the client is gone
(docs/generation.md).

    provider.py  the model provider, through the official openai SDK
    prompt.py    what is sent: system prompt, history as /context chooses it, the user's turn
    answer.py    one answer: the model's text read, coalesced, written; completed or failed
    runner.py    this process's generations: tasks, capacity, leases, takeover, stops
    jobs.py      what crosses processes: a turn's parameters (kept with its lease), a run
    turns.py     the rules of POST /chat, /cancel and /continue
    store.py     the one way into the message store (messages service, generations crud)
"""

from __future__ import annotations

from chat_store.metrics import GenerationMetrics
from chat_store.services.generation.provider import Provider
from chat_store.services.generation.runner import GenerationRunner
from chat_store.state import AppState


def create_runner(app: AppState, metrics: GenerationMetrics) -> GenerationRunner | None:
    """This process's runner, or None when no provider is configured (LLM_BASE_URL unset)."""
    if not app.settings.generation_enabled:
        return None
    return GenerationRunner(app, Provider(app.settings), metrics)


__all__ = ["GenerationRunner", "create_runner"]
