"""What is sent to the model for an answer (docs/generation.md shows it for an example session).

1. The system prompt: the turn's `system`, else the session's `system_prompt` (none if neither).
2. The history: the messages before the turn, chosen as `GET /context?max_tokens=` chooses them
   (newest first, a message with the tool messages after it whole or not at all), within what
   LLM_CONTEXT_TOKENS leaves after the system prompt, the turn, the stored partial answer and the
   turn's output limit.
3. The turn: the newest user message before the answer, with its `context` documents rendered by
   `render_user_message`, and any message between it and the answer.
4. For a continuation, the stored partial answer as an assistant message: the model goes on
   from it, and what it sends is appended after it.

Complete messages are sent with their content; failed and cancelled answers with the text they
kept (what the user saw); open messages and empty ones are left out, but for an assistant
message's tool calls and a tool message's result (the OpenAI format: `tool_calls`,
`tool_call_id`).

A call is sent only with its result in the tool messages right after it, and a result only
after its call (`_paired`): providers refuse either alone, and one such message in the history
would fail every later turn of the session. A turn sent while calls had no results leaves them
unanswered; so do tool messages imported from an export made before tool calls were fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chat_store.schemas.messages import MessageRead
from chat_store.services.generation import store
from chat_store.services.generation.store import PromptSource

# Fields of a context document read as its text, its title and its source, in this order.
_TEXT_FIELDS = ("text", "content", "snippet", "chunk")
_TITLE_FIELDS = ("title", "name")
_SOURCE_FIELDS = ("source", "url", "uri", "path")


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, Any]]
    history_count: int  # messages of the history that fit
    estimated_tokens: int


def _first_text(document: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    for name in fields:
        value = document.get(name)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value)
            if text.strip():
                return text
    return None


def _attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def render_documents(context: dict[str, Any] | None) -> str | None:
    """The `documents` of a message's context, as the model reads them:

        <documents>
        <document index="1" id="doc-7" title="Billing settings" source="docs/billing.md">
        The timeout is set in settings.py.
        </document>
        </documents>

    Documents are numbered from 1 in their order (so an answer can cite [1]); `id`, `title`
    (or `name`) and `source` (or `url`, `uri`, `path`) are given when present; the text is the
    first of `text`, `content`, `snippet`, `chunk`. A document without text is left out; the
    rest of the context (citations, the reranker) is not sent.
    """
    documents = (context or {}).get("documents")
    if not isinstance(documents, list):
        return None
    parts: list[str] = []
    for document in documents:
        if not isinstance(document, dict):
            continue
        text = _first_text(document, _TEXT_FIELDS)
        if text is None:
            continue
        attributes = [f'index="{len(parts) + 1}"']
        for name, value in (
            ("id", _first_text(document, ("id",))),
            ("title", _first_text(document, _TITLE_FIELDS)),
            ("source", _first_text(document, _SOURCE_FIELDS)),
        ):
            if value is not None:
                attributes.append(f'{name}="{_attribute(value)}"')
        parts.append(f"<document {' '.join(attributes)}>\n{text.strip()}\n</document>")
    if not parts:
        return None
    return "<documents>\n" + "\n".join(parts) + "\n</documents>"


def render_user_message(content: str, context: dict[str, Any] | None) -> str:
    """The turn's user message: its documents first, then a blank line, then what it says."""
    documents = render_documents(context)
    return content if documents is None else f"{documents}\n\n{content}"


def _text(message: MessageRead) -> str:
    if message.content is not None:
        return message.content
    return message.partial_content or ""


def _as_provider_message(message: MessageRead, text: str) -> dict[str, Any] | None:
    """The message in the OpenAI chat format: an assistant message with its `tool_calls`
    ({"id", "type": "function", "function": {"name", "arguments"}}), a tool message with the
    `tool_call_id` it answers (sent even when empty: a call must have its answer)."""
    if message.status in ("pending", "in_progress"):
        return None
    calls = message.tool_calls if message.role == "assistant" else None
    if not text and not calls and message.role != "tool":
        return None
    sent: dict[str, Any] = {"role": message.role, "content": text}
    if calls:
        sent["content"] = text or None
        sent["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ]
    if message.role == "tool" and message.tool_call_id is not None:
        sent["tool_call_id"] = message.tool_call_id
    return sent


def _paired(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each tool call sent only when a tool message right after it answers
    it, and each result only right after its call (the first result of a call, once). An
    assistant message left without calls keeps its text, or is left out if it has none."""
    kept: list[dict[str, Any]] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        index += 1
        if message["role"] == "tool":
            continue  # no call right before it: results are taken with their call, below
        calls = message.get("tool_calls")
        if not calls:
            kept.append(message)
            continue
        results: dict[str, dict[str, Any]] = {}
        while index < len(messages) and messages[index]["role"] == "tool":
            result = messages[index]
            results.setdefault(result.get("tool_call_id") or "", result)
            index += 1
        answered = [call for call in calls if call["id"] in results]
        if answered:
            kept.append({**message, "tool_calls": answered})
            kept.extend(results[call["id"]] for call in answered)
        elif message["content"]:
            kept.append({key: value for key, value in message.items() if key != "tool_calls"})
    return kept


def _sent_tokens(sent: dict[str, Any]) -> int:
    calls = sent.get("tool_calls") or ()
    text = (sent["content"] or "") + "".join(str(call["function"]) for call in calls)
    return store.estimate_tokens(text)


def build(
    source: PromptSource,
    *,
    system: str | None,
    context_tokens: int,
    max_output_tokens: int | None,
) -> Prompt:
    system_text = system if system is not None else source.system_prompt
    head: list[dict[str, Any]] = []
    if system_text:
        head.append({"role": "system", "content": system_text})
    turn: list[dict[str, Any]] = []
    for index, message in enumerate(source.turn):
        text = _text(message)
        if index == 0:
            text = render_user_message(text, message.context)
        sent = _as_provider_message(message, text)
        if sent is not None:
            turn.append(sent)
    partial = source.answer.partial_content or ""
    tail = [{"role": "assistant", "content": partial}] if partial else []
    fixed = sum(_sent_tokens(item) for item in [*head, *turn, *tail])
    budget = max(0, context_tokens - fixed - (max_output_tokens or 0))
    candidates = [
        message
        for message in source.history
        if _as_provider_message(message, _text(message)) is not None
    ]
    chosen, history_tokens = store.select_context(candidates, budget)
    history = [_as_provider_message(message, _text(message)) for message in chosen]
    return Prompt(
        messages=[*head, *_paired([item for item in [*history, *turn] if item is not None]), *tail],
        history_count=len(chosen),
        estimated_tokens=fixed + history_tokens,
    )
