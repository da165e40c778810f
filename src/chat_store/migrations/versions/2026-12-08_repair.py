"""repair: what two revisions gained after some databases had run them, and an index that a
stopped build left invalid

- `0012_archive_deletion` gained `archive_deletion.refused_at` after it was first written: a
  database migrated with its first form has no such column, and `chat-store purge` and the
  housekeeping's deletion of archive objects fail on it.
- `0007_search_owned` gained `chat_session.search_vector` (and the title index on it) after it
  was first written: on a Postgres database migrated with its first form every search is a 500.
- `0006_search_recent` builds `ix_message_user_id_created_at` CONCURRENTLY, then drops the
  index it replaces. A build that failed (a lock or statement timeout, a cancel) leaves an
  INVALID index behind, which a second run took for built: it dropped the old index, and
  lookups of messages by owner had no usable index. The indexes the migrations build
  CONCURRENTLY are built again where they are INVALID (an index of anyone else is left alone),
  after the leftovers of an earlier failed rebuild (`..._ccnew`) are dropped.

Each step looks first and does nothing on a database that is as the current revisions make it
(every new one). The indexes are built CONCURRENTLY (their tables stay readable and writable);
adding `chat_session.search_vector`, where it lacks, rewrites `chat_session` under its lock (a
second for 100,000 sessions), as `0007_search_owned` does.

Revision ID: 0013_repair
Revises: 0012_archive_deletion
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chat_store.migrate import CONCURRENT_INDEXES, invalid_indexes, reindex_leftovers

revision: str = "0013_repair"
down_revision: str | None = "0012_archive_deletion"


def _columns(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    if "refused_at" not in _columns("archive_deletion"):
        op.add_column(
            "archive_deletion", sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True)
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    rebuild_titles = "search_vector" not in _columns("chat_session")
    if rebuild_titles:
        op.execute(
            "ALTER TABLE chat_session ADD COLUMN IF NOT EXISTS search_vector tsvector "
            "GENERATED ALWAYS AS (chat_store_search_vector(title)) STORED"
        )
    invalid = invalid_indexes(op.get_bind(), CONCURRENT_INDEXES)
    leftovers = reindex_leftovers(op.get_bind(), CONCURRENT_INDEXES)
    if not (rebuild_titles or invalid or leftovers):
        return
    with op.get_context().autocommit_block():
        for name in leftovers:
            op.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
        if rebuild_titles:
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_chat_session_search")
            op.execute(
                "CREATE INDEX CONCURRENTLY ix_chat_session_search "
                "ON chat_session USING gin (user_id, search_vector)"
            )
        for name in invalid:
            if not (rebuild_titles and name == "ix_chat_session_search"):  # just built
                op.execute(f'REINDEX INDEX CONCURRENTLY "{name}"')


def downgrade() -> None:
    pass  # a repair: the schema it leaves is the one the revisions before it make now
