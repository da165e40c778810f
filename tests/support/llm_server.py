"""An OpenAI-compatible chat completions server for tests, run as a process of its own.

`POST /v1/chat/completions` streams `chat.completion.chunk` events (Server-Sent Events, ending
with `data: [DONE]`) as the test told it for the request's model, and records every request.
The service under test reaches it over HTTP through the openai SDK, as it reaches a real one.

What a model does is scripted by the test (`LlmServer.script`): a list of behaviours, each
request taking the next one and the last one staying. A behaviour says:

- `text`: the whole answer, sent in chunks of `chunk_chars` characters (default: the default
  answer below); when the request ends with an assistant message whose content starts the text
  (a continuation), only the rest of the text is sent, as a model continuing it would;
- `delay` seconds between chunks, `first_delay` seconds before the first;
- `fail_after`: after that many chunks the connection is dropped mid-answer;
- `hang_after`: after that many chunks nothing more is sent (until the client leaves);
- `idle_after`: after that many chunks only empty chunks (`{"content": ""}`, a keep-alive some
  servers send) follow, every `delay` seconds (0.1 by default), until the client leaves;
- `status`: answer this HTTP status with an OpenAI error body instead of streaming, its message
  `error_message` (by default "scripted <status>");
- `raw`: instead of all the above, these `data:` payloads as they are (JSON text or not), one
  event each, and nothing else: no finish reason or `[DONE]` unless they hold it;
- `usage`: send the usage chunk when the request asks for it (default true);
- `tool_calls`: calls of the request's tools to answer with, `[{"id", "name", "arguments"}]`
  (an id left out is not sent), after the text (none unless `text` is given): each call
  streamed as a model does, a first `delta.tool_calls` fragment with its index, id and name,
  then its arguments in fragments of `argument_chars` characters (default 4);
- `call_index`: the index the calls are sent under: "each" (0, 1, ... as OpenAI does, the
  default), "zero" (every call under 0, as Ollama does) or "none" (no index, as older Ollama);
- `finish_reason`: "stop" by default, "tool_calls" with tool calls.

Control routes (for the tests only): `POST /_control/script`, `GET /_control/requests`,
`POST /_control/reset`, `GET /_control/health`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

Scope = dict[str, Any]

DEFAULT_TEXT = "The fixture uses a fixed clock ⏰, so the test fails after midnight. "
ROOT = Path(__file__).resolve().parents[2]


def default_text(words: int) -> str:
    """A deterministic answer of `words` words, some of them outside the BMP and ASCII."""
    return "".join(
        f"w{i}{'⏰' if i % 7 == 3 else ''}{'é' if i % 5 == 1 else ''} " for i in range(words)
    )


class _State:
    def __init__(self) -> None:
        self.scripts: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[dict[str, Any]] = []

    def behaviour(self, model: str) -> dict[str, Any]:
        queue = self.scripts.get(model)
        if not queue:
            return {}
        return queue.pop(0) if len(queue) > 1 else queue[0]


STATE = _State()


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _json(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _chunk(request_id: str, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    payload = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def _remaining_text(text: str, messages: list[dict[str, Any]]) -> str:
    """A continuation (the last message is the assistant's partial answer) gets the rest."""
    if messages and messages[-1].get("role") == "assistant":
        prefix = str(messages[-1].get("content") or "")
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


async def _completions(scope: Scope, receive: Any, send: Any) -> None:
    body = json.loads(await _read_body(receive))
    headers = dict(scope["headers"])
    model = str(body.get("model"))
    record: dict[str, Any] = {
        "model": model,
        "body": body,
        "authorization": headers.get(b"authorization", b"").decode(),
        "outcome": "started",
    }
    STATE.requests.append(record)
    behaviour = STATE.behaviour(model)
    status = behaviour.get("status")
    if status:
        record["outcome"] = f"status {status}"
        message = behaviour.get("error_message", f"scripted {status}")
        await _json(
            send, int(status), {"error": {"message": message, "type": "test", "code": None}}
        )
        return
    if "raw" in behaviour:
        record["outcome"] = "raw"
        events = "".join(f"data: {payload}\n\n" for payload in behaviour["raw"])
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": events.encode(), "more_body": False})
        return
    calls = list(behaviour.get("tool_calls") or ())
    given_text = behaviour.get("text", "" if calls else DEFAULT_TEXT)
    text = _remaining_text(str(given_text), body.get("messages", []))
    size = int(behaviour.get("chunk_chars", 0)) or None
    chunks = [text[i : i + size] for i in range(0, len(text), size)] if size else _words(text)
    request_id = f"chatcmpl-{len(STATE.requests)}"

    left = asyncio.Event()

    async def watch_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        left.set()

    watcher = asyncio.create_task(watch_disconnect())
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": _chunk(request_id, model, {"role": "assistant", "content": ""}, None),
                "more_body": True,
            }
        )
        if behaviour.get("first_delay"):
            await asyncio.sleep(float(behaviour["first_delay"]))
        for index, piece in enumerate(chunks):
            if behaviour.get("hang_after") is not None and index >= int(behaviour["hang_after"]):
                record["outcome"] = "hanging"
                await left.wait()
                record["outcome"] = "client left"
                return
            if behaviour.get("idle_after") is not None and index >= int(behaviour["idle_after"]):
                record["outcome"] = "idling"
                while not left.is_set():
                    await send(
                        {
                            "type": "http.response.body",
                            "body": _chunk(request_id, model, {"content": ""}, None),
                            "more_body": True,
                        }
                    )
                    await asyncio.sleep(float(behaviour.get("delay") or 0.1))
                record["outcome"] = "client left"
                return
            if behaviour.get("fail_after") is not None and index >= int(behaviour["fail_after"]):
                record["outcome"] = "dropped"
                raise ConnectionAbortedError("scripted drop")  # uvicorn cuts the connection
            if left.is_set():
                record["outcome"] = "client left"
                return
            await send(
                {
                    "type": "http.response.body",
                    "body": _chunk(request_id, model, {"content": piece}, None),
                    "more_body": True,
                }
            )
            record["sent"] = record.get("sent", 0) + 1
            if behaviour.get("delay"):
                await asyncio.sleep(float(behaviour["delay"]))
        for index, call in enumerate(calls):
            for fragment in _tool_call_fragments(index, call, behaviour):
                await send(
                    {
                        "type": "http.response.body",
                        "body": _chunk(request_id, model, {"tool_calls": [fragment]}, None),
                        "more_body": True,
                    }
                )
        finish = behaviour.get("finish_reason", "tool_calls" if calls else "stop")
        tail = _chunk(request_id, model, {}, str(finish))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and behaviour.get("usage", True):
            usage = {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": 11,
                    "completion_tokens": len(chunks),
                    "total_tokens": 11 + len(chunks),
                },
            }
            tail += f"data: {json.dumps(usage)}\n\n".encode()
        tail += b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})
        record["outcome"] = "complete"
    finally:
        watcher.cancel()


