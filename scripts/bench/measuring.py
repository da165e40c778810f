"""Load from wrk: one operation measured on each side in slices, profiles on request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .config import LUA_DIR, BenchError, log
from .processes import cpu_seconds, run_command
from .systems import Target


class Measuring:
    """Measuring steps of a Bench (see runner.py)."""

    async def wrk(
        self, target: Target, script: str, extra: list[str], seconds: int
    ) -> dict[str, Any]:
        command = [
            "wrk",
            f"-t{self.config.threads}",
            f"-c{self.config.connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA_DIR / script),
            target.server.url,
            "--",
            target.wrk_auth,
            f"threads={self.config.threads}",
            *extra,
        ]
        output = await run_command(command, within=seconds + 60, label="wrk")
        for line in output.splitlines():
            if line.startswith("BENCH_JSON "):
                result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
                return result
        raise BenchError(f"wrk printed no result:\n{output}")

    async def measure(
        self,
        name: str,
        script: str,
        extra: Callable[[Target, str], Awaitable[list[str]]] | None = None,
        *,
        around: Callable[[Target], contextlib.AbstractAsyncContextManager[dict[str, Any]]]
        | None = None,
        sides: Sequence[Target] | None = None,
    ) -> None:
        """Warm up, then measure one operation with wrk on each side in turn.

        The measured time is cut into `rounds` slices taken round-robin (chat-store, baseline,
        stack floor, chat-store, ...), so a burst of load from elsewhere on the machine hits all
        sides alike; each side's figures are those of its median slice by rps, and its CPU per
        request is over all of its slices."""
        targets = list(sides) if sides is not None else self.throughput_targets
        rounds = max(1, self.config.rounds)
        seconds = max(1, round(self.config.duration / rounds))
        slices: dict[str, list[dict[str, Any]]] = {target.name: [] for target in targets}
        cpu: dict[str, float] = dict.fromkeys(slices, 0.0)
        for index in range(rounds):
            for target in targets:
                if index == 0:
                    warm_args = await extra(target, "warmup") if extra else []
                    await self.wrk(target, script, warm_args, self.config.warmup)
                args = await extra(target, f"measure{index}") if extra else []
                load = os.getloadavg()[0]
                profile = self.start_profile(target, name) if index == 0 else None
                cpu_before = cpu_seconds(target.server.pid)
                if around is not None:
                    async with around(target) as info:
                        result = await self.wrk(target, script, args, seconds)
                    result.update(info)
                else:
                    result = await self.wrk(target, script, args, seconds)
                cpu[target.name] += cpu_seconds(target.server.pid) - cpu_before
                await self.finish_profile(profile)
                result["load_before"] = round(load, 2)
                slices[target.name].append(result)
        entry: dict[str, Any] = {}
        for target in targets:
            taken = slices[target.name]
            result = dict(sorted(taken, key=lambda item: item["rps"])[len(taken) // 2])
            requests = sum(item["requests"] for item in taken)
            duration = sum(item["duration_s"] for item in taken)
            result["rounds_rps"] = [round(item["rps"], 1) for item in taken]
            result["server_cores"] = round(cpu[target.name] / duration, 2)
            result["server_cpu_ms_per_request"] = round(1000 * cpu[target.name] / requests, 3)
            result["errors"] = {
                key: sum(item["errors"].get(key, 0) for item in taken) for key in result["errors"]
            }
            entry[target.name] = result
            lat = result["latency_us"]
            log(
                f"{name:<28} {target.name:<11} {result['rps']:8.1f} rps  "
                f"p50 {lat['p50'] / 1000:7.1f} ms  p99 {lat['p99'] / 1000:7.1f} ms  "
                f"server {result['server_cores']:.2f} cores  "
                f"errors {sum(result['errors'].values())}  "
                f"slices {'/'.join(f'{rps:.0f}' for rps in result['rounds_rps'])}"
            )
        self.results["throughput"][name] = entry

    @property
    def throughput_targets(self) -> list[Target]:
        return self.targets + ([self.floor] if self.floor is not None else [])

    @property
    def targets(self) -> list[Target]:
        assert self.service is not None
        return [self.service] + ([self.baseline] if self.baseline is not None else [])

    def start_profile(self, target: Target, name: str) -> asyncio.Future[str] | None:
        """With --profile: py-spy samples the chat-store process while it is measured."""
        if self.config.profile_dir is None or self.service is None or target is not self.service:
            return None
        self.config.profile_dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        command = [
            str(self.config.py_spy),
            "record",
            "--pid",
            str(self.service.server.pid),
            "--duration",
            str(max(1, self.config.duration - 1)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--threads",
            "--output",
            str(self.config.profile_dir / f"{slug}.txt"),
        ]
        return asyncio.ensure_future(
            run_command(command, within=self.config.duration + 60, label="py-spy")
        )

    async def finish_profile(self, profile: asyncio.Future[str] | None) -> None:
        if profile is not None:
            try:
                await profile
            except BenchError as exc:
                log(f"profile failed: {exc}")
