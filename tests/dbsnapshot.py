"""The whole database content, to show that a request changed nothing (or exactly what).

before = await snapshot(state)
...  # a request that is refused
assert changes(before, await snapshot(state)) == {}
"""

from __future__ import annotations

import json

from sqlalchemy import select

from chat_store.api.deps import AppState
from chat_store.models import Base

Snapshot = dict[str, list[str]]


async def snapshot(state: AppState) -> Snapshot:
    """Every row of every table of the models, each as canonical JSON, sorted per table."""
    tables: Snapshot = {}
    async with state.sessionmaker() as db:
        for table in Base.metadata.sorted_tables:
            rows = (await db.execute(select(table))).mappings()
            tables[table.name] = sorted(
                json.dumps(dict(row), sort_keys=True, default=str) for row in rows
            )
    return tables


def changes(before: Snapshot, after: Snapshot) -> dict[str, dict[str, list[str]]]:
    """Per table that differs: the rows only `after` has (added) and only `before` has
    (removed); an updated row shows as one of each. Empty when nothing changed."""
    differences: dict[str, dict[str, list[str]]] = {}
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name, []), after.get(name, [])
        added = [row for row in new if row not in old]
        removed = [row for row in old if row not in new]
        if added or removed:
            differences[name] = {"added": added, "removed": removed}
    return differences
