"""The two thin transports: they send `Call`s over httpx, one blocking, one async.

Only the sending differs between them; everything else is in `ClientCore`. The refresh on 401 is
guarded by a lock because refresh tokens are single use: two requests that both saw a 401 and both
refreshed would present the same token twice, and the service takes that as theft and revokes
the whole login. The second one waits, sees the token has changed, and just retries.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx

from chat_store.client._core import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    Call,
    ClientCore,
    default_headers,
)
from chat_store.client.errors import UnauthorizedError

T = TypeVar("T")


HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)
TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)


class _Connection(ClientCore, Generic[HttpT, TransportT]):
    """What both transports hold: the credentials (ClientCore) and an httpx client, their own
    (closed with them) unless one is given."""

    _http_class: type[HttpT]
    _refresh_lock: Any  # one refresh at a time (see above): a thread's lock or a task's

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        client_id: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: TransportT | None = None,
        http_client: HttpT | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            access_token=access_token,
            refresh_token=refresh_token,
            client_id=client_id,
        )
        self._owns_http = http_client is None
        self._http: HttpT = http_client or self._http_class(
            base_url=base_url,
            timeout=timeout,
            headers=default_headers(headers),
            transport=transport,  # type: ignore[arg-type]
        )
        self._refresh_lock = self._new_refresh_lock()

    @staticmethod
    def _new_refresh_lock() -> Any:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)


class SyncTransport(_Connection[httpx.Client, httpx.BaseTransport]):
    _http_class = httpx.Client
    _refresh_lock: threading.Lock
    _new_refresh_lock = staticmethod(threading.Lock)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        response = self._send(call, stream=False)
        return self._finish(call, response)

    def _send(self, call: Call[Any], *, stream: bool) -> httpx.Response:
        sent = self._token_sent(call)
        response = self._http.send(self._build_request(self._http, call), stream=stream)
        if self._should_refresh(response, sent):
            response.close()
            self._refresh_after_401(sent)
            response = self._http.send(self._build_request(self._http, call), stream=stream)
        return response

    def _refresh_after_401(self, sent: str | None) -> None:
        with self._refresh_lock:
            if self.access_token != sent:  # another thread refreshed meanwhile
                return
            try:
                self._run(self._refresh_call())
            except UnauthorizedError:
                self.clear_tokens()  # the refresh token is spent, revoked or expired
                raise

    @contextmanager
    def _stream(self, call: Call[Any]) -> Iterator[httpx.Response]:
        """Send `call` and hand over the answer unread (for Server-Sent Events and exports)."""
        response = self._send(call, stream=True)
        try:
            if not response.is_success:
                response.read()
                self._check(call, response)
            yield response
        finally:
            response.close()


class AsyncTransport(_Connection[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    _http_class = httpx.AsyncClient
    _refresh_lock: asyncio.Lock
    _new_refresh_lock = staticmethod(asyncio.Lock)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, call: Call[T]) -> T:
        response = await self._send(call, stream=False)
        return self._finish(call, response)

    async def _send(self, call: Call[Any], *, stream: bool) -> httpx.Response:
        sent = self._token_sent(call)
        response = await self._http.send(self._build_request(self._http, call), stream=stream)
        if self._should_refresh(response, sent):
            await response.aclose()
            await self._refresh_after_401(sent)
            response = await self._http.send(self._build_request(self._http, call), stream=stream)
        return response

    async def _refresh_after_401(self, sent: str | None) -> None:
        async with self._refresh_lock:
            if self.access_token != sent:  # another task refreshed meanwhile
                return
            try:
                await self._run(self._refresh_call())
            except UnauthorizedError:
                self.clear_tokens()  # the refresh token is spent, revoked or expired
                raise

    @asynccontextmanager
    async def _stream(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        """Send `call` and hand over the answer unread (for Server-Sent Events and exports)."""
        response = await self._send(call, stream=True)
        try:
            if not response.is_success:
                await response.aread()
                self._check(call, response)
            yield response
        finally:
            await response.aclose()
