"""Load benchmark: chat-store against a bare asyncpg baseline that issues the same SQL.

    make bench                                   # the full run, about 6 minutes on 2 cores
    .venv/bin/python scripts/bench.py --quick    # a smoke run, about 2 minutes
    .venv/bin/python scripts/bench.py --embedded # SQLite + in-process cache, no baseline
    .venv/bin/python scripts/bench.py --connections 64 --duration 20

The run makes everything it measures and removes it again, also on Ctrl-C or failure:
a Postgres database `chat_store_bench_<random>` (migrated with `chat-store migrate`), a Redis
key prefix, `chat-store serve --workers 1` (APP_ENV=production, rate limits off) and
scripts/bench_baseline.py on their own ports. Data is seeded through the HTTP API (the batch
endpoint for bulk); the 100,000-message session and the pool of cold-read sessions are
written with direct SQL into the same tables, counters included.

Load comes from wrk (scripts/bench/*.lua) in a separate process over loopback; the 1 MB
stream and the 500 SSE readers are driven from Python (the readers in a child process).
Results go to bench-results/<timestamp>.json and, for full runs, into docs/benchmarks.md
between the generated-section markers.
"""
