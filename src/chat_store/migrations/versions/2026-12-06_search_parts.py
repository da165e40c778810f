"""search parts: SQLite's index of message texts split in 16 FTS5 tables by owner

SQLite only (Postgres is untouched). To weigh a search's words, bm25 counts the rows that hold
each of them in the whole FTS5 table, every user's, by reading each word's whole list once per
search: 3 to 5 ms for a common word and 12 ms for a common phrase in 100,000 messages, whatever
the caller's own matches. Each owner's messages now go to one of 16 tables, `message_fts_0` to
`message_fts_f`, by the last hex digit of the owner's id (random in a UUIDv7), each over a view
of its own rows and kept by its own triggers; a search reads its caller's table only, so the
count covers about a sixteenth of the index. The session titles' table is unchanged.

The SQL of the views and triggers repeats that of 0003_search rather than share it: each
migration keeps the SQL it ran.

Revision ID: 0008_search_parts
Revises: 0007_search_owned
"""

# ruff: noqa: S608  (the SQL is put together from this file's constants only)

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from chat_store.migrate import fill_fts5_in_batches

revision: str = "0008_search_parts"
down_revision: str | None = "0007_search_owned"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000
PARTS = "0123456789abcdef"
_INDEXED_CHARS = 100_000
_OPEN = "('pending', 'in_progress')"
_WATCHED = ("content", "partial_content", "status", "user_id")


def _body(row: str) -> str:
    # The first 100,000 characters, the two excerpt marks (U+E000, U+E001) made spaces.
    text = f"substr(coalesce({row}.content, {row}.partial_content), 1, {_INDEXED_CHARS})"
    return f"replace(replace({text}, char(57344), ' '), char(57345), ' ')"


def _indexed(row: str, part: str | None) -> str:
    final = f"{row}.status NOT IN {_OPEN}"
    if part is None:
        return final
    # SQLite stores a UUID as 32 hex digits: the last one picks the table.
    return f"{final} AND substr({row}.user_id, 32, 1) = '{part}'"


def names(part: str | None) -> tuple[str, str]:
    """The FTS5 table and the view of the rows it indexes: one pair per part, or (part None)
    the single pair of 0003_search."""
    if part is None:
        return "message_fts", "message_search_source"
    return f"message_fts_{part}", f"message_search_source_{part}"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    tokenize = _tokenize()
    _drop(None)
    for part in PARTS:
        _create(part, tokenize)
    backfill_parts(op.get_bind(), BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    tokenize = _tokenize(names(PARTS[0])[0])
    for part in PARTS:
        _drop(part)
    _create(None, tokenize)
    _backfill(op.get_bind(), None, BATCH)


def _tokenize(fts: str = "message_fts") -> str:
    """The tokenizer the index was built with (SEARCH_LANGUAGE then), kept as it is."""
    sql = op.get_bind().execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": fts},
    )
    definition = str(sql.scalar_one())
    return definition.split("tokenize=", 1)[1].rsplit(")", 1)[0].strip()


def _drop(part: str | None) -> None:
    fts, source = names(part)
    for trigger in ("update", "delete", "insert"):
        op.execute(f"DROP TRIGGER IF EXISTS {fts}_{trigger}")
    op.execute(f"DROP TABLE IF EXISTS {fts}")
    op.execute(f"DROP VIEW IF EXISTS {source}")


def _create(part: str | None, tokenize: str) -> None:
    """The view, the FTS5 table (external content: the text is not stored twice) and the
    triggers that hand it exactly what the view shows, as an external-content table requires."""
    fts, source = names(part)
    op.execute(
        f"""
        CREATE VIEW {source} AS
        SELECT rowid AS rid, {_body("message")} AS body, user_id AS owner
        FROM message WHERE {_indexed("message", part)}
        """
    )
    op.execute(
        f"""
        CREATE VIRTUAL TABLE {fts} USING fts5(
            body, owner, content='{source}', content_rowid='rid', tokenize={tokenize})
        """
    )
    add = f"INSERT INTO {fts}(rowid, body, owner)"
    remove = f"INSERT INTO {fts}({fts}, rowid, body, owner)"
    op.execute(
        f"""
        CREATE TRIGGER {fts}_insert AFTER INSERT ON message WHEN {_indexed("new", part)} BEGIN
            {add} VALUES (new.rowid, {_body("new")}, new.user_id);
        END
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER {fts}_delete AFTER DELETE ON message WHEN {_indexed("old", part)} BEGIN
            {remove} VALUES ('delete', old.rowid, {_body("old")}, old.user_id);
        END
        """
    )
    changed = " OR ".join(f"old.{name} IS NOT new.{name}" for name in _WATCHED)
    if part is not None:  # the other tables' triggers end at their WHEN
        changed = (
            f"({changed}) AND (substr(old.user_id, 32, 1) = '{part}' "
            f"OR substr(new.user_id, 32, 1) = '{part}')"
        )
    # A message whose owner changes moves from one table to another: each table's trigger
    # takes out what it held and puts in what it now holds.
    op.execute(
        f"""
        CREATE TRIGGER {fts}_update AFTER UPDATE OF {", ".join(_WATCHED)} ON message
        WHEN {changed} BEGIN
            {remove} SELECT 'delete', old.rowid, {_body("old")}, old.user_id
            WHERE {_indexed("old", part)};
            {add} SELECT new.rowid, {_body("new")}, new.user_id WHERE {_indexed("new", part)};
        END
        """
    )


def backfill_parts(connection: sa.Connection, batch: int) -> int:
    """Index every part's rows, `batch` rows per statement; returns how many batches ran."""
    return sum(_backfill(connection, part, batch) for part in PARTS)


def _backfill(connection: sa.Connection, part: str | None, batch: int) -> int:
    fts, source = names(part)
    return fill_fts5_in_batches(connection, source, fts, ("body", "owner"), batch)
