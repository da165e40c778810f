"""The report: docs/benchmarks.md's generated sections, and bench-results/*.json."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import (
    EMBEDDED_BEGIN,
    EMBEDDED_END,
    GENERATED_BEGIN,
    GENERATED_END,
    PACED_MARK,
    RESULTS_DIR,
    pace_ms,
)


def _ms(value_us: float) -> str:
    return f"{value_us / 1000:.1f}"


def _cpu(result: dict[str, Any]) -> str:
    return f"{result['server_cpu_ms_per_request']:.2f} ({result['server_cores']:.2f})"


def _met(value: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[value]


def render_markdown(results: dict[str, Any]) -> str:
    config = results["config"]
    machine = results["machine"]
    versions = results["versions"]
    embedded = results["mode"] == "embedded"
    out: list[str] = []
    add = out.append
    title = "Embedded default (SQLite + in-process cache)" if embedded else "Results"
    add(f"## {title}\n")
    add(
        f"Measured {results['started_at']} to {results['finished_at']} (UTC) with "
        f"`{results['command']}`" + (" (that is, `make bench`)." if _is_default(results) else ".")
    )
    add("")
    add(
        f"- Machine: {machine['nproc']} cores ({machine['cpu']}), Linux {machine['kernel']}; "
        f"load average at start {', '.join(str(v) for v in machine['loadavg_at_start'])}."
    )
    memory = machine["free_h"].splitlines()
    if len(memory) >= 2:
        add("- Memory (`free -h`): " + " ".join(memory[1].split()[1:4]) + " (total, used, free).")
    add(
        "- Versions: "
        + ", ".join(f"{name} {version}" for name, version in versions.items() if version)
        + "."
    )
    if embedded:
        add(
            f"- Load: wrk, {config['connections']} connections, {config['threads']} thread, "
            f"{config['warmup']} s warm-up then {config['duration']} s measured per operation; "
            "`chat-store serve --workers 1` on SQLite with the in-process cache (no "
            "`DATABASE_URL`, no `REDIS_URL`); no baseline."
        )
    else:
        add(
            f"- Load: wrk, {config['connections']} connections, {config['threads']} thread, "
            f"{config['warmup']} s warm-up then {config['duration']} s measured per operation "
            f"and side, in {config.get('rounds', 1)} slices; chat-store "
            "(`chat-store serve --workers 1`), the baseline and the stack floor "
            "(`scripts/bench_baseline.py`, uvicorn 1 worker each) take the slices in turn, never "
            "two at once, and each side's row is its median slice by rps."
        )
    if config["service_env"]:
        add(
            "- Extra server settings: "
            + ", ".join(f"`{k}={v}`" for k, v in config["service_env"].items())
        )
    add("")

    add("### Throughput and latency under load\n")
    add(
        "Server CPU is the CPU time the server process used during the measured run, per "
        "request (in brackets: cores busy on average; 1.00 is one core, all a worker can use)."
    )
    if config.get("paced_rps"):
        wait_ms = pace_ms(config["connections"], config["paced_rps"])
        add("")
        add(
            f"*Paced* rows offer a load the worker is not saturated by: each connection waits "
            f"a random time after an answer before its next request ({wait_ms} ms on average, "
            "exponentially distributed, so that the connections do not fall into step), about "
            f"{config['paced_rps']} rps from all {config['connections']} together (a little "
            "less, as each answer's latency adds to the wait). Their rps is the offered load, "
            "not a capacity, and their ratios mean nothing; their latency is the figure."
        )
    add("")
    if embedded:
        add("| operation | chat-store rps | p50 ms | p99 ms | CPU ms/req |")
        add("|---|--:|--:|--:|--:|")
    else:
        add(
            "| operation | chat-store rps | p50 ms | p99 ms | CPU ms/req | baseline rps | "
            "p50 ms | p99 ms | CPU ms/req | chat-store / baseline | stack floor rps | "
            "CPU ms/req | floor / baseline | chat-store / floor |"
        )
        add("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    paced = {op: entry for op, entry in results["throughput"].items() if PACED_MARK in op}
    for operation, entry in results["throughput"].items():
        if operation in paced:
            continue
        service = entry["chat-store"]
        base = entry.get("baseline")
        cells = [
            operation,
            f"{service['rps']:.0f}",
            _ms(service["latency_us"]["p50"]),
            _ms(service["latency_us"]["p99"]),
            _cpu(service),
        ]
        if base:
            cells += [
                f"{base['rps']:.0f}",
                _ms(base["latency_us"]["p50"]),
                _ms(base["latency_us"]["p99"]),
                _cpu(base),
                f"{service['rps'] / base['rps']:.2f}x",
            ]
            floor = entry.get("stack floor")
            cells += (
                [
                    f"{floor['rps']:.0f}",
                    _cpu(floor),
                    f"{floor['rps'] / base['rps']:.2f}x",
                    f"{service['rps'] / floor['rps']:.2f}x",
                ]
                if floor
                else ["", "", "", ""]
            )
        elif not embedded:
            cells += [""] * 9
        add("| " + " | ".join(cells) + " |")
    if paced:
        add("")
        add("| paced operation | side | rps | p50 ms | p99 ms | CPU ms/req |")
        add("|---|---|--:|--:|--:|--:|")
        for operation, entry in paced.items():
            for side, result in entry.items():
                add(
                    f"| {operation} | {side} | {result['rps']:.0f} | "
                    f"{_ms(result['latency_us']['p50'])} | {_ms(result['latency_us']['p99'])} | "
                    f"{_cpu(result)} |"
                )
    errors = {
        f"{operation} ({side})": sum(result["errors"].values())
        for operation, entry in results["throughput"].items()
        for side, result in entry.items()
        if sum(result["errors"].values())
    }
    add("")
    if errors:
        add(
            "Errors (non-2xx answers or socket errors) seen: "
            + ", ".join(f"{name}: {count}" for name, count in errors.items())
            + "."
        )
    else:
        add("No request failed (no non-2xx answer, no socket error).")
    cold = next(
        (
            entry
            for name, entry in results["throughput"].items()
            if name.startswith("read last 50, cold")
        ),
        None,
    )
    if cold and "cache_misses" in cold["chat-store"]:
        service = cold["chat-store"]
        add(
            f"During the cold run chat-store counted {service['cache_misses']:.0f} cache misses "
            f"for {service['requests']} reads (its cached histories were deleted every 0.2 s)."
        )
    add("")

    add("### Last page by session size\n")
    if embedded:
        add(
            "`GET /api/v1/sessions/{id}/messages?order=desc&limit=50`, one request at a time "
            f"({config['page_requests']} after 10 warm-up requests), answered from the "
            "in-process history cache (which cannot be flushed from outside)."
        )
    else:
        add(
            "`GET /api/v1/sessions/{id}/messages?order=desc&limit=50`, one request at a time "
            f"({config['page_requests']} after 10 warm-up requests). *Cached*: chat-store "
            "answers from its history cache; *uncached*: the cached copy is deleted before "
            "every request, so the read goes to Postgres."
        )
    add("")
    names = sorted({name for entry in results["last_page"].values() for name in entry})
    add("| messages | " + " | ".join(f"{name} p50 / p99 ms" for name in names) + " |")
    add("|--:|" + "--:|" * len(names))
    for size, entry in results["last_page"].items():
        cells = [f"{int(size):,}"]
        for name in names:
            stats = entry.get(name)
            cells.append(f"{stats['p50']:.2f} / {stats['p99']:.2f}" if stats else "")
        add("| " + " | ".join(cells) + " |")
    add("")

    add("### Streaming 1 MB into one message\n")
    first = results["stream_1mb"].get("chat-store")
    if first:
        add(
            f"One writer appends {first['deltas']:,} deltas of {first['delta_chars']} characters, "
            "one after another, with `Prefer: return=minimal`; time per delta as the writer "
            "sees it."
        )
        add("")
        window = config["stream_window"]
        add(
            f"| side | first {window:,}: mean / p99 ms | last {window:,}: mean / p99 ms | "
            "last / first | whole stream s |"
        )
        add("|---|--:|--:|--:|--:|")
        for side, entry in results["stream_1mb"].items():
            add(
                f"| {side} | {entry['first']['mean']:.2f} / {entry['first']['p99']:.2f} | "
                f"{entry['last']['mean']:.2f} / {entry['last']['p99']:.2f} | "
                f"{entry['ratio']:.2f}x | {entry['total_s']:.1f} |"
            )
        if "complete_ms" in first:
            add("")
            add(
                f"Marking the 1 MB message complete afterwards (which folds its "
                f"{first['deltas']:,} chunks into the text) took {first['complete_ms']:.0f} ms."
            )
    add("")

    add("### Live SSE readers on one worker\n")
    sse = results["sse"].get("chat-store")
    if sse:
        add(
            f"{sse['readers']} readers (`GET .../messages/{{mid}}/stream`, one asyncio process, "
            f"raw sockets) follow one message while one writer appends a 100-character delta "
            f"every {sse['writer_interval_ms']:.0f} ms ({sse['deltas']} deltas). Lag: from the "
            "writer's append returning to each reader receiving that delta (zero when the "
            "reader had it first); *from send*: from the moment the writer sent the append, "
            "so the append itself is included. RSS: VmRSS of the server process."
        )
        add("")
        add(
            "| side | connected | RSS idle / with readers / peak MB | lag p50 / p99 / max ms | "
            "from send p50 / p99 ms | readers with every delta |"
        )
        add("|---|--:|--:|--:|--:|--:|")
        for side, entry in results["sse"].items():
            lag = entry["lag_ms"]
            sent = entry["lag_from_send_ms"]
            add(
                f"| {side} | {entry['connected']} | {entry['rss_idle_mb']:.0f} / "
                f"{entry['rss_connected_mb']:.0f} / {entry['rss_peak_mb']:.0f} | "
                f"{lag['p50']:.1f} / {lag['p99']:.1f} / {lag['max']:.1f} | "
                f"{sent['p50']:.1f} / {sent['p99']:.1f} | "
                f"{entry['readers_complete']} |"
            )
    add("")

    add("### Targets\n")
    add("| target | goal | measured | |")
    add("|---|---|---|---|")
    for check in results["targets"]:
        add(f"| {check['name']} | {check['goal']} | {check['measured']} | {_met(check['met'])} |")
    for note in results["notes"]:
        add("")
        add(f"Note: {note}.")
    add("")
    return "\n".join(out)


def _is_default(results: dict[str, Any]) -> bool:
    return results["command"].strip() == "scripts/bench.py"


def write_doc(path: Path, section: str, embedded: bool) -> None:
    begin, end = (EMBEDDED_BEGIN, EMBEDDED_END) if embedded else (GENERATED_BEGIN, GENERATED_END)
    block = f"{begin}\n{section}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def save_results(results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "-embedded" if results["mode"] == "embedded" else ""
    path = RESULTS_DIR / f"{stamp}{suffix}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def print_targets(results: dict[str, Any]) -> Iterator[str]:
    for check in results["targets"]:
        state = _met(check["met"]).strip("*")
        yield f"  {state:7} {check['name']}: {check['measured']} ({check['goal']})"
