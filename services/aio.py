"""Waiting with a time limit, the one way the services do it.

Not `asyncio.wait_for`: on Python 3.11 it returns the result when what it waits for finishes
in the same loop turn as a cancel of the waiter, and swallows the cancel. A background loop
that waits that way and is stopped by a cancel (board, outbox, probe) then runs on, and its
`stop()` waits for it forever. `asyncio.timeout` counts cancels (`Task.uncancel`) and lets
an outside cancel through in every order.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Until `event` is set (True) or `seconds` have passed (False)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
