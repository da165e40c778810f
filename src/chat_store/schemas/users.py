from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import EmailStr, Field

from chat_store.schemas.common import InputModel, OutputModel, SafeStr, examples


class UserCreate(InputModel):
    model_config = examples(
        {"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"}
    )

    email: EmailStr = Field(examples=["ada@example.com"])
    password: SafeStr = Field(min_length=8, max_length=1024, examples=["correct horse battery"])
    display_name: SafeStr | None = Field(default=None, max_length=200, examples=["Ada"])


class UserUpdate(InputModel):
    model_config = examples(
        {"display_name": "Ada Lovelace"},
        {"password": "staple battery horse", "current_password": "correct horse battery"},
    )

    display_name: SafeStr | None = Field(default=None, max_length=200)
    password: SafeStr | None = Field(default=None, min_length=8, max_length=1024)
    current_password: SafeStr | None = Field(
        default=None, max_length=1024, description="Required to change the password."
    )


class UserRead(OutputModel):
    id: uuid.UUID
    object: Literal["user"] = "user"
    email: str
    display_name: str | None
    created_at: datetime
    updated_at: datetime


class TokenPair(OutputModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")


class ClaimRequest(InputModel):
    model_config = examples({"client_id": "5d2c8e1a-7b3f-4e9a-a6c4-1f0b9d3e2a87"})

    client_id: uuid.UUID = Field(description="The X-Client-ID the guest used.")


class ClaimResult(OutputModel):
    object: Literal["claim"] = "claim"
    client_id: uuid.UUID
    sessions_moved: int


class RefreshRequest(InputModel):
    model_config = examples({"refresh_token": "Jb2yq1o0m3ZsVQp7kq9Xn4gA1r8dT6wE5cLhU0fYvKs"})

    refresh_token: SafeStr = Field(min_length=1, max_length=512)
