"""The model provider: any OpenAI-compatible server, through the official `openai` SDK.

The SDK is the only client of the provider: it sends the request, decodes the stream (its SSE
decoder, its error events), retries a refused request before anything streamed (429, 5xx, a
connection that failed) with its own backoff, and reports failures as its typed errors, which
are turned here into a `ProviderFailure` whose message holds no secret.

The chunks are asked of it as the JSON it decoded (`cast_to=object`), not as its typed
`ChatCompletionChunk`: building that model for every streamed chunk took more of the process's
CPU than everything else a streamed answer does (docs/benchmarks.md, chat turns).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import openai
from openai import AsyncStream

from chat_store.settings import Settings

FailureKind = Literal["timeout", "connection", "status", "provider"]
_MAX_ERROR_CHARS = 500
_REDACTED = "[redacted]"
_SECRET_RUN = 12  # characters of the provider's key in a row that an error may not show
_SECRET_MIN_CHARS = 20  # a shorter key is redacted whole only
_REDACT_ROUNDS = 8
_MAX_COUNT = 100_000_000  # a token count the store keeps (MessageUpdate's token_count)
_MAX_LABEL_CHARS = 200
# The SDK refuses to start without a key; servers that need none (Ollama, vLLM, llama.cpp's
# server) ignore the bearer token it then sends.
_NO_KEY = "not-needed"
_COMPLETIONS_PATH = "/chat/completions"
# The request's auth, as the SDK's own chat.completions.create sends it (the bearer key only).
_REQUEST_OPTIONS: openai.RequestOptions = {"security": {"bearer_auth": True}}


@dataclass(frozen=True)
class ChatRequest:
    """One streamed chat completion: what is sent to the provider."""

    model: str
    messages: list[dict[str, Any]]
    temperature: float | None = None
    max_output_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


@dataclass(frozen=True)
class Finish:
    """The end of an answer, with the provider's usage when it sent it, the calls of the
    client's tools it asked for ([{"id", "name", "arguments"}], in the model's order), and when
    (time.monotonic()) its first content came: text or a tool call's first fragment."""

    reason: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    first_at: float | None = None


class ToolCallParts:
    """The tool calls of a streamed answer, put together from their fragments: each chunk's
    `delta.tool_calls` holds pieces of calls by `index`, the first one with the call's id and
    function name, the following ones more of its arguments.

    An index is not always a call's own: Ollama sends every call under `index: 0` (its older
    versions under none), each call whole in one fragment with its id. So a fragment whose id
    differs from the id of the call its index holds starts a new call; without an index, a
    fragment with a new id starts one and any other continues the last call."""

    def __init__(self) -> None:
        # Every call with its index, in the order they began; and the call each index is on.
        self._calls: list[tuple[int, dict[str, str]]] = []
        self._at: dict[int, dict[str, str]] = {}

    def add(self, fragments: Any) -> bool:
        """Take a chunk's `delta.tool_calls` (as decoded JSON); whether it held any."""
        if not isinstance(fragments, list):
            return False
        for fragment in map(_mapping, fragments):
            function = _mapping(fragment.get("function"))
            name = _text(function.get("name"))
            call = self._call_of(fragment, name)
            if text := _text(fragment.get("id")):
                call["id"] = text
            if name:
                call["name"] = name
            call["arguments"] += _arguments(function.get("arguments"))
        return bool(fragments)

    def _call_of(self, fragment: dict[str, Any], name: str) -> dict[str, str]:
        """The call a fragment (naming the function `name`, or "") goes on with, or a new one.
        A fragment that names its function begins a call: one that comes to a call already
        named, without ids to tell them apart, is the next call under the same index."""
        index, call_id = fragment.get("index"), _text(fragment.get("id"))
        if isinstance(index, int):
            held = self._at.get(index)
            if held is not None and _continues(held, call_id, name):
                return held
        elif self._calls:
            index, held = self._calls[-1]
            if _continues(held, call_id, name):
                return held
        else:
            index = 0
        call = {"id": "", "name": "", "arguments": ""}
        self._calls.append((index, call))
        self._at[index] = call
        return call

    def calls(self) -> list[dict[str, str]]:
        """The calls in index order (those of one index in the order they came), their text
        cleaned; an id made up where none was sent (some servers send none, and the tool
        message must name its call)."""
        return [
            {
                "id": clean_text(call["id"]) or f"call_{uuid.uuid4().hex[:24]}",
                "name": call["name"],
                "arguments": clean_text(call["arguments"]),
            }
            for _, call in sorted(self._calls, key=lambda entry: entry[0])
        ]


