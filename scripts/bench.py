"""Load benchmark: chat-store against a bare asyncpg baseline that issues the same SQL.

The benchmark is the package scripts/bench/ (its docstring says what a run does); this file is
its command:

    make bench                                   # the full run
    .venv/bin/python scripts/bench.py --help
"""

from __future__ import annotations

import sys

from bench.cli import main  # scripts/bench/, next to this file

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
