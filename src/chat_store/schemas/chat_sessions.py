from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chat_store.models import ChatSession
from chat_store.schemas.common import (
    InputDatetime,
    InputModel,
    Metadata,
    OutputModel,
    Page,
    SafeStr,
    Title,
    examples,
)

ChatSessionStatus = Literal["active", "ended"]


class ChatSessionFilters(BaseModel):
    """What a session list is narrowed to: the query parameters of GET /sessions."""

    model_config = ConfigDict(frozen=True)

    favorite: bool | None = Field(default=None, description="Only favourites (true) or not.")
    status: ChatSessionStatus | None = None
    title_contains: SafeStr | None = Field(
        default=None, alias="q", max_length=200, description="Title contains."
    )
    repo: SafeStr | None = Field(default=None, max_length=500, description="Workspace repo.")
    updated_after: InputDatetime | None = None
    archived: bool | None = Field(
        default=None, description="Only archived sessions (true) or only the others."
    )


class Workspace(InputModel):
    repo: SafeStr | None = Field(default=None, max_length=500, examples=["github.com/acme/api"])
    branch: SafeStr | None = Field(default=None, max_length=500, examples=["main"])
    path: SafeStr | None = Field(default=None, max_length=2000, examples=["/home/ada/src/api"])


# A session's system prompt: sent first to the model by the service's own chat turns.
SYSTEM_PROMPT_MAX_CHARS = 100_000
SystemPrompt = Annotated[SafeStr, Field(max_length=SYSTEM_PROMPT_MAX_CHARS)]


class ChatSessionCreate(InputModel):
    id: uuid.UUID | None = Field(default=None, description="Client-chosen id; must be unused.")
    title: Title | None = Field(default=None, examples=["Refactor the billing module"])
    metadata: Metadata = Field(default_factory=dict)
    workspace: Workspace | None = None
    system_prompt: SystemPrompt | None = Field(
        default=None, description="Sent first to the model by POST /chat (docs/generation.md)."
    )


class ChatSessionUpdate(InputModel):
    model_config = examples(
        {"title": "Fix flaky billing test", "is_favorite": True},
        {"status": "ended", "metadata": {"client": "cli/1.4", "outcome": "fixed"}},
    )

    title: Title | None = None
    is_favorite: bool | None = None
    metadata: Metadata | None = None
    workspace: Workspace | None = None
    status: ChatSessionStatus | None = None
    system_prompt: SystemPrompt | None = None

    @model_validator(mode="after")
    def _no_null_for_required(self) -> ChatSessionUpdate:
        for name in ("is_favorite", "metadata", "status"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ChatSessionRename(InputModel):
    model_config = examples({"title": "Fix flaky billing test"})

    title: Title | None


class FavoriteUpdate(InputModel):
    model_config = examples({"is_favorite": True})

    is_favorite: bool | None = Field(default=None, description="Omit to toggle.")

    @field_validator("is_favorite")
    @classmethod
    def _not_null(cls, value: bool | None) -> bool:
        # Run only for a value given: left out, it toggles; null is no flag's value.
        if value is None:
            raise ValueError("is_favorite is true or false; leave it out to toggle")
        return value


class ChatSessionRead(OutputModel):
    id: uuid.UUID
    object: Literal["session"] = "session"
    title: str | None
    is_favorite: bool
    status: ChatSessionStatus
    metadata: dict[str, Any]
    workspace: Workspace | None
    system_prompt: str | None = None
    message_count: int
    total_tokens: int
    last_message_at: datetime | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    archived_at: datetime | None = Field(
        default=None,
        description="Set while the messages are in the archive (any access brings them back).",
    )

    @classmethod
    def from_model(cls, row: ChatSession) -> ChatSessionRead:
        has_workspace = any((row.workspace_repo, row.workspace_branch, row.workspace_path))
        workspace = (
            Workspace(repo=row.workspace_repo, branch=row.workspace_branch, path=row.workspace_path)
            if has_workspace
            else None
        )
        shown = {name: getattr(row, name) for name in _SHOWN_AS_STORED}
        return cls(**shown, metadata=row.metadata_, workspace=workspace)


# The read model's fields that the row holds under the same name.
_SHOWN_AS_STORED = tuple(
    name for name in ChatSessionRead.model_fields if name not in {"object", "metadata", "workspace"}
)


class ChatSessionPage(Page[ChatSessionRead]):
    """A page of the session list, with the cursor that continues it."""

    next_cursor: str | None = Field(
        default=None,
        description=(
            "Pass as `cursor` for the next page in the direction walked (null when `has_more` is"
            " false). It holds the place of the page's last item in the list, so a session that"
            " moves (a new message) while the list is walked does not make a page repeat items."
        ),
    )
