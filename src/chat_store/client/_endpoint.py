"""Write each API method once, get it blocking on one client and awaitable on the other.

An API method is written as a builder that returns a `Call[T]` and decorated with `@endpoint`.
Read from `ChatStoreClient` it becomes `(...) -> T`; read from `AsyncChatStoreClient`,
`async (...) -> T`. The overloads of `__get__` tell type checkers the same, parameters included.
`@paginated` does the same for list builders, walking every page lazily.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from chat_store.client._core import Call
from chat_store.client._transports import AsyncTransport, SyncTransport
from chat_store.client.models import Page

P = ParamSpec("P")
T = TypeVar("T")


class _Described(Generic[P, T]):
    def __init__(self, build: Callable[Concatenate[Any, P], Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__
        self.__name__ = build.__name__
        signature = inspect.signature(build)
        # Shown by help() and IDEs: the builder's parameters without `self`.
        self._signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    def _name(self, function: Callable[..., Any], owner: object) -> None:
        function.__name__ = self.__name__
        function.__qualname__ = f"{type(owner).__name__}.{self.__name__}"
        function.__doc__ = self.__doc__
        function.__signature__ = self._signature  # type: ignore[attr-defined]


class endpoint(_Described[P, T]):
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
        if obj is None:
            return self
        build = self.build
        if isinstance(obj, AsyncTransport):
            client = obj

            async def call_async(*args: P.args, **kwargs: P.kwargs) -> T:
                return await client._run(build(client, *args, **kwargs))

            self._name(call_async, obj)
            return call_async
        if isinstance(obj, SyncTransport):
            sync_client = obj

            def call_sync(*args: P.args, **kwargs: P.kwargs) -> T:
                return sync_client._run(build(sync_client, *args, **kwargs))

            self._name(call_sync, obj)
            return call_sync
        raise TypeError(f"{self.__name__} needs a client with a transport")


class paginated(_Described[P, Page[T]]):
    """Every item of a keyset-paginated list, page after page, fetched as they are consumed.

    The builder returns the call for the first page; each next page asks for `after=<last_id>`.
    """

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: SyncTransport, owner: type[Any]) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, obj: AsyncTransport, owner: type[Any]) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, obj: object, owner: type[Any]) -> Any:
        if obj is None:
            return self
        build = self.build
        if isinstance(obj, AsyncTransport):
            client = obj

            async def walk_async(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
                call: Call[Page[T]] | None = build(client, *args, **kwargs)
                while call is not None:
                    page = await client._run(call)
                    for item in page.data:
                        yield item
                    call = _next_page(call, page)

            self._name(walk_async, obj)
            return walk_async
        if isinstance(obj, SyncTransport):
            sync_client = obj

            def walk_sync(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
                call: Call[Page[T]] | None = build(sync_client, *args, **kwargs)
                while call is not None:
                    page = sync_client._run(call)
                    yield from page.data
                    call = _next_page(call, page)

            self._name(walk_sync, obj)
            return walk_sync
        raise TypeError(f"{self.__name__} needs a client with a transport")


def _next_page(call: Call[Page[T]], page: Page[T]) -> Call[Page[T]] | None:
    if not page.has_more or page.last_id is None:
        return None
    return call.with_params(after=page.last_id)
