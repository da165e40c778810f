"""Every API method, written once as a request builder (see `_endpoint`), one module per part
of the API.

To add a method: write a builder returning a `Call`, decorate it with `@endpoint` (or `@paginated`
for a list to walk), and both clients have it. Answers that are not one JSON document (Server-Sent
Events, exports) go through the transports' `_stream`.
"""

from chat_store.client._api.accounts import AccountsApi
from chat_store.client._api.chat_sessions import ChatSessionsApi
from chat_store.client._api.messages import MessagesApi


class ChatStoreApi(AccountsApi, ChatSessionsApi, MessagesApi):
    """The whole API; the two clients add a transport to it."""


__all__ = ["ChatStoreApi"]
