"""The client side of `chat-store`: a person at a terminal logs in, picks a session and chats.

Every command talks to the service over HTTP through `chat_store.client`, so it works the same
against a server on this machine or another one (only the URL differs).
"""

from __future__ import annotations

import typer

from chat_store.terminal import conversation, search, sessions


def register(app: typer.Typer) -> None:
    """Add the client commands to the `chat-store` command."""
    for command in (
        sessions.login,
        sessions.logout,
        sessions.whoami,
        sessions.sessions,
        sessions.new,
        sessions.show,
        sessions.rename,
        sessions.favorite,
        sessions.delete,
        sessions.export,
        conversation.chat,
        conversation.ask,
        conversation.resume,
        conversation.follow,
        search.search,
    ):
        app.command(rich_help_panel="Client (talks to a server over HTTP)")(command)
