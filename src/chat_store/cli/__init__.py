"""`chat-store` command line: run the server, migrate, bootstrap users and API keys, archive,
import and seed, and the client side for people at a terminal.

One module per group of admin commands (`server`, `accounts`, `retention`, `loading`); the
client commands are `chat_store.terminal`'s. Every failure is one line on stderr and a non-zero
exit status (`failures`).
"""

from __future__ import annotations

import sys

from chat_store import terminal
from chat_store.cli import accounts, loading, retention, server
from chat_store.cli.failures import describe_error, fail
from chat_store.cli.running import command_group

app = command_group("chat-store: a store for LLM chat history.")
app.add_typer(accounts.users, name="users")
app.add_typer(accounts.api_keys, name="api-keys")
terminal.register(app)
app.command()(server.version)
app.command("migrate")(server.migrate_command)
app.command()(server.reindex)
app.command()(server.serve)
app.command()(retention.purge)
app.command()(retention.archive)
app.command()(retention.restore)
app.command("import")(loading.import_command)
app.command()(loading.seed)


def main() -> None:
    """The `chat-store` console script: the commands, with every failure reported as one line
    on stderr (exit status 1) rather than a traceback."""
    # Text a terminal's encoding cannot show (an emoji on a Latin-1 terminal) is replaced, not
    # an error halfway through an answer. A pipe or a file gets it exactly, or an error.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and stream.isatty():
            reconfigure(errors="replace")
    try:
        app()
    except KeyboardInterrupt:
        fail("interrupted", status=130)
    except Exception as exc:
        fail(describe_error(exc))
