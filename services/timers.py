"""The escalation timer: the leader's loop that fires whatever the database says is due.

Written by hand rather than as APScheduler jobs: an in-memory job that comes due while the
previous run is still going is dropped (`max_instances`), and a job skipped while this
instance briefly did not lead is never run again; this loop keeps no such state. Each turn
it reads the soonest wake-up from the database, fires what is due, and sleeps until the
next one or at most `sweep` seconds (a pause, a blocked loop or a lost lease therefore costs
at most one sweep once the process runs again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.clock import Clock
from services.escalation import EscalationService
from services.health import ComponentHealth, Status
from services.leader import LeaseLost

log = logging.getLogger(__name__)

# Every wake-up is re-derived from the database at least this often on the leader.
REPAIR_SECONDS = 300.0


class Gate(Protocol):
    """Who fires (services/leader.py `Leadership`): the lease holder, its writes fenced."""

    @property
    def is_leader(self) -> bool: ...

    def fenced(self) -> contextlib.AbstractContextManager[None]: ...

    def explain(self) -> str: ...


class Alarm:
    """When the timer next plans to wake, and a way to wake it sooner: a write that may have
    brought a wake-up forward calls `hint`, and only an earlier time wakes the loop (a storm
    of new incidents, all due in 30 minutes, costs the loop nothing)."""

    def __init__(self) -> None:
        self.planned: datetime | None = None
        self._event = asyncio.Event()

    def hint(self, at: datetime | None = None) -> None:
        if at is None or self.planned is None or at < self.planned:
            self._event.set()

    async def wait(self, seconds: float) -> None:
        """Until a hint, or `seconds` at most. (Not `asyncio.wait_for`: on Python 3.11 a
        cancel that meets its timeout can leave the wait hanging.)"""
        timeout = asyncio.get_running_loop().call_later(max(0.0, seconds), self._event.set)
        try:
            await self._event.wait()
        finally:
            timeout.cancel()
            self._event.clear()


class EscalationTimer:
    """Runs on every instance; fires only on the one that leads (or always, with no gate).
    Followers still read the soonest wake-up each sweep, so every instance's metric and
    health show a step the leader has left overdue."""

    def __init__(
        self,
        escalation: EscalationService,
        alarm: Alarm,
        clock: Clock,
        *,
        gate: Gate | None = None,
        sweep_seconds: float = 1.0,
    ) -> None:
        self._escalation = escalation
        self._alarm = alarm
        self._clock = clock
        self._gate = gate
        self.sweep = sweep_seconds
        self._task: asyncio.Task[None] | None = None
        self._repair_at = 0.0  # monotonic time of the next full repair (0: at once)
        self.last_turn: float | None = None  # monotonic end of the last turn
        self.fired = 0

    @property
    def slack(self) -> timedelta:
        """A wake-up older than this is overdue: twice the sweep."""
        return timedelta(seconds=2 * self.sweep)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="escalation-timer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def lead(self) -> None:
        """This instance just took the lead: re-derive every wake-up, then fire."""
        self._repair_at = 0.0
        self._alarm.hint()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _leads(self) -> bool:
        return self._gate is None or self._gate.is_leader

    @contextlib.contextmanager
    def _fenced(self) -> Iterator[None]:
        if self._gate is None:
            yield
            return
        with self._gate.fenced():
            yield

    async def _run(self) -> None:
        while True:
            delay = self.sweep
            try:
                delay = await self.turn()
            except asyncio.CancelledError:
                raise
            except LeaseLost as exc:
                log.info("escalation timer: %s; firing stops until this instance leads", exc)
            except Exception:
                log.exception("escalation timer turn failed; trying again in %.0f s", self.sweep)
            self.last_turn = time.monotonic()
            await self._alarm.wait(delay)

    async def turn(self) -> float:
        """One turn: repair if it is time, fire what is due (when leading), and return how
        long to sleep before the next."""
        if self._leads():
            with self._fenced():
                if time.monotonic() >= self._repair_at:
                    self._repair_at = time.monotonic() + REPAIR_SECONDS
                    wrong = await self._escalation.rewake_all()
                    if wrong:
                        log.info(
                            "escalation timer: %s wake-ups re-derived from the database", wrong
                        )
                self.fired += len(await self._escalation.fire_due())
        now = self._clock.now()
        soonest, overdue = await self._escalation.earliest_wakeup(overdue_before=now - self.slack)
        if overdue:
            log.debug("escalation: %s wake-ups overdue; %s", overdue, self.explain())
        self._alarm.planned = soonest
        if soonest is None:
            return self.sweep
        return min(self.sweep, max(0.0, (soonest - now).total_seconds()))

    def explain(self) -> str:
        """Why something might be overdue: who leads, and how long ago the loop turned."""
        loop = (
            "the timer loop is not running"
            if not self.running
            else "the timer loop has not turned yet"
            if self.last_turn is None
            else f"the timer loop turned {time.monotonic() - self.last_turn:.1f} s ago"
        )
        lead = "no lease (single instance)" if self._gate is None else self._gate.explain()
        return f"{lead}; {loop}"

    async def check(self) -> ComponentHealth:
        """The watchdog: degraded while any open incident's wake-up is overdue by more than
        twice the sweep period (its next step, its deadline or the end of a timed ack)."""
        now = self._clock.now()
        overdue = await self._escalation.overdue(before=now - self.slack)
        figures: dict[str, Any] = {"overdue": overdue.count, "fired": self.fired}
        if overdue.count == 0:
            # Whether this process runs the timer or not (a CLI process, a test harness),
            # the database says nothing is late: that is what the component reports.
            return ComponentHealth("escalation", Status.HEALTHY, "no step overdue", figures)
        assert overdue.oldest_due_at is not None
        late = (now - overdue.oldest_due_at).total_seconds()
        figures.update(
            oldest_incident=overdue.oldest_incident,
            oldest_due_at=overdue.oldest_due_at.isoformat(),
        )
        why = self.explain()
        log.debug("escalation watchdog: %s overdue; %s", overdue.count, why)
        return ComponentHealth(
            "escalation",
            Status.DEGRADED,
            f"{overdue.count} overdue; oldest #{overdue.oldest_incident} by {late:.0f} s ({why})",
            figures,
        )
