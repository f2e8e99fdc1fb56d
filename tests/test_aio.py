"""Waits with a time limit stop on a cancel, whatever else happens in the same loop turn.

`asyncio.wait_for` on Python 3.11 swallows a cancel that meets the end of its wait: a
background loop stopped by a cancel (the board, the outbox sender) then ran on, and its
`stop()` waited forever (seen as a hung test teardown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from services.aio import wait_event
from services.notify.outbox import Doorbell
from services.timers import Alarm

# A loop's wake-up: (wake it, wait once).
Waiter = tuple[Callable[[], None], Callable[[], Awaitable[object]]]


def _event() -> Waiter:
    event = asyncio.Event()

    async def wait() -> None:
        await wait_event(event, 10)
        event.clear()

    return event.set, wait


def _doorbell() -> Waiter:
    bell = Doorbell()
    return bell.ring, lambda: bell.wait(bell.rings, 10)


def _alarm() -> Waiter:
    alarm = Alarm()
    return alarm.hint, lambda: alarm.wait(10)


WAITERS = {"wait_event": _event, "outbox Doorbell": _doorbell, "timer Alarm": _alarm}


@pytest.mark.parametrize("turns", range(6))
@pytest.mark.parametrize("make", WAITERS.values(), ids=WAITERS.keys())
async def test_a_loop_stops_on_a_cancel_that_meets_its_wake_up(
    make: Callable[[], Waiter], turns: int
) -> None:
    wake, wait = make()

    async def loop() -> None:
        while True:
            await wait()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    wake()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the loop ran on after its cancel"
    assert task.cancelled()


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 10) is True
    assert await wait_event(event, 0) is True  # already set: at once
    assert await wait_event(asyncio.Event(), -1) is False  # a past limit: at once
