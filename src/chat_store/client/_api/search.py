"""Search: the caller's messages and session titles, best first."""

from __future__ import annotations

from datetime import date, datetime

from chat_store.client._api.common import ChatSessionStatus, Id
from chat_store.client._core import API_PREFIX, Call, ClientCore, model, query
from chat_store.client._endpoint import endpoint
from chat_store.client.models import MessageRole, SearchPage


class SearchApi(ClientCore):
    @endpoint
    def search(
        self,
        q: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        session_id: Id | None = None,
        role: MessageRole | None = None,
        repo: str | None = None,
        favorite: bool | None = None,
        status: ChatSessionStatus | None = None,
        after: datetime | date | None = None,
        before: datetime | date | None = None,
    ) -> Call[SearchPage]:
        """One page of the caller's messages and session titles that match `q` (words,
        "phrases", -excluded, or), best first. `after`/`before`: a time with an offset, or a
        date (the start of that day, UTC). The next page: `cursor=page.next_cursor`."""
        return Call(
            "GET",
            f"{API_PREFIX}/search",
            params=query(
                q=q,
                limit=limit,
                cursor=cursor,
                session_id=session_id,
                role=role,
                repo=repo,
                favorite=favorite,
                status=status,
                after=_day_or_time(after),
                before=_day_or_time(before),
            ),
            parse=model(SearchPage),
        )


def _day_or_time(value: datetime | date | None) -> datetime | str | None:
    if value is None or isinstance(value, datetime):
        return value
    return value.isoformat()
