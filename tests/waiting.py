"""The one way tests wait: for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(
    check: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 10.0,
    what: str = "",
    *,
    every: float = 0.05,
) -> Any:
    """Call `check` (plain or async) until it returns something true, and return that; fail
    naming `what` if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(check, "__qualname__", repr(check))
            raise AssertionError(f"timed out after {timeout:g} s waiting for {name}")
        await asyncio.sleep(every)