def _continues(held: dict[str, str], call_id: str, name: str) -> bool:
    """Whether a fragment goes on with the call `held`: the same id; without ids to tell, unless
    it names another function, or names one again once the held call's arguments are whole
    (some servers repeat the name in every fragment of a call)."""
    if call_id and held["id"]:
        return call_id == held["id"]
    if not name or not held["name"]:
        return True
    return name == held["name"] and not _whole_json(held["arguments"])


def _whole_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _arguments(value: object) -> str:
    """A fragment of a call's arguments: text, or (some servers) the arguments as a JSON
    object, kept as its JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return _text(value)


@dataclass
class ProviderFailure(Exception):
    """The provider could not be reached, refused, failed or went silent."""

    kind: FailureKind
    message: str
    status: int | None = None
    # True when the failure came after text had streamed (the answer is partial).
    mid_answer: bool = field(default=False)

    def __str__(self) -> str:
        return self.message


class Provider:
    def __init__(self, settings: Settings) -> None:
        assert settings.llm_base_url is not None
        self._settings = settings
        self._secret = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
        # The key as a message may quote it: as it is, and as a URL carries it.
        self._secret_forms = sorted(
            {
                form
                for form in (self._secret, quote(self._secret), quote_plus(self._secret))
                if form
            },
            key=len,
            reverse=True,
        )
        timeout = settings.llm_timeout_seconds
        self._gap_timeout = timeout
        self._max_seconds = settings.llm_max_generation_seconds
        self._client = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=self._secret or _NO_KEY,
            # The first answer (headers) and each read of the stream wait this long at most.
            timeout=openai.Timeout(timeout, connect=min(timeout, 10.0)),
            max_retries=settings.llm_max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Finish]:
        """The answer's text as it comes, then one `Finish`. Raises ProviderFailure."""
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
        }
        if self._settings.llm_stream_usage:
            arguments["stream_options"] = {"include_usage": True}
        if request.temperature is not None:
            arguments["temperature"] = request.temperature
        if request.max_output_tokens is not None:
            arguments[self._settings.llm_max_tokens_parameter] = request.max_output_tokens
        if request.tools:
            arguments["tools"] = request.tools
        if request.tool_choice is not None:
            arguments["tool_choice"] = request.tool_choice
        if request.parallel_tool_calls is not None:
            arguments["parallel_tool_calls"] = request.parallel_tool_calls
        started = time.monotonic()
        try:
            chunks = await self._client.post(
                _COMPLETIONS_PATH,
                body=arguments,
                options=_REQUEST_OPTIONS,
                cast_to=object,
                stream=True,
                stream_cls=AsyncStream[object],
            )
        except openai.APIError as exc:
            raise self._failure(exc, mid_answer=False) from None
        first_at: float | None = None  # when text or a tool call first came
        try:
            reason: str | None = None
            held = ""  # the first half of a surrogate pair, until its second comes
            usage: dict[str, Any] = {}
            model: str | None = None
            tool_calls = ToolCallParts()
            iterator = chunks.__aiter__()
            # The gap is counted from the last chunk that carried some of the answer: the SDK's
            # read timeout covers a silent connection, not one kept busy with comments or
            # empty chunks. The whole call has its own limit besides.
            # The SDK's retries of a refused or silent request are over once `post` returns:
            # the wait for the first token starts with the request that answered.
            progress_at = time.monotonic()
            ends_at = started + self._max_seconds
            while True:
                now = time.monotonic()
                if now >= ends_at:
                    raise self._too_long(mid_answer=first_at is not None)
                try:
                    wait = max(0.0, min(progress_at + self._gap_timeout, ends_at) - now)
                    async with asyncio.timeout(wait):
                        raw = await anext(iterator)
                except StopAsyncIteration:
                    break
                except ValueError:  # a chunk that is not JSON, or bytes that are not UTF-8
                    raise ProviderFailure(
                        "provider",
                        "The model provider sent a chunk that is not JSON text",
                        mid_answer=first_at is not None,
                    ) from None
                except TimeoutError:
                    if time.monotonic() >= ends_at:
                        raise self._too_long(mid_answer=first_at is not None) from None
                    raise ProviderFailure(
                        "timeout",
                        f"The model provider sent nothing of the answer for "
                        f"{self._gap_timeout:g} s (LLM_TIMEOUT_SECONDS)",
                        mid_answer=first_at is not None,
                    ) from None
                chunk = _mapping(raw)
                if failure := _reported_error(chunk):
                    raise ProviderFailure(
                        "provider",
                        self._redact(f"The model provider reported an error: {failure}"),
                        mid_answer=first_at is not None,
                    )
                model = _label(chunk.get("model")) or model
                # Whether the chunk moves the answer on (text, a tool call, reasoning, a finish
                # reason, the usage), in any choice: one with an empty delta, or only the role,
                # is a keep-alive.
                moved = isinstance(chunk.get("usage"), dict)
                if moved:
                    usage = chunk["usage"]
                choices = chunk.get("choices")
                for choice in map(_mapping, choices if isinstance(choices, list) else ()):
                    delta = _mapping(choice.get("delta"))
                    if choice.get("finish_reason") or any(
                        value for key, value in delta.items() if key != "role"
                    ):
                        moved = True
                    if (choice.get("index") or 0) != 0:
                        continue
                    # A surrogate pair's halves may come in two chunks (a gateway that cuts
                    # UTF-16 strings): the first half waits for the second.
                    text, held = _held_back(held + _content(delta.get("content")))
                    text = clean_text(text)
                    calls = tool_calls.add(delta.get("tool_calls"))
                    if (text or calls) and first_at is None:
                        first_at = time.monotonic()
                    if text:
                        yield text
                    if finish_reason := _label(choice.get("finish_reason")):
                        reason = finish_reason
                if moved:
                    progress_at = time.monotonic()
            if held:
                yield clean_text(held)
            found_calls = tool_calls.calls()
            if reason is None and not found_calls:
                # A stream cut short where a message ends (a proxy, a server that failed
                # without saying so) reads like a finished one but for this: the text is kept,
                # to be continued, not taken for the whole answer.
                raise ProviderFailure(
                    "provider",
                    "The model provider's stream ended without a finish reason "
                    "(cut short, or not a streamed chat completion)",
                    mid_answer=first_at is not None,
                )
            yield Finish(
                reason=reason,
                prompt_tokens=_count(usage.get("prompt_tokens")),
                completion_tokens=_count(usage.get("completion_tokens")),
                model=model,
                tool_calls=found_calls,
                first_at=first_at,
            )
        except openai.APIError as exc:
            raise self._failure(exc, mid_answer=first_at is not None) from None
        finally:
            await chunks.close()

    def _too_long(self, *, mid_answer: bool) -> ProviderFailure:
        return ProviderFailure(
            "timeout",
            f"The answer took longer than {self._max_seconds:g} s (LLM_MAX_GENERATION_SECONDS)",
            mid_answer=mid_answer,
        )

    def _failure(self, exc: openai.APIError, *, mid_answer: bool) -> ProviderFailure:
        if isinstance(exc, openai.APITimeoutError):
            kind: FailureKind = "timeout"
            message = (
                f"The model provider did not answer within {self._gap_timeout:g} s "
                "(LLM_TIMEOUT_SECONDS)"
            )
        elif isinstance(exc, openai.APIConnectionError):
            kind = "connection"
            cause = exc.__cause__
            message = "The connection to the model provider failed" + (
                f" ({type(cause).__name__})" if cause is not None else ""
            )
        elif isinstance(exc, openai.APIStatusError):
            kind = "status"
            message = f"The model provider answered {exc.status_code}: {_error_text(exc)}"
        else:
            kind = "provider"
            message = f"The model provider reported an error: {_error_text(exc)}"
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        return ProviderFailure(kind, self._redact(message), status, mid_answer=mid_answer)

    def _redact(self, message: str) -> str:
        """No secret in a stored error: a provider may quote the key it was given, whole, as a
        URL carries it, or in part (cut, masked in the middle): every run of _SECRET_RUN or more
        of its characters goes. The text is cleaned as stored text is."""
        # Cut first (a provider's error page may be megabytes), leaving room for a key that
        # straddles the cut.
        message = clean_text(message[: _MAX_ERROR_CHARS + len(self._secret)])
        for form in self._secret_forms:
            message = message.replace(form, _REDACTED)
        for _ in range(_REDACT_ROUNDS):
            # A key short enough to be a placeholder (`not-needed`, `sk-no-key-required`)
            # would take ordinary words with it.
            if len(self._secret) < _SECRET_MIN_CHARS:
                break
            matcher = SequenceMatcher(None, message, self._secret, autojunk=False)
            runs = [block for block in matcher.get_matching_blocks() if block.size >= _SECRET_RUN]
            if not runs:
                break
            for run in reversed(runs):
                message = message[: run.a] + _REDACTED + message[run.a + run.size :]
        return message[:_MAX_ERROR_CHARS]


