"""The archive object store: a local folder by default, S3 and S3-compatible stores by URL.

obstore does the work (one async API over the local file system, S3, GCS and Azure, with
retries and multipart uploads). `ARCHIVE_URL` is handed to `obstore.store.from_url`; an S3
store reads its credentials, region and endpoint from the usual `AWS_*` environment variables
(`AWS_ENDPOINT_URL` for an S3-compatible server, `AWS_ALLOW_HTTP=true` for one over plain HTTP).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import ObjectStore, from_url

from chat_store.errors import ArchiveUnavailable

T = TypeVar("T")

# A request that needs the store must not hang on it: obstore's defaults retry for up to three
# minutes. A few quick retries, then the caller gets a 503 (a job, an error it logs). (Client
# options are left to the environment: passing any replaces those, AWS_ALLOW_HTTP included.)
_RETRY: Any = {"max_retries": 3, "retry_timeout": timedelta(seconds=10)}


async def _call(operation: Awaitable[T]) -> T:
    """A store call: a missing object is FileNotFoundError, any other failure of the store is
    ArchiveUnavailable (503)."""
    try:
        return await operation
    except (FileNotFoundError, NotFoundError) as exc:
        raise FileNotFoundError(str(exc)) from exc
    except (BaseError, OSError) as exc:
        raise ArchiveUnavailable(f"The archive store failed: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    # Changes whenever the object is written again: what was verified is what is there.
    e_tag: str | None


class ArchiveStore:
    """Objects by key under one URL. The store is built on first use, so a server whose
    archive is never touched needs neither the folder nor credentials."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: ObjectStore | None = None

    def _open(self) -> ObjectStore:
        if self._store is None:
            try:
                if self.url.startswith("file:"):
                    # The folder is made on first use (DATA_DIR, or the configured one).
                    self._store = from_url(self.url, mkdir=True)
                else:
                    self._store = from_url(self.url, retry_config=_RETRY)
            except (BaseError, OSError, ValueError) as exc:
                # Neither the store's words nor the error itself go on (logs, a 503's detail):
                # they quote the URL, a password in it included.
                scheme = self.url.partition(":")[0]
                raise ArchiveUnavailable(
                    f"ARCHIVE_URL cannot be opened ({type(exc).__name__}; scheme {scheme!r}): "
                    "see docs/operations.md for the URLs and settings a store takes"
                ) from None
        return self._store

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        """Write the object from `chunks`, in constant memory (a multipart upload on S3). It
        appears whole or not at all: if `chunks` raises, nothing is written."""

        async def upload() -> None:
            async with obstore.open_writer_async(self._open(), key) as writer:
                async for chunk in chunks:
                    await writer.write(chunk)

        await _call(upload())

    async def read(self, key: str) -> bytes:
        result = await _call(obstore.get_async(self._open(), key))
        return bytes(await _call(result.bytes_async()))

    async def read_stream(self, key: str) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """The object's size and version tag, and its bytes as they arrive."""
        result = await _call(obstore.get_async(self._open(), key))
        meta: Any = result.meta

        async def chunks() -> AsyncIterator[bytes]:
            stream = result.stream()
            while True:
                try:
                    chunk = await _call(anext(stream))
                except StopAsyncIteration:
                    return
                yield bytes(chunk)

        return ObjectInfo(size=int(meta["size"]), e_tag=meta.get("e_tag")), chunks()

    async def info(self, key: str) -> ObjectInfo | None:
        """Size and version tag of the object, or None when there is none."""
        try:
            meta: Any = await _call(obstore.head_async(self._open(), key))
        except FileNotFoundError:
            return None
        return ObjectInfo(size=int(meta["size"]), e_tag=meta.get("e_tag"))

    async def delete(self, key: str) -> None:
        """Delete the object; one that is not there is not an error."""
        with contextlib.suppress(FileNotFoundError):
            await _call(obstore.delete_async(self._open(), key))
