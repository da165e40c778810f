"""Search: the caller's messages and session titles, best first."""

from __future__ import annotations

from typing import Unpack

from chat_store.client._api.common import SearchOptions
from chat_store.client._core import API_PREFIX, Call, ClientCore, model, query
from chat_store.client._endpoint import endpoint
from chat_store.client.models import SearchPage


class SearchApi(ClientCore):
    @endpoint
    def search(self, q: str, **options: Unpack[SearchOptions]) -> Call[SearchPage]:
        """One page of the caller's messages and session titles that match `q` (words,
        "phrases", -excluded, or), best first. `after`/`before`: a time with an offset, or a
        date (the start of that day, UTC). The next page: `cursor=page.next_cursor`."""
        params = query(q=q, **options)
        return Call("GET", f"{API_PREFIX}/search", params=params, parse=model(SearchPage))
