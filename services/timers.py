"""The escalation timer: the leader's loop that fires whatever the database says is due.

Written by hand rather than as APScheduler jobs: an in-memory job that comes due while the
previous run is still going is dropped (`max_instances`), and a job skipped while this
instance briefly did not lead is never run again; this loop keeps no such state. It
sleeps until the soonest wake-up the database holds, a write's hint that one came earlier, or
a sweep (a few seconds); then it fires what is due and reads the next. A loop frozen or
blocked past a wake-up runs the moment the process runs again (its sleep is long over); a
lease that looked expired meanwhile is checked in memory four times a second until renewed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.aio import wait_event
from services.clock import Clock
from services.escalation import EscalationService
from services.health import ComponentHealth, Status
from services.incidents import IncidentService
from services.leader import LeaseLost

log = logging.getLogger(__name__)

# Every wake-up is re-derived from the database at least this often on the leader.
REPAIR_SECONDS = 300.0
# How often a process that does not fire checks, in memory, whether it may now.
LEADERSHIP_POLL = 0.25


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

    async def wait(self, seconds: float) -> bool:
        """Until a hint (True), or `seconds` at most (False)."""
        try:
            return await wait_event(self._event, seconds)
        finally:
            self._event.clear()


class EscalationTimer:
    """Runs on every instance; fires only on the one that leads (or always, with no gate).
    Followers still read the soonest wake-up each sweep, so every instance's metric and
    health show a step the leader has left overdue."""

    def __init__(
        self,
        escalation: EscalationService,
        incidents: IncidentService,
        alarm: Alarm,
        clock: Clock,
        *,
        gate: Gate | None = None,
        sweep_seconds: float = 5.0,
    ) -> None:
        self._escalation = escalation
        self._incidents = incidents
        self._alarm = alarm
        self._clock = clock
        self._gate = gate
        self.sweep = sweep_seconds
        self._task: asyncio.Task[None] | None = None
        self._repair_at = 0.0  # monotonic time of the next full repair (0: at once)
        self._next_read = 0.0  # monotonic time of the next sweep's read of the wake-ups
        self._led = False  # whether the last turn could fire
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
        hinted = True
        while True:
            delay = LEADERSHIP_POLL
            try:
                delay = await self.turn(hinted=hinted)
            except asyncio.CancelledError:
                raise
            except LeaseLost as exc:
                log.info("escalation timer: %s; firing stops until this instance leads", exc)
            except Exception:
                log.exception("escalation timer turn failed; trying again in %.0f s", self.sweep)
                delay = self.sweep
            self.last_turn = time.monotonic()
            hinted = await self._alarm.wait(delay)

    async def turn(self, *, hinted: bool = True) -> float:
        """One turn: read the soonest wake-up from the database when something may have
        changed (a hint, a wake-up come due, this instance just able to fire again, or a
        sweep gone by); when leading, repair if it is time and fire what is due. Returns how
        long to sleep before the next turn."""
        mono = time.monotonic()
        leads = self._leads()
        if leads and not self._led:
            # Took the lead, or the lease is valid again after a pause: read at once.
            hinted = True
        self._led = leads
        now = self._clock.now()
        planned = self._alarm.planned
        if hinted or mono >= self._next_read or (planned is not None and planned <= now):
            if leads:
                with self._fenced():
                    if mono >= self._repair_at:
                        self._repair_at = mono + REPAIR_SECONDS
                        wrong = await self._escalation.rewake_all()
                        if wrong:
                            log.info("escalation timer: %s wake-ups re-derived", wrong)
                    self.fired += len(await self._escalation.fire_due(self._incidents))
            now = self._clock.now()
            soonest, overdue = await self._escalation.earliest_wakeup(
                overdue_before=now - self.slack
            )
            if overdue:
                log.debug("escalation: %s wake-ups overdue; %s", overdue, self.explain())
            self._alarm.planned = planned = soonest
            self._next_read = time.monotonic() + self.sweep
        delay = self._next_read - time.monotonic()
        if planned is not None:
            delay = min(delay, (planned - now).total_seconds())
        if not leads:
            # Leadership is checked in memory, often: a lease renewed after a pause, or
            # taken over, is noticed within this; the database is read once a sweep.
            delay = min(delay, LEADERSHIP_POLL)
        return max(0.0, delay)

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
            return ComponentHealth(
                "escalation", Status.HEALTHY, "no step overdue", figures, reason="escalation_ok"
            )
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
            reason="escalation_overdue",
            params={"count": overdue.count, "id": overdue.oldest_incident, "late": int(late)},
        )
