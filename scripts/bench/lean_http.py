"""A lean HTTP/1.1 client for load generators that share the machine's cores with the server:
one keep-alive connection, GET only, bodies by Content-Length (what uvicorn sends for a JSON
answer). httpx spends 1.3 to 2 ms of CPU on each search request here, as much as the service's
own Python; this spends about a tenth of that, so that the server and the database keep the
cores the figures are about."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode, urlsplit


class LeanConnection:
    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(
        self, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """(status, body) of GET path?params; reconnects once if the connection was closed."""
        if self._writer is None:
            await self._connect()
        request = f"GET {path}?{urlencode(params)} HTTP/1.1\r\nHost: {self._host}\r\n"
        request += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        assert self._writer is not None and self._reader is not None
        self._writer.write(request.encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        closing = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                closing = True
        body = await self._reader.readexactly(length)
        if closing:
            await self.close()
        return status, body

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._reader = None
