from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chat_store.models.base import Base, utcnow


class Generation(Base):
    """An assistant message the service generates itself, and who is generating it now.

    While a process generates the answer it holds the lease (`owner`, `lease_expires_at`) and
    renews it; a finished generation has neither. A lease that ran out while its message is
    still open means the process died: another process takes the generation over.
    """

    __tablename__ = "generation"
    __table_args__ = (
        # The sweep: leases that ran out, across all owners.
        Index("ix_generation_lease_expires_at", "lease_expires_at"),
        # One live generation per session, and the per-user limit, are counted from these.
        Index("ix_generation_session_id", "session_id"),
        Index("ix_generation_user_id", "user_id"),
    )

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("message.id", ondelete="CASCADE"), primary_key=True
    )
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    # The process generating it ("host:pid:random"), null when no process is.
    owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    # How many runs the answer has had: the first, then each /continue or takeover.
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # How many of them handed it over at their process's shutdown: a rolling restart is no
    # crash, and those runs do not count against GENERATION_MAX_ATTEMPTS.
    handovers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the turn asked for (model, temperature, output limit, system prompt), so that a
    # continuation or takeover asks the same.
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
