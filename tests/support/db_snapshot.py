"""A snapshot of every table of chat_store.models, to show that a request changed nothing.

    before = await take_snapshot(state.sessionmaker)
    ...  # a refused request
    assert_unchanged(before, await take_snapshot(state.sessionmaker), "POST /x -> 409")

Each table is kept as its row count, a SHA-256 over its rows (each value rendered with repr,
the rows sorted, so the order they come back in does not matter) and the rendered rows, so that
a difference names the rows that changed and a comparison may leave named columns out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.models import Base

Row = tuple[str, ...]


@dataclass(frozen=True)
class TableState:
    columns: tuple[str, ...]
    rows: frozenset[Row]
    digest: str

    @property
    def count(self) -> int:
        return len(self.rows)

    def without(self, ignored: Collection[str]) -> frozenset[Row]:
        """The rows with the `ignored` columns left out."""
        kept = [i for i, name in enumerate(self.columns) if name not in ignored]
        return frozenset(tuple(row[i] for i in kept) for row in self.rows)


Snapshot = Mapping[str, TableState]


async def take_snapshot(sessionmaker: async_sessionmaker[AsyncSession]) -> Snapshot:
    """Every table of the models' metadata, read in one transaction."""
    tables: dict[str, TableState] = {}
    async with sessionmaker() as db, db.begin():
        for table in Base.metadata.sorted_tables:
            rows = frozenset(
                tuple(repr(value) for value in row)
                for row in (await db.execute(select(table))).all()
            )
            digest = hashlib.sha256()
            for row in sorted(rows):
                digest.update("\x1f".join(row).encode("utf-8", "surrogatepass") + b"\x1e")
            tables[table.name] = TableState(
                tuple(column.name for column in table.columns), rows, digest.hexdigest()
            )
    return tables


def changed_tables(before: Snapshot, after: Snapshot, ignore: Collection[str] = ()) -> list[str]:
    """Tables whose rows differ; `ignore` names "table.column"s that may change."""
    changed = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            changed.append(name)
        elif old.digest != new.digest:
            ignored = {item.partition(".")[2] for item in ignore if item.startswith(name + ".")}
            if not ignored or old.without(ignored) != new.without(ignored):
                changed.append(name)
    return changed


def describe_changes(
    before: Snapshot, after: Snapshot, ignore: Collection[str] = (), *, limit: int = 5
) -> str:
    """The rows that appeared and disappeared, per changed table (a few of each)."""
    lines: list[str] = []
    for name in changed_tables(before, after, ignore):
        old, new = before[name], after[name]
        lines.append(f"{name} {old.columns}: {old.count} -> {new.count} rows")
        lines.extend(f"  - {row}" for row in sorted(old.rows - new.rows)[:limit])
        lines.extend(f"  + {row}" for row in sorted(new.rows - old.rows)[:limit])
    return "\n".join(lines)


def assert_unchanged(
    before: Snapshot, after: Snapshot, what: str, ignore: Collection[str] = ()
) -> None:
    assert not changed_tables(before, after, ignore), (
        f"{what} changed the database:\n{describe_changes(before, after, ignore)}"
    )
