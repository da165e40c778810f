"""A TCP relay to a server that can go silent: what a connection sees when its peer vanishes
without a word (a Redis node gone in a failover, a NAT that forgot the flow)."""

from __future__ import annotations

import asyncio
import contextlib


class SilencingRelay:
    """Relays 127.0.0.1:port to 127.0.0.1:target_port. `silence()` stops relaying on the
    connections open now, without closing them: nothing is answered and no error comes. New
    connections are relayed as before."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._generation = 0
        self._writers: list[asyncio.StreamWriter] = []

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        self._generation += 1

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        generation = self._generation
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_w, server_w]

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                if generation == self._generation:  # else swallowed: nothing answered
                    writer.write(data)
                    await writer.drain()

        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
