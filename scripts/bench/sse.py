"""The SSE readers (a child process: python scripts/bench.py _sse-readers ...) and their lag."""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .processes import summary_ms


def sse_lags(
    writes: list[tuple[int, float, float]], readers: list[list[list[float]]], final: int
) -> dict[str, Any]:
    """Delivery lag of every (reader, delta): from the append returning to the first event
    at or past that delta's end offset. Events that arrive before the writer's answer (the
    publish happens at commit, just before the answer is sent) count as zero. The lag from
    the moment the writer sent the append is given too: it includes the append itself."""
    lags: list[float] = []
    from_send: list[float] = []
    missing = 0
    early = 0
    complete = 0
    for events in readers:
        offsets = [event[0] for event in events]
        if offsets and offsets[-1] >= final:
            complete += 1
        for end, sent, returned in writes:
            index = bisect.bisect_left(offsets, end)
            if index == len(offsets):
                missing += 1
                continue
            from_send.append(events[index][1] - sent)
            lag = events[index][1] - returned
            if lag < 0:
                early += 1
                lag = 0.0
            lags.append(lag)
    return {
        "lag_ms": summary_ms(lags),
        "lag_from_send_ms": summary_ms(from_send),
        "deliveries": len(lags),
        "missing": missing,
        "before_answer": early,
        "readers_complete": complete,
    }


def sse_readers_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py _sse-readers")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--header", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--final-offset", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wave", type=int, default=50)
    args = parser.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(_sse_readers(args))
    args.out.write_text(json.dumps(result))


async def _sse_readers(args: argparse.Namespace) -> dict[str, Any]:
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        f"{args.header}\r\nAccept: text/event-stream\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + args.timeout
    failures: list[str] = []
    events: list[list[list[float]]] = []
    tasks: list[asyncio.Task[None]] = []

    async def reader(
        stream: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[list[float]]
    ) -> None:
        pending = b""
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    data = await asyncio.wait_for(stream.read(65536), remaining)
                except TimeoutError:
                    return
                now = time.monotonic()
                if not data:
                    return
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                finished = False
                for line in lines:
                    if line.startswith(b"id: "):
                        offset = int(line[4:].strip())
                        seen.append([offset, now])
                        finished = finished or offset >= args.final_offset
                    elif line.startswith(b"event: done"):
                        finished = True
                if finished:
                    return
        finally:
            writer.close()

    async def connect() -> None:
        try:
            stream, writer = await asyncio.open_connection("127.0.0.1", args.port)
            writer.write(request)
            head = await asyncio.wait_for(stream.readuntil(b"\r\n\r\n"), 60)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            failures.append(repr(exc))
            return
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            failures.append(f"status {status}")
            writer.close()
            return
        seen: list[list[float]] = []
        events.append(seen)
        tasks.append(asyncio.create_task(reader(stream, writer, seen)))

    for start in range(0, args.count, args.wave):
        await asyncio.gather(*(connect() for _ in range(min(args.wave, args.count - start))))
    print(f"CONNECTED {len(events)} {len(failures)}", flush=True)
    await asyncio.gather(*tasks)
    return {"readers": events, "failures": len(failures), "failure_samples": failures[:5]}
