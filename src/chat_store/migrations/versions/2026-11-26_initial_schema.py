"""initial schema: users, credentials, chat sessions, messages, idempotency keys

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _owner() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("user_id", sa.Uuid(), nullable=False)


def _owner_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["user.id"], name=f"fk_{table}_user_id_user", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("is_guest", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_user"),
        sa.UniqueConstraint("email", name="uq_user_email"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.Uuid(), nullable=False),
        _owner(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _at("expires_at", nullable=True),
        _at("last_used_at", nullable=True),
        _at("created_at"),
        _owner_fk("api_key"),
        sa.PrimaryKeyConstraint("id", name="pk_api_key"),
        sa.UniqueConstraint("key_hash", name="uq_api_key_key_hash"),
    )
    op.create_index("ix_api_key_user_id", "api_key", ["user_id"])
    op.create_table(
        "refresh_token",
        sa.Column("id", sa.Uuid(), nullable=False),
        _owner(),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _at("expires_at"),
        _at("used_at", nullable=True),
        _at("revoked_at", nullable=True),
        _at("created_at"),
        _owner_fk("refresh_token"),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_token"),
        sa.UniqueConstraint("token_hash", name="uq_refresh_token_token_hash"),
    )
    op.create_index("ix_refresh_token_user_id", "refresh_token", ["user_id"])
    op.create_index("ix_refresh_token_family_id", "refresh_token", ["family_id"])
    op.create_table(
        "chat_session",
        sa.Column("id", sa.Uuid(), nullable=False),
        _owner(),
        sa.Column("title", sa.String(400), nullable=True),
        sa.Column("is_favorite", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("workspace_repo", sa.String(500), nullable=True),
        sa.Column("workspace_branch", sa.String(500), nullable=True),
        sa.Column("workspace_path", sa.String(2000), nullable=True),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column("history_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_version", sa.Integer(), server_default="0", nullable=False),
        _at("last_message_at", nullable=True),
        _at("last_activity_at"),
        _at("created_at"),
        _at("updated_at"),
        _at("ended_at", nullable=True),
        _owner_fk("chat_session"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_session"),
    )
    # The session list: per owner, newest activity first, keyset on (last_activity_at, id).
    op.create_index(
        "ix_chat_session_user_activity", "chat_session", ["user_id", "last_activity_at", "id"]
    )
    # Retention: sessions idle since a cut-off, across all owners.
    op.create_index("ix_chat_session_last_activity_at", "chat_session", ["last_activity_at"])
    op.create_table(
        "message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        _owner(),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("partial_content", sa.Text(), nullable=True),
        sa.Column("partial_length", sa.Integer(), server_default="0", nullable=False),
        sa.Column("partial_bytes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("context", JSON, nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("created_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        _at("created_at"),
        _at("updated_at"),
        _at("completed_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_session.id"],
            name="fk_message_session_id_chat_session",
            ondelete="CASCADE",
        ),
        _owner_fk("message"),
        sa.PrimaryKeyConstraint("id", name="pk_message"),
        # The per-session cursor, and the index behind every history read.
        sa.UniqueConstraint("session_id", "seq", name="uq_message_session_id_seq"),
    )
    op.create_index("ix_message_user_id", "message", ["user_id"])
    op.create_table(
        "message_chunk",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("start", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message.id"],
            name="fk_message_chunk_message_id_message",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "start", name="pk_message_chunk"),
    )
    op.create_table(
        "message_tombstone",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_session.id"],
            name="fk_message_tombstone_session_id_chat_session",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_message_tombstone"),
    )
    op.create_index(
        "ix_message_tombstone_session_id_version", "message_tombstone", ["session_id", "version"]
    )
    op.create_table(
        "idempotency_key",
        sa.Column("id", sa.Uuid(), nullable=False),
        _owner(),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        _at("created_at"),
        _at("expires_at"),
        _owner_fk("idempotency_key"),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_key"),
        sa.UniqueConstraint("user_id", "key", name="uq_idempotency_key_user_id_key"),
    )
    op.create_index("ix_idempotency_key_expires_at", "idempotency_key", ["expires_at"])


def downgrade() -> None:
    op.drop_table("idempotency_key")
    op.drop_table("message_tombstone")
    op.drop_table("message_chunk")
    op.drop_table("message")
    op.drop_table("chat_session")
    op.drop_table("refresh_token")
    op.drop_table("api_key")
    op.drop_table("user")
