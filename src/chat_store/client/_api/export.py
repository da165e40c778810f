"""Exports: a session's conversation, or everything the caller owns, as the service streams it."""

from __future__ import annotations

from typing import Any, Literal

from chat_store.client._api.common import Id, chat_session_path
from chat_store.client._core import API_PREFIX, Call, ClientCore, raw
from chat_store.client._endpoint import downloaded

ExportFormat = Literal["json", "jsonl", "markdown"]


class ExportApi(ClientCore):
    @downloaded
    def iter_export(
        self, session_id: Id | None = None, *, export_format: ExportFormat = "json"
    ) -> Call[Any]:
        """A session's export in `export_format` (docs/export-format.md), or with no session
        everything the caller owns as JSONL, in chunks as the service sends them."""
        if session_id is None:
            path, params = f"{API_PREFIX}/users/me/export", {}
        else:
            path, params = f"{chat_session_path(session_id)}/export", {"format": export_format}
        return Call("GET", path, params=params, parse=raw, headers={"Accept": "*/*"})
