"""Every API method, written once as a request builder (see `_endpoint`), one module per part
of the API.

To add a method: write a builder returning a `Call`, decorate it with `@endpoint` (or `@paginated`
for a list to walk), and both clients have it. Answers that are not one JSON document (Server-Sent
Events, exports) go through the transports' `_stream`.
"""

from collections.abc import Mapping
from typing import Any

import httpx

from chat_store.client._api.accounts import AccountsApi
from chat_store.client._api.chat_sessions import ChatSessionsApi
from chat_store.client._api.export import ExportApi, ExportFormat
from chat_store.client._api.messages import MessagesApi
from chat_store.client._api.search import SearchApi
from chat_store.client._api.turns import TurnsApi
from chat_store.client._core import Call, QueryValue, query, raw
from chat_store.client._endpoint import endpoint


class ChatStoreApi(AccountsApi, ChatSessionsApi, MessagesApi, TurnsApi, ExportApi, SearchApi):
    """The whole API; the two clients add a transport to it."""

    @endpoint
    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, QueryValue] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
    ) -> Call[httpx.Response]:
        """Any API request, with credentials, refresh and error mapping; a 2xx answer back."""
        return Call(
            method,
            path,
            parse=raw,
            json=json,
            params=query(**(params or {})),
            headers=dict(headers or {}),
            authenticated=authenticated,
        )


__all__ = ["ChatStoreApi", "ExportFormat"]
