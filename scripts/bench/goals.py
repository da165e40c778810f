"""The targets a run is held against, met or not."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .config import APPEND_OPERATION, HOT_OPERATION, SIZES, paced_name


@dataclass
class TargetResult:
    name: str
    goal: str
    measured: str
    met: bool | None


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[TargetResult] = []
    throughput = results["throughput"]

    def ratio_check(label: str, operation: str, floor: float) -> None:
        entry = throughput.get(operation, {})
        if "baseline" not in entry:
            return  # the embedded run has no baseline
        ratio = entry["chat-store"]["rps"] / entry["baseline"]["rps"]
        checks.append(
            TargetResult(
                label,
                f">= {floor:.1f}x baseline rps",
                f"{ratio:.2f}x ({entry['chat-store']['rps']:.0f} / {entry['baseline']['rps']:.0f})",
                ratio >= floor,
            )
        )
        stack = entry.get("stack floor")
        if stack is not None:
            # The same goal for the bare stack: whether it is reachable on FastAPI + SQLAlchemy
            # at all, and how close chat-store comes to what the stack allows.
            checks.append(
                TargetResult(
                    f"{label}: stack floor itself",
                    f"reference for >= {floor:.1f}x",
                    f"{stack['rps'] / entry['baseline']['rps']:.2f}x "
                    f"({stack['rps']:.0f} / {entry['baseline']['rps']:.0f}); chat-store is "
                    f"{entry['chat-store']['rps'] / stack['rps']:.2f}x the floor",
                    None,
                )
            )

    append_op, hot_op = APPEND_OPERATION, HOT_OPERATION
    ratio_check("append message", append_op, 0.6)
    ratio_check("create session", "create session", 0.6)
    ratio_check("append delta", "append delta", 0.6)
    ratio_check("hot last-50 read", hot_op, 1.0)
    for label, operation in (("append message p99", append_op), ("hot read p99", hot_op)):
        entry = throughput.get(operation, {}).get("chat-store")
        if entry is None:
            continue
        p99 = entry["latency_us"]["p99"] / 1000
        checks.append(TargetResult(label, "<= 50 ms", f"{p99:.1f} ms", p99 <= 50))
        stack = throughput.get(operation, {}).get("stack floor")
        if stack is not None:
            stack_p99 = stack["latency_us"]["p99"] / 1000
            checks.append(
                TargetResult(
                    f"{label}: stack floor itself",
                    "reference for <= 50 ms",
                    f"{stack_p99:.1f} ms",
                    None,
                )
            )

    # The proposed restatement of the p99 target (docs/benchmarks.md): at a load that does not
    # saturate the worker. Reported beside the official figure, which stays as it is.
    paced_rps = results["config"].get("paced_rps", 0)
    for label, operation in (("append message p99", append_op), ("hot read p99", hot_op)):
        entry = throughput.get(paced_name(operation, paced_rps), {})
        if "chat-store" not in entry:
            continue
        service = entry["chat-store"]
        p99 = service["latency_us"]["p99"] / 1000
        shown = f"{p99:.1f} ms at {service['rps']:.0f} rps"
        if "stack floor" in entry:
            shown += f" (stack floor {entry['stack floor']['latency_us']['p99'] / 1000:.1f} ms)"
        checks.append(
            TargetResult(
                f"{label}, not saturated (~{paced_rps} rps offered)",
                "<= 50 ms (proposed restatement)",
                shown,
                p99 <= 50,
            )
        )

    pages = results["last_page"]
    small, large = pages.get(str(SIZES[0]), {}), pages.get(str(SIZES[-1]), {})
    for mode in ("uncached", "cached"):
        key = f"chat-store {mode}"
        if key in small and key in large:
            ratio = large[key]["p50"] / small[key]["p50"]
            checks.append(
                TargetResult(
                    f"last page at {SIZES[-1]:,} vs {SIZES[0]} ({mode}, p50)",
                    "<= 1.2x",
                    f"{ratio:.2f}x ({large[key]['p50']:.2f} / {small[key]['p50']:.2f} ms)",
                    ratio <= 1.2,
                )
            )
            break

    stream = results["stream_1mb"].get("chat-store")
    if stream:
        window = results["config"]["stream_window"]
        checks.append(
            TargetResult(
                f"1 MB stream: last {window:,} vs first {window:,} deltas",
                "<= 1.5x",
                f"{stream['ratio']:.2f}x ({stream['last']['mean']:.2f} / "
                f"{stream['first']['mean']:.2f} ms)",
                stream["ratio"] <= 1.5,
            )
        )
    sse = results["sse"].get("chat-store")
    if sse:
        readers = sse["readers"]
        checks.append(
            TargetResult(
                f"{readers} SSE readers: server RSS",
                "< 400 MB",
                f"{sse['rss_peak_mb']:.0f} MB peak",
                sse["rss_peak_mb"] < 400,
            )
        )
        delivered = sse["connected"] == readers and sse["missing"] == 0
        p99 = sse["lag_ms"]["p99"]
        checks.append(
            TargetResult(
                f"{readers} SSE readers: delivery lag p99",
                "< 250 ms",
                f"{p99:.0f} ms" + ("" if delivered else " (not every delta delivered)"),
                p99 < 250 and delivered,
            )
        )
    return [asdict(check) for check in checks]
