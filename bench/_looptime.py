"""Per-turn event-loop time inside a benchmarked server, the same probe for every server.

`bench/sse.py` puts a `sitecustomize` on the servers' path that calls `install()` when
`BENCH_LOOP_TIME` names an output file. The probe wraps the asyncio loop's `_run_once` (one
turn: wait in the selector, then run every callback that is ready) and its selector's
`select`, and records each turn's time minus the time spent waiting: how long the loop held
everything else up. SIGUSR1 starts a window (clears the figures), SIGUSR2 writes the window's
histogram to the file. uvloop's loop is compiled and cannot be wrapped: with `--uvloop` the
probe reports nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

# Upper bounds of the histogram's buckets, in ms; the last bucket is everything above.
BOUNDS_MS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
LONGEST = 10  # the longest turns kept, with when they happened


class Turns:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.started = time.monotonic()
        self.counts = [0] * (len(BOUNDS_MS) + 1)
        self.total = 0.0
        self.max = 0.0
        self.longest: list[tuple[float, float]] = []  # (ms, seconds into the window)

    def add(self, seconds: float) -> None:
        ms = seconds * 1000
        self.total += seconds
        self.max = max(self.max, ms)
        for index, bound in enumerate(BOUNDS_MS):
            if ms <= bound:
                self.counts[index] += 1
                break
        else:
            self.counts[-1] += 1
        if ms > 1.0 and (len(self.longest) < LONGEST or ms > self.longest[-1][0]):
            self.longest.append((ms, time.monotonic() - self.started))
            self.longest.sort(reverse=True)
            del self.longest[LONGEST:]

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": time.monotonic() - self.started,
            "turns": sum(self.counts),
            "busy_s": self.total,
            "bounds_ms": list(BOUNDS_MS),
            "counts": self.counts,
            "max_ms": self.max,
            "longest": [{"ms": ms, "at_s": at} for ms, at in self.longest],
        }


def install(path: str) -> None:
    from asyncio import base_events

    turns = Turns()
    waited = [0.0]
    original = base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]

    def wrap_select(selector: Any) -> None:
        select = selector.select

        def timed_select(timeout: float | None = None) -> Any:
            started = time.perf_counter()
            try:
                return select(timeout)
            finally:
                waited[0] += time.perf_counter() - started

        selector.select = timed_select
        selector.bench_timed = True

    def run_once(loop: Any) -> None:
        if not getattr(loop._selector, "bench_timed", False):
            wrap_select(loop._selector)
        waited[0] = 0.0
        started = time.perf_counter()
        original(loop)
        turns.add(time.perf_counter() - started - waited[0])

    def dump(_signum: int, _frame: Any) -> None:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(turns.to_json(), out)

    base_events.BaseEventLoop._run_once = run_once  # type: ignore[attr-defined]
    signal.signal(signal.SIGUSR1, lambda _s, _f: turns.clear())
    signal.signal(signal.SIGUSR2, dump)


SITECUSTOMIZE = """\
import os
if os.environ.get("BENCH_LOOP_TIME"):
    from bench._looptime import install
    install(os.environ["BENCH_LOOP_TIME"])
"""


def read(path: str, *, timeout: float = 5.0) -> dict[str, Any] | None:
    """The window the server wrote after SIGUSR2 (None if it wrote none in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="utf-8") as source:
                data: dict[str, Any] = json.load(source)
            os.unlink(path)
            return data
        except (OSError, ValueError):
            time.sleep(0.05)
    return None


def over(window: dict[str, Any], ms: float) -> int:
    """Turns longer than `ms` (a bucket bound) in a window."""
    bounds = window["bounds_ms"]
    index = bounds.index(ms)
    return int(sum(window["counts"][index + 1 :]))
