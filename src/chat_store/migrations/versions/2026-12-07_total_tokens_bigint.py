"""total tokens: a session's `total_tokens` as a 64-bit integer on Postgres

The sum of its messages' `token_count` (each up to 100,000,000) passed 2**31 - 1 after 22
large messages, and every later write of the session failed ("integer out of range"). SQLite's
integers are 64-bit already: it is untouched. On Postgres the column's type changes in place,
which rewrites `chat_session` (one row a session) under an exclusive lock.

Revision ID: 0009_total_tokens_bigint
Revises: 0008_search_parts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009_total_tokens_bigint"
down_revision: str | None = "0008_search_parts"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "chat_session", "total_tokens", type_=sa.BigInteger(), existing_type=sa.Integer()
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # A total past the 32-bit range is kept at its largest value rather than refused.
        op.execute(
            "UPDATE chat_session SET total_tokens = 2147483647 WHERE total_tokens > 2147483647"
        )
        op.alter_column(
            "chat_session", "total_tokens", type_=sa.Integer(), existing_type=sa.BigInteger()
        )