def _tool_call_fragments(
    index: int, call: dict[str, Any], behaviour: dict[str, Any]
) -> list[dict[str, Any]]:
    """One call as a model streams it: its index, id and name first, then its arguments."""
    given = behaviour.get("call_index", "each")
    position = {"index": index if given == "each" else 0} if given != "none" else {}
    head: dict[str, Any] = {
        **position,
        "type": "function",
        "function": {"name": call["name"], "arguments": ""},
    }
    if "id" in call:
        head["id"] = call["id"]
    arguments = str(call.get("arguments", ""))
    size = int(behaviour.get("argument_chars", 4))
    rest = [
        {**position, "function": {"arguments": arguments[start : start + size]}}
        for start in range(0, len(arguments), size)
    ]
    return [head, *rest]


def _words(text: str) -> list[str]:
    """Chunks as a model sends tokens: each word with the space that follows it."""
    pieces: list[str] = []
    current = ""
    for char in text:
        current += char
        if char == " ":
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, method = scope["path"], scope["method"]
    if path == "/v1/chat/completions" and method == "POST":
        await _completions(scope, receive, send)
    elif path == "/_control/script" and method == "POST":
        body = json.loads(await _read_body(receive))
        STATE.scripts[str(body["model"])] = list(body["behaviours"])
        await _json(send, 200, {"ok": True})
    elif path == "/_control/requests" and method == "GET":
        await _json(send, 200, STATE.requests)
    elif path == "/_control/reset" and method == "POST":
        STATE.scripts.clear()
        STATE.requests.clear()
        await _json(send, 200, {"ok": True})
    elif path == "/_control/health":
        await _json(send, 200, {"ok": True})
    else:
        await _json(send, 404, {"error": {"message": f"no route {method} {path}"}})


class LlmServer:
    """Drives a running test provider: script its models, read what it received."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"  # what LLM_BASE_URL is set to

    async def script(self, model: str, *behaviours: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.post(
                "/_control/script", json={"model": model, "behaviours": list(behaviours)}
            )
            response.raise_for_status()

    async def requests(self, model: str | None = None) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.get("/_control/requests")
            response.raise_for_status()
            received: list[dict[str, Any]] = response.json()
        return [item for item in received if model is None or item["model"] == model]

    async def reset(self) -> None:
        async with httpx.AsyncClient(base_url=self.url) as http:
            (await http.post("/_control/reset")).raise_for_status()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def llm_server_process() -> Iterator[LlmServer]:
    """The test provider in a uvicorn process of its own, on a free loopback port."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.support.llm_server:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the test provider exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_control/health", timeout=1).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the test provider did not start")
            time.sleep(0.05)
        yield LlmServer(port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
