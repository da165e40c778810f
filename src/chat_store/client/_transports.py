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
from typing import Any, Self, TypeVar

import httpx

from chat_store.client._core import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    Call,
    ClientCore,
    QueryValue,
    default_headers,
    query,
    raw,
)
from chat_store.client.errors import UnauthorizedError

T = TypeVar("T")


class SyncTransport(ClientCore):
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
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            access_token=access_token,
            refresh_token=refresh_token,
            client_id=client_id,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers=default_headers(headers),
            transport=transport,
        )
        self._refresh_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

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

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, QueryValue] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
    ) -> httpx.Response:
        """Any API request, with credentials, refresh and error mapping; a 2xx answer back."""
        call = Call(
            method,
            path,
            parse=raw,
            json=json,
            params=query(**(params or {})),
            headers=dict(headers or {}),
            authenticated=authenticated,
        )
        return self._run(call)

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


class AsyncTransport(ClientCore):
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
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            access_token=access_token,
            refresh_token=refresh_token,
            client_id=client_id,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            headers=default_headers(headers),
            transport=transport,
        )
        self._refresh_lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

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

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, QueryValue] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
    ) -> httpx.Response:
        """Any API request, with credentials, refresh and error mapping; a 2xx answer back."""
        call = Call(
            method,
            path,
            parse=raw,
            json=json,
            params=query(**(params or {})),
            headers=dict(headers or {}),
            authenticated=authenticated,
        )
        return await self._run(call)

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
