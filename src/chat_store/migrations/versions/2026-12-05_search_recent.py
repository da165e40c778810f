"""search recent: an index of each owner's messages by time, replacing the one on the owner alone

A search that matches more of a user's messages than SEARCH_RANKED_MATCHES ranks the newest of
them only (docs/api.md, "Search"). On Postgres those are read from this index newest first,
stopping once enough match, rather than ranking every match (each one a page of the table). It
serves every lookup by owner that `ix_message_user_id` served (the owner leads it), so that
index goes: each message write keeps one index by owner, as before.

Postgres builds and drops CONCURRENTLY: the table stays readable and writable meanwhile.

Revision ID: 0006_search_recent
Revises: 0005_tool_calls
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from chat_store.migrate import drop_if_invalid

revision: str = "0006_search_recent"
down_revision: str | None = "0005_tool_calls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW = "ix_message_user_id_created_at"
_OLD = "ix_message_user_id"


def upgrade() -> None:
    _swap(create=f"{_NEW} ON message (user_id, created_at, id)", drop=_OLD)


def downgrade() -> None:
    _swap(create=f"{_OLD} ON message (user_id)", drop=_NEW)


def _swap(*, create: str, drop: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute(f"CREATE INDEX IF NOT EXISTS {create}")
        op.execute(f"DROP INDEX IF EXISTS {drop}")
        return
    with op.get_context().autocommit_block():
        # The new one first: lookups by owner always have an index. One that a failed build
        # left INVALID is made again (IF NOT EXISTS would keep it, and the old one would go).
        drop_if_invalid(op.get_bind(), create.split()[0])
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {create}")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {drop}")
