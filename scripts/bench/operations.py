"""The measured parts of a run: throughput, last page, the 1 MB stream, SSE readers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Awaitable
from typing import Any

import httpx

from .api import check_last_page, create_sessions, expect, stream_deltas
from .config import (
    APPEND_OPERATION,
    COLD_SESSIONS,
    HOT_OPERATION,
    LIST_SESSIONS,
    SCRIPT,
    SIZES,
    BenchError,
    log,
    pace_ms,
    paced_name,
)
from .processes import rss_mb, summary_ms
from .sse import sse_lags
from .systems import Target


class Operations:
    """The parts of a Bench's run (see runner.py)."""

    async def run_throughput(self) -> None:
        data = self.workdir / "wrk"
        data.mkdir(exist_ok=True)

        def lines(name: str, rows: list[str]) -> str:
            path = data / name
            path.write_text("\n".join(rows) + "\n")
            return f"data={path}"

        await self.measure("create session", "create_session.lua")

        append = lines("append.txt", self.seed.append_sessions)
        await self.measure(
            APPEND_OPERATION,
            "append_message.lua",
            lambda _t, _p: _const([append]),
        )

        async def delta_messages(target: Target, phase: str) -> list[str]:
            pairs = await self.pending_messages(self.config.connections + 16, "delta")
            rows = [f"{session} {message}" for session, message in pairs]
            return [lines(f"delta-{target.name}-{phase}.txt", rows)]

        await self.measure("append delta", "append_delta.lua", delta_messages)

        hot = lines("hot.txt", self.seed.hot_sessions)
        await self.measure(
            HOT_OPERATION,
            "read_messages.lua",
            lambda _t, _p: _const([hot]),
        )
        if self.seed.cold_sessions:
            cold = lines("cold.txt", self.seed.cold_sessions)
            await self.measure(
                f"read last 50, cold ({COLD_SESSIONS} sessions)",
                "read_messages.lua",
                lambda _t, _p: _const([cold]),
                around=self.cache_flushed,
            )
        else:
            self.results["notes"].append(
                "cold reads are not measured on the embedded default: its in-process cache "
                "cannot be flushed from outside"
            )

        listed = self.targets_for_list()
        await self.measure(
            f"list sessions ({LIST_SESSIONS} owned)", "list_sessions.lua", sides=listed
        )
        if self.config.paced_rps > 0:
            # The same append and hot read at a load the worker is not saturated by: each
            # connection waits between answer and next request, so that all of them together
            # offer about paced_rps (a little less: the answer's own latency adds to the wait).
            # chat-store and the stack floor only: the floor is the restated target's reference.
            pace = f"pace_ms={pace_ms(self.config.connections, self.config.paced_rps)}"
            paced_sides = [t for t in self.throughput_targets if t is not self.baseline]
            await self.measure(
                paced_name(APPEND_OPERATION, self.config.paced_rps),
                "append_message.lua",
                lambda _t, _p: _const([append, pace]),
                sides=paced_sides,
            )
            await self.measure(
                paced_name(HOT_OPERATION, self.config.paced_rps),
                "read_messages.lua",
                lambda _t, _p: _const([hot, pace]),
                sides=paced_sides,
            )
        contention = lines("contention.txt", [self.seed.contention_session])
        await self.measure(
            "append message (1 session)",
            "append_message.lua",
            lambda _t, _p: _const([contention]),
        )

    def targets_for_list(self) -> list[Target]:
        assert self.service is not None
        sides = [Target("chat-store", self.service.server, ("X-API-Key", self.seed.list_api_key))]
        if self.baseline is not None:
            sides.append(
                Target("baseline", self.baseline.server, ("X-User-ID", self.seed.list_user_id))
            )
        if self.floor is not None:
            sides.append(
                Target("stack floor", self.floor.server, ("X-User-ID", self.seed.list_user_id))
            )
        return sides

    @contextlib.asynccontextmanager
    async def cache_flushed(self, target: Target) -> Any:
        """While the chat-store run lasts, its cached histories of the cold pool are deleted
        every 0.2 s; each session is read far less often than that, so every read misses.
        The misses counted in /metrics show it."""
        info: dict[str, Any] = {}
        if target is not self.service or self.redis is None:
            yield info
            return
        before = await self.cache_counters()
        stop = asyncio.Event()

        async def flush() -> None:
            assert self.redis is not None
            keys = self.seed.cold_keys
            while not stop.is_set():
                for start in range(0, len(keys), 1000):
                    await self.redis.unlink(*keys[start : start + 1000])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)

        task = asyncio.create_task(flush())
        try:
            yield info
        finally:
            stop.set()
            await task
        after = await self.cache_counters()
        info["cache_misses"] = after[1] - before[1]
        info["cache_hits"] = after[0] - before[0]

    async def cache_counters(self) -> tuple[float, float]:
        assert self.service is not None
        async with httpx.AsyncClient(base_url=self.service.server.url) as client:
            text = (await client.get("/metrics")).text
        values = {}
        for name in ("chat_store_cache_hits_total", "chat_store_cache_misses_total"):
            match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
            values[name] = float(match.group(1)) if match else float("nan")
        return values["chat_store_cache_hits_total"], values["chat_store_cache_misses_total"]

    async def pending_messages(self, count: int, label: str) -> list[tuple[str, str]]:
        """`count` pending assistant messages, each in a session of its own."""
        async with self.service_client() as client:
            sessions = await create_sessions(client, count, label)
            semaphore = asyncio.Semaphore(8)

            async def one(session: str) -> tuple[str, str]:
                async with semaphore:
                    response = await client.post(
                        f"/api/v1/sessions/{session}/messages",
                        json={"role": "assistant", "status": "pending", "model": "bench"},
                    )
                expect(response, 201)
                return session, str(response.json()["id"])

            return list(await asyncio.gather(*(one(session) for session in sessions)))

    async def run_last_page(self) -> None:
        requests = self.config.page_requests
        for size in SIZES:
            session = self.seed.size_sessions[size]
            entry: dict[str, Any] = {}
            path = f"/api/v1/sessions/{session}/messages?order=desc&limit=50"
            for target in self.targets:
                modes = ["cached", "uncached"] if target is self.service else ["sql"]
                if target is self.service and not self.seed.size_keys:
                    modes = ["cached"]
                for mode in modes:
                    key = self.seed.size_keys.get(size) if mode == "uncached" else None
                    timings = await self.sequential_reads(target, path, requests, key, size)
                    entry[f"{target.name} {mode}"] = summary_ms(timings)
            self.results["last_page"][str(size)] = entry
            log(
                f"last page of {size:>7,} messages: "
                + ", ".join(
                    f"{name} p50 {stats['p50']:.2f} ms p99 {stats['p99']:.2f} ms"
                    for name, stats in entry.items()
                )
            )

    async def sequential_reads(
        self, target: Target, path: str, count: int, evict_key: str | None, expected_seq: int
    ) -> list[float]:
        timings = []
        async with httpx.AsyncClient(
            base_url=target.server.url, headers=target.headers, timeout=60
        ) as client:
            for index in range(count + 10):
                if evict_key is not None:
                    assert self.redis is not None
                    await self.redis.unlink(evict_key)
                started = time.perf_counter()
                response = await client.get(path)
                elapsed = time.perf_counter() - started
                expect(response, 200)
                if index == 0:
                    check_last_page(response, expected_seq)
                if evict_key is not None and index == 0 and not await self.redis.exists(evict_key):
                    raise BenchError(f"chat-store cached no history under {evict_key}")
                if index >= 10:  # the first ten warm up the connection and the statements
                    timings.append(elapsed)
        return timings

    async def run_stream(self) -> None:
        config = self.config
        delta = ("0123456789" * (config.stream_delta_chars // 10 + 1))[: config.stream_delta_chars]
        for target in self.targets:
            pairs = await self.pending_messages(2, f"stream-{target.name}")
            (warm_session, warm_message), (session, message) = pairs
            headers = {**target.headers, "Prefer": "return=minimal"}
            async with httpx.AsyncClient(
                base_url=target.server.url, headers=headers, timeout=60
            ) as client:
                await stream_deltas(client, warm_session, warm_message, delta, 50)
                started = time.perf_counter()
                timings = await stream_deltas(client, session, message, delta, config.stream_deltas)
                total = time.perf_counter() - started
                entry: dict[str, Any] = {
                    "deltas": config.stream_deltas,
                    "delta_chars": config.stream_delta_chars,
                    "total_s": total,
                    "first": summary_ms(timings[: config.stream_window]),
                    "last": summary_ms(timings[-config.stream_window :]),
                }
                entry["ratio"] = entry["last"]["mean"] / entry["first"]["mean"]
                if target is self.service:
                    started = time.perf_counter()
                    response = await client.patch(
                        f"/api/v1/sessions/{session}/messages/{message}",
                        json={"status": "complete"},
                    )
                    expect(response, 200)
                    entry["complete_ms"] = (time.perf_counter() - started) * 1000
                    stored = len(response.json()["content"])
                    if stored != config.stream_deltas * config.stream_delta_chars:
                        raise BenchError(f"the streamed message holds {stored} characters")
            self.results["stream_1mb"][target.name] = entry
            log(
                f"stream {config.stream_deltas} deltas {target.name:<10} "
                f"first {entry['first']['mean']:.2f} ms  last {entry['last']['mean']:.2f} ms  "
                f"ratio {entry['ratio']:.2f}  total {total:.1f} s"
            )

    async def run_sse(self) -> None:
        config = self.config
        deltas = max(1, round(config.sse_seconds / config.sse_interval))
        delta = "0123456789" * 10
        final = deltas * len(delta)
        for target in self.targets:
            ((session, message),) = await self.pending_messages(1, f"sse-{target.name}")
            path = f"/api/v1/sessions/{session}/messages/{message}/stream"
            out = self.workdir / f"sse-{target.name}.json"
            pid = target.server.pid
            rss_idle = rss_mb(pid)
            samples: list[float] = []
            stop = asyncio.Event()

            async def sample(
                pid: int = pid, samples: list[float] = samples, stop: asyncio.Event = stop
            ) -> None:
                while not stop.is_set():
                    samples.append(rss_mb(pid))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.1)

            sampler = asyncio.create_task(sample())
            readers = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPT),
                "_sse-readers",
                "--port",
                str(target.server.port),
                "--path",
                path,
                "--header",
                f"{target.auth_header[0]}: {target.auth_header[1]}",
                "--count",
                str(config.sse_readers),
                "--final-offset",
                str(final),
                "--timeout",
                str(config.sse_seconds + 120),
                "--out",
                str(out),
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            try:
                assert readers.stdout is not None
                line = await asyncio.wait_for(readers.stdout.readline(), 180)
                if not line.startswith(b"CONNECTED"):
                    raise BenchError(f"SSE readers did not connect: {line!r}")
                connected = int(line.split()[1])
                rss_connected = rss_mb(pid)
                await asyncio.sleep(1.0)
                profile = self.start_profile(target, "sse readers")
                writes = await self.paced_writer(target, session, message, delta, deltas)
                await self.finish_profile(profile)
                await asyncio.wait_for(readers.wait(), config.sse_seconds + 150)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    readers.kill()
                await readers.wait()
                raise
            finally:
                stop.set()
                await sampler
            if target is self.service:
                async with self.service_client() as client:
                    response = await client.patch(
                        f"/api/v1/sessions/{session}/messages/{message}",
                        json={"status": "complete"},
                    )
                    expect(response, 200)
            seen = json.loads(out.read_text())
            entry = sse_lags(writes, seen["readers"], final)
            entry.update(
                readers=config.sse_readers,
                connected=connected,
                connect_failures=seen["failures"],
                deltas=deltas,
                writer_interval_ms=config.sse_interval * 1000,
                writer_seconds=writes[-1][2] - writes[0][1] if writes else 0.0,
                rss_idle_mb=rss_idle,
                rss_connected_mb=rss_connected,
                rss_peak_mb=max(samples) if samples else float("nan"),
            )
            self.results["sse"][target.name] = entry
            log(
                f"SSE {config.sse_readers} readers {target.name:<10} connected {connected}, "
                f"RSS idle {rss_idle:.0f} MB peak {entry['rss_peak_mb']:.0f} MB, "
                f"lag p50 {entry['lag_ms']['p50']:.1f} ms p99 {entry['lag_ms']['p99']:.1f} ms, "
                f"complete {entry['readers_complete']}"
            )

    async def paced_writer(
        self, target: Target, session: str, message: str, delta: str, count: int
    ) -> list[tuple[int, float, float]]:
        """One delta every sse_interval; returns (end offset, monotonic time the request was
        sent, monotonic time its answer returned) of each."""
        writes = []
        headers = {**target.headers, "Prefer": "return=minimal"}
        async with httpx.AsyncClient(
            base_url=target.server.url, headers=headers, timeout=60
        ) as client:
            path = f"/api/v1/sessions/{session}/messages/{message}/append"
            offset = 0
            next_at = time.monotonic()
            for _ in range(count):
                pause = next_at - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                next_at += self.config.sse_interval
                sent = time.monotonic()
                response = await client.post(path, json={"delta": delta, "offset": offset})
                returned = time.monotonic()
                expect(response, 200)
                offset += len(delta)
                writes.append((offset, sent, returned))
        return writes


def _const(value: list[str]) -> Awaitable[list[str]]:
    future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
