"""python scripts/bench.py [options]: the command line."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import Sequence

from .config import ROOT, BenchError, log, parse_args
from .processes import Cleanup, _raise_interrupt
from .report import print_targets, render_markdown, save_results, write_doc
from .runner import Bench
from .sse import sse_readers_main


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "_sse-readers":
        sse_readers_main(argv[1:])
        return 0
    config = parse_args(argv)
    if shutil.which("wrk") is None:
        log("wrk is not installed: apt-get install -y wrk (make bench does it)")
        return 2
    cleanup = Cleanup()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    bench = Bench(config, cleanup)
    started = time.monotonic()
    try:
        results = asyncio.run(bench.run())
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        cleanup.run()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    path = save_results(results)
    log(f"results in {path.relative_to(ROOT)} ({results['elapsed_s']:.0f} s in all)")
    if config.write_doc:
        write_doc(config.doc, render_markdown(results), config.embedded)
        log(f"tables written into {config.doc}")
    for line in print_targets(results):
        print(line)
    return 0
