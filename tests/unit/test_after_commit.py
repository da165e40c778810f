"""After-commit work (services/hooks.py) is done once the data is committed, whatever becomes
of the request that committed it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from chat_store.services import hooks


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def _cancel_the_request_during(db: AsyncSession, hook_running: asyncio.Event) -> None:
    """Run the session's after-commit work as a request does, and cancel that request once a
    hook is under way (its time limit, a stopping server)."""
    request = asyncio.create_task(hooks.run_after_commit(db))
    await hook_running.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request


async def test_work_after_a_cancelled_callback_still_runs_to_its_end() -> None:
    """A request cancelled during one callback (its time limit, a stopping server) must not
    skip those after it: a revocation or a stop request would be lost."""
    db = AsyncSession()
    done: list[str] = []
    in_publish = asyncio.Event()
    release = asyncio.Event()

    async def publish() -> None:
        in_publish.set()
        await release.wait()
        done.append("publish")

    async def revoke() -> None:
        done.append("revoke")

    hooks.after_commit(db, publish)
    hooks.after_commit(db, revoke)
    await _cancel_the_request_during(db, in_publish)
    assert done == []

    release.set()
    await _until(lambda: len(done) == 2)
    # The interrupted callback ran again from its start, then the rest, once each.
    assert done == ["publish", "revoke"]
    assert db.info.get("after_commit") is None


async def test_a_failed_callback_does_not_stop_the_rest() -> None:
    db = AsyncSession()
    done: list[str] = []

    async def failing() -> None:
        raise RuntimeError("the bus is away")

    async def revoke() -> None:
        done.append("revoke")

    hooks.after_commit(db, failing)
    hooks.after_commit(db, revoke)
    await hooks.run_after_commit(db)
    assert done == ["revoke"]


async def test_shutdown_waits_for_the_work_of_cancelled_requests() -> None:
    """The lifespan waits (hooks.finish) before it closes the bus and the cache that the work
    uses; what is still running after the wait is cancelled."""
    db = AsyncSession()
    done: list[str] = []
    in_revoke = asyncio.Event()

    async def revoke() -> None:
        in_revoke.set()
        await asyncio.sleep(0.2)
        done.append("revoke")

    hooks.after_commit(db, revoke)
    await _cancel_the_request_during(db, in_revoke)
    await hooks.finish(within=5.0)
    assert done == ["revoke"]

    async def stuck() -> None:
        in_revoke.set()
        await asyncio.sleep(60)

    in_revoke.clear()
    hooks.after_commit(db, stuck)
    await _cancel_the_request_during(db, in_revoke)
    await asyncio.wait_for(hooks.finish(within=0.1), 2)
    assert not hooks._FINISHING
