"""The request's context: what every service function is given first."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.cache import Cache
from chat_store.cache.bus import Bus
from chat_store.errors import ArchiveUnavailable
from chat_store.services.principals import Principal
from chat_store.settings import Settings
from chat_store.state import AppState


@dataclass(frozen=True, slots=True)
class RequestContext:
    """One request's database session (its one transaction), its caller, and the app's state
    (settings, cache, bus, counters). A streaming reader makes one for each short session it
    reads in."""

    db: AsyncSession
    principal: Principal
    app: AppState

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def bus(self) -> Bus:
        return self.app.bus

    @property
    def cache(self) -> Cache:
        return self.app.cache

    async def restore_archived(self, session_id: uuid.UUID) -> None:
        """The caller's archived session's messages back in this request's transaction (before
        a read or write of them that found it archived)."""
        restore = self.app.restore_archived
        if restore is None:
            raise ArchiveUnavailable("This process cannot restore archived sessions")
        await restore(self.app, self.db, self.principal.user_id, session_id)
