"""Naming a session on the command line: its id, a unique prefix of it (as git names commits),
or `last` for the session with the most recent activity."""

from __future__ import annotations

import uuid

from chat_store.client import ChatSession
from chat_store.terminal.connect import TerminalClient
from chat_store.terminal.output import ExitCode, fail

LAST = "last"
# Prefix lookup pages through the caller's sessions; past this many it asks for more characters.
_PREFIX_SCAN_LIMIT = 5000


def resolve_session(client: TerminalClient, ref: str) -> ChatSession:
    ref = ref.strip().lower()
    if ref == LAST:
        page = client.list_sessions(limit=1)
        if not page.data:
            fail(
                "no sessions yet: start one with `chat-store new` or `chat-store chat`",
                ExitCode.NOT_FOUND,
            )
        return page.data[0]
    try:
        return client.get_session(uuid.UUID(ref))
    except ValueError:
        pass
    hex_ref = ref.replace("-", "")
    if len(hex_ref) < 4 or any(c not in "0123456789abcdef" for c in hex_ref):
        fail(f"not a session id, id prefix (4+ hex digits) or `last`: {ref!r}", ExitCode.USAGE)
    matches: list[ChatSession] = []
    for seen, chat_session in enumerate(client.iter_sessions(page_size=100)):
        if chat_session.id.hex.startswith(hex_ref):
            matches.append(chat_session)
            if len(matches) > 1:
                break
        if seen >= _PREFIX_SCAN_LIMIT:
            break
    if not matches:
        fail(f"no session starts with {ref!r}", ExitCode.NOT_FOUND)
    if len(matches) > 1:
        fail(f"{ref!r} names more than one session: give more characters", ExitCode.USAGE)
    return matches[0]


def short_ids(ids: list[uuid.UUID], minimum: int = 8) -> dict[uuid.UUID, str]:
    """The shortest prefix (at least `minimum` hex digits) that tells each id from the others
    listed. Ids are UUIDv7, whose first digits are a timestamp: sessions started in the same
    minute share eight of them, so a fixed-width prefix would not name one."""
    hexes = [value.hex for value in ids]
    short: dict[uuid.UUID, str] = {}
    for value, mine in zip(ids, hexes, strict=True):
        length = minimum
        for other in hexes:
            if other == mine:
                continue
            common = next(
                (i for i, (a, b) in enumerate(zip(mine, other, strict=True)) if a != b), 32
            )
            length = max(length, common + 1)
        short[value] = mine[:length]
    return short
