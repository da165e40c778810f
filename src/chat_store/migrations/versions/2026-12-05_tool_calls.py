"""tool calls: an assistant message's `tool_calls` and a tool message's `tool_call_id`

Revision ID: 0005_tool_calls
Revises: 0003_search
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_tool_calls"
down_revision: str | None = "0003_search"


def upgrade() -> None:
    # Nullable, no default: a plain ADD COLUMN on both dialects, no table rewrite or rebuild.
    calls_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.add_column("message", sa.Column("tool_calls", calls_type, nullable=True))
    op.add_column("message", sa.Column("tool_call_id", sa.String(200), nullable=True))


def downgrade() -> None:
    # SQLite 3.35 and later drop a column in place; neither column is in an index or a trigger.
    op.drop_column("message", "tool_call_id")
    op.drop_column("message", "tool_calls")
