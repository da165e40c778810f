"""Write each API method once, get it blocking on one client and awaitable on the other.

An API method is written as a builder that returns a `Call[T]` and decorated with `@endpoint`.
Read from `ChatStoreClient` it becomes `(...) -> T`; read from `AsyncChatStoreClient`,
`async (...) -> T`. The overloads of `__get__` tell type checkers the same, parameters included.
`@paginated` does the same for list builders, walking every page lazily; `@streamed` for a
stream of Server-Sent Events followed through a `Follower`, and `@downloaded` for an answer read
in chunks as it comes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from chat_store.client._core import Call
from chat_store.client._follow import Follower, sse_lines, sse_lines_async
from chat_store.client._transports import AsyncTransport, SyncTransport
from chat_store.client.models import Page

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
Item = TypeVar("Item")


class _Described(Generic[P, R]):
    """A builder (`R`: what it builds), bound to a client when read from one."""

    def __init__(self, build: Callable[Concatenate[Any, P], R]) -> None:
        self.build = build
        self.__doc__ = build.__doc__
        self.__name__ = build.__name__
        signature = inspect.signature(build)
        # Shown by help() and IDEs: the builder's parameters without `self`.
        self._signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    def _bind(self, obj: object) -> Any:
        if obj is None:
            return self
        if isinstance(obj, AsyncTransport):
            bound = self._bind_async(obj)
        elif isinstance(obj, SyncTransport):
            bound = self._bind_sync(obj)
        else:
            raise TypeError(f"{self.__name__} needs a client with a transport")
        bound.__name__ = self.__name__
        bound.__qualname__ = f"{type(obj).__name__}.{self.__name__}"
        bound.__doc__ = self.__doc__
        bound.__signature__ = self._signature  # type: ignore[attr-defined]
        return bound

    def _bind_async(self, client: AsyncTransport) -> Callable[..., Any]:
        raise NotImplementedError

    def _bind_sync(self, client: SyncTransport) -> Callable[..., Any]:
        raise NotImplementedError


class endpoint(_Described[P, Call[T]]):
    """An API method: the builder's `Call` is sent by whichever client it is read from."""

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: SyncTransport, owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, obj: AsyncTransport, owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: object, owner: type[Any]) -> Any:
        return self._bind(obj)

    def _bind_async(self, client: AsyncTransport) -> Callable[..., Any]:
        build = self.build

        async def call_async(*args: P.args, **kwargs: P.kwargs) -> T:
            return await client._run(build(client, *args, **kwargs))

        return call_async

    def _bind_sync(self, client: SyncTransport) -> Callable[..., Any]:
        build = self.build

        def call_sync(*args: P.args, **kwargs: P.kwargs) -> T:
            return client._run(build(client, *args, **kwargs))

        return call_sync


class _Iterated(_Described[P, R], Generic[P, R, Item]):
    """A builder read as a method that yields `Item`s: iterated on the blocking client,
    async-iterated on the other."""

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: SyncTransport, owner: type[Any]) -> Callable[P, Iterator[Item]]: ...
    @overload
    def __get__(
        self, obj: AsyncTransport, owner: type[Any]
    ) -> Callable[P, AsyncIterator[Item]]: ...
    def __get__(self, obj: object, owner: type[Any]) -> Any:
        return self._bind(obj)


class paginated(_Iterated[P, Call[Page[T]], T]):
    """Every item of a keyset-paginated list, page after page, fetched as they are consumed.

    The builder returns the call for the first page; each next page asks for the page's
    `next_cursor` where the list gives one, else `after=<last_id>`.
    """

    def _bind_async(self, client: AsyncTransport) -> Callable[..., Any]:
        build = self.build

        async def walk_async(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
            call: Call[Page[T]] | None = build(client, *args, **kwargs)
            while call is not None:
                page = await client._run(call)
                for item in page.data:
                    yield item
                call = _next_page(call, page)

        return walk_async

    def _bind_sync(self, client: SyncTransport) -> Callable[..., Any]:
        build = self.build

        def walk_sync(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
            call: Call[Page[T]] | None = build(client, *args, **kwargs)
            while call is not None:
                page = client._run(call)
                yield from page.data
                call = _next_page(call, page)

        return walk_sync


def _next_page(call: Call[Page[T]], page: Page[T]) -> Call[Page[T]] | None:
    if not page.has_more or page.last_id is None:
        return None
    if page.next_cursor is not None:
        # The session list's cursor holds the last item's place, which `after` re-reads.
        return call.with_params(cursor=page.next_cursor)
    return call.with_params(after=page.last_id)


class streamed(_Iterated[P, Follower[T], T]):
    """A stream of Server-Sent Events, followed through the builder's `Follower` and resumed by
    itself after a dropped connection."""

    def _bind_async(self, client: AsyncTransport) -> Callable[..., Any]:
        build = self.build

        async def follow_async(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
            follower = build(client, *args, **kwargs)
            while not follower.done:
                try:
                    async with client._stream(follower.call()) as response:
                        async for item in follower.read_async(
                            sse_lines_async(response.aiter_text())
                        ):
                            yield item
                except Exception as exc:
                    await asyncio.sleep(follower.delay_after(exc))

        return follow_async

    def _bind_sync(self, client: SyncTransport) -> Callable[..., Any]:
        build = self.build

        def follow_sync(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
            follower = build(client, *args, **kwargs)
            while not follower.done:
                try:
                    with client._stream(follower.call()) as response:
                        yield from follower.read(sse_lines(response.iter_text()))
                except Exception as exc:
                    time.sleep(follower.delay_after(exc))

        return follow_sync


class downloaded(_Iterated[P, Call[Any], bytes]):
    """An answer read in chunks of bytes as the service sends them (an export)."""

    def _bind_async(self, client: AsyncTransport) -> Callable[..., Any]:
        build = self.build

        async def read_async(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[bytes]:
            async with client._stream(build(client, *args, **kwargs)) as response:
                async for chunk in response.aiter_bytes():
                    yield chunk

        return read_async

    def _bind_sync(self, client: SyncTransport) -> Callable[..., Any]:
        build = self.build

        def read_sync(*args: P.args, **kwargs: P.kwargs) -> Iterator[bytes]:
            with client._stream(build(client, *args, **kwargs)) as response:
                yield from response.iter_bytes()

        return read_sync
