"""generation: the service's own chat turns (the lease of a live generation), and a session's
system prompt

Revision ID: 0002_generation
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_generation"
down_revision: str | None = "0001"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # A plain ADD COLUMN on both dialects (nullable, no default): no table rebuild on SQLite.
    op.add_column("chat_session", sa.Column("system_prompt", sa.Text(), nullable=True))
    op.create_table(
        "generation",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message.id"],
            name="fk_generation_message_id_message",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_session.id"],
            name="fk_generation_session_id_chat_session",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name="fk_generation_user_id_user", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_generation"),
    )
    # The sweep for leases that ran out; the per-session and per-user counts of live ones.
    op.create_index("ix_generation_lease_expires_at", "generation", ["lease_expires_at"])
    op.create_index("ix_generation_session_id", "generation", ["session_id"])
    op.create_index("ix_generation_user_id", "generation", ["user_id"])


def downgrade() -> None:
    op.drop_table("generation")
    # SQLite 3.35 and later drop a column in place (no table rebuild, which would have to
    # copy every session).
    op.drop_column("chat_session", "system_prompt")
