"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming answers)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid

from starlette._utils import get_route_path
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat_store.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from chat_store.errors import BodyTooLarge
from chat_store.logging_setup import request_id_var
from chat_store.metrics import Metrics

logger = logging.getLogger("chat_store.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


# Set in a request's scope state by an answer that was not sent because its client had left.
CLIENT_LEFT = "client_left"
CLIENT_LEFT_STATUS = 499


async def send_problem(
    send: Send,
    scope: Scope,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    close: bool = False,
) -> None:
    """A problem+json answer from middleware (outside FastAPI's exception handlers)."""
    body = json.dumps(
        problem_body(
            status=status, code=code, title=title, detail=detail, instance=scope.get("path", "")
        )
    ).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class RequestContextMiddleware:
    """Request id (taken from X-Request-ID when it is safe, else generated), security headers,
    no-store on auth answers, and one access log line per request."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, hsts: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        request_id_var.set(request_id)
        path: str = scope["path"]
        # Matched as the router matches (ROOT_PATH taken off): behind a proxy that forwards the
        # prefix, the path starts with it.
        no_store = get_route_path(scope).startswith(("/api/v1/auth", "/api/v1/api-keys"))
        started = time.perf_counter()
        status = 500
        streaming = answered = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, streaming, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                headers = MutableHeaders(scope=message)
                streaming = headers.get("content-type", "").startswith("text/event-stream")
                headers["X-Request-ID"] = request_id
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name.decode(), value.decode())
                if no_store:
                    headers["Cache-Control"] = "no-store"
                for name, value in scope["state"].get("rate_limit_headers", {}).items():
                    headers.setdefault(name, value)
                if self.hsts:
                    headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not answered and scope["state"].get(CLIENT_LEFT):
                status = CLIENT_LEFT_STATUS  # as nginx logs a request its client gave up on
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # A live stream is an answer too, counted when it ends; its length is how long the
            # client followed, not how long it took to answer: not a duration.
            self.metrics.observe(scope["method"], template, status, None if streaming else elapsed)
            logger.info(
                "%s %s %s",
                scope["method"],
                path,
                status,
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )


class BodySizeLimitMiddleware:
    """413 before the body is read whole: by Content-Length when given, else while streaming.

    A chunked body that grows past the limit is answered with 413 at once; the application then
    sees a disconnect, and whatever it tries to send after that is dropped. `larger` gives paths
    (matched by their end) a limit of their own.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, larger: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = tuple((larger or {}).items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes
        path: str = scope.get("path", "")
        for suffix, limit in self.larger:
            if path.endswith(suffix):
                max_bytes = limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > max_bytes
            except ValueError:
                too_large = False
            if too_large:
                await self._reject(scope, send, max_bytes)
                return
        received = 0
        rejected = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes and not response_started:
                    rejected = True
                    await self._reject(scope, send, max_bytes)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise

    async def _reject(self, scope: Scope, send: Send, max_bytes: int) -> None:
        error = BodyTooLarge(max_bytes)
        await send_problem(
            send,
            scope,
            status=error.status,
            code=error.code,
            title=error.title,
            detail=error.detail,
            close=True,
        )


class RequestTimeoutMiddleware:
    """Answer 504 when a request takes longer than `seconds` (streams and exports are exempt:
    they stay open as long as they send; so are chat turns, which stream, or answer 202 by this
    limit themselves). The handler is cancelled: its transaction is rolled back unless it had
    already committed, or its one statement ran in autocommit (then the write is stored and only
    its answer is lost). A write sent with an Idempotency-Key is never autocommitted, so its retry
    finds it rolled back or stored with its answer."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.endswith(("/stream", "/events", "/chat", "/export")):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if started:
                raise
            await send_problem(
                send,
                scope,
                status=504,
                code="timeout",
                title="Request timed out",
                detail=f"The request took longer than {self.seconds:g} s",
            )
