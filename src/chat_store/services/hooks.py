"""Work that must wait until the transaction has committed (cache fills, event publishing)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)

_KEY = "after_commit"


def after_commit(db: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    db.info.setdefault(_KEY, []).append(callback)


async def when_committed(db: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    """Run `callback` once what the session has written is committed: after its open
    transaction commits, or now when none is open (a write that stood alone committed by
    itself, see db.fetch_one)."""
    if db.in_transaction():
        after_commit(db, callback)
    else:
        await callback()


def discard(db: AsyncSession) -> None:
    db.info.pop(_KEY, None)


async def run_after_commit(db: AsyncSession) -> None:
    """Run the session's after-commit work in order. If the caller is cancelled meanwhile (its
    time limit, a stopping server), the callback it was in and those after it run to their end
    in a task of their own: the data is committed, and its revocations, stop requests and
    events must follow it. So a callback may run twice: each is safe to repeat (a publish is a
    wake-up, a marker is written again)."""
    callbacks: list[Callable[[], Awaitable[None]]] = db.info.pop(_KEY, [])
    for position, callback in enumerate(callbacks):
        try:
            await _run_one(callback)
        except asyncio.CancelledError:
            in_background(_run_each(callbacks[position:]), _FINISHING, "after-commit")
            raise


async def _run_one(callback: Callable[[], Awaitable[None]]) -> None:
    try:
        await callback()
    except Exception:  # the data is committed; a failed side effect must not fail the request
        logger.exception("after-commit callback failed")


async def _run_each(callbacks: Sequence[Callable[[], Awaitable[None]]]) -> None:
    for callback in callbacks:
        await _run_one(callback)


def in_background(
    work: Coroutine[Any, Any, None], held: set[asyncio.Task[Any]], name: str
) -> asyncio.Task[None]:
    """Run `work` in a task of its own, held in `held` until it ends (the loop keeps only a
    weak reference to a task): work that outlives its request, which `settle` waits for."""
    task = asyncio.create_task(work, name=name)
    held.add(task)
    task.add_done_callback(held.discard)
    return task


# The after-commit work whose caller was cancelled, held so that it is not collected.
_FINISHING: set[asyncio.Task[Any]] = set()


async def finish(within: float) -> None:
    """Wait up to `within` seconds for the after-commit work left by cancelled requests, then
    cancel what is left: at shutdown, before the bus and the cache it uses are closed."""
    if cut := await settle(_FINISHING, within):
        logger.warning("after-commit work of %d requests was cut at shutdown", cut)


async def settle(tasks: set[asyncio.Task[Any]], within: float) -> int:
    """Wait up to `within` seconds for `tasks` (work that outlives its request), then cancel
    those left and wait for them to end; returns how many were cancelled."""
    if not tasks:
        return 0
    _, left = await asyncio.wait(set(tasks), timeout=within)
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    return len(left)