def _error_text(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(exc, openai.APIStatusError):
        return exc.response.reason_phrase or "no detail"
    return exc.message


def _mapping(value: object) -> dict[str, Any]:
    """A JSON object of a chunk, or an empty one for anything else (a server's null)."""
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _label(value: object) -> str:
    """A name the provider sends (its model, a finish reason), as the answer's metadata keeps
    it: clean and short, within the room the service's keys have (SERVICE_METADATA_BYTES)."""
    return clean_text(_text(value))[:_MAX_LABEL_CHARS]


def _count(value: object) -> int | None:
    """A token count the provider reported, if it is one: 0 to 100,000,000."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT:
        return value
    return None


def _content(value: object) -> str:
    """A delta's text: a string, or (some servers) a list of parts whose `text` parts are
    joined."""
    if isinstance(value, list):
        return "".join(
            _text(part.get("text"))
            for part in map(_mapping, value)
            if part.get("type", "text") == "text"
        )
    return _text(value)


def _held_back(text: str) -> tuple[str, str]:
    """`text` without a trailing first half of a surrogate pair, and that half."""
    if text and 0xD800 <= ord(text[-1]) <= 0xDBFF:
        return text[:-1], text[-1]
    return text, ""


def _reported_error(chunk: dict[str, Any]) -> str | None:
    """The message of a chunk that reports an error instead of a part of the answer
    (`{"error": {...}}`, `{"object": "error", "message": ...}`)."""
    error = chunk.get("error")
    if isinstance(error, dict):
        return _text(error.get("message")) or "no detail"
    if isinstance(error, str) and error:
        return error
    if chunk.get("object") == "error":
        return _text(chunk.get("message")) or "no detail"
    return None


def clean_text(text: str) -> str:
    """Text the store can keep: no NUL; the two halves of a surrogate pair (JSON escapes them
    apart) become the character they make, and a lone one U+FFFD."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text
