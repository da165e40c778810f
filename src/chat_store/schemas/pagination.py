"""Which page of a list to read: the query parameters every list route takes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Pagination:
    limit: int = 20
    order: Literal["asc", "desc"] | None = None
    after: uuid.UUID | None = None
    before: uuid.UUID | None = None

    def descending(self, default: Literal["asc", "desc"]) -> bool:
        return (self.order or default) == "desc"
