from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from chat_store.schemas.common import InputDatetime, InputModel, OutputModel, SafeStr, examples


class ApiKeyCreate(InputModel):
    model_config = examples(
        {"name": "laptop cli"}, {"name": "ci runner", "expires_at": "2027-06-30T00:00:00Z"}
    )

    name: SafeStr = Field(min_length=1, max_length=200, examples=["laptop cli"])
    expires_at: InputDatetime | None = Field(
        default=None, description="RFC 3339 with offset; the key stops working then."
    )


class ApiKeyRead(OutputModel):
    id: uuid.UUID
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret, shown this once only.", examples=["csk_..."])
