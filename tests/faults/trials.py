"""Escalation trials under faults: a real `sunflow-ops serve` per trial, on a database of its
own, an alert with a ladder of seconds, a fault (SIGSTOP, a blocked loop, kill -9, a frozen
leader of two), and afterwards what fired, from the incident's timeline and the claims table.

Each trial returns a `Result`; the tests sum them (missed, doubled, worst lateness after the
process could run again) and print the figures docs/reliability.md records. Trials of a test
run side by side (their processes are idle or stopped most of the time).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import ADMIN, intake_headers
from tests.faults.conftest import base_settings, query
from tests.faults.process import Served

# A step that came due while the process could not run fires within this of it running again.
RESUME_SLACK = 3.0
# A step due while the process runs fires within this of its due time.
ON_TIME_SLACK = 3.0
# Trials started at once (each a process); more wait for a slot.
PARALLEL = 8


@dataclass
class Fired:
    step: str
    seq: int
    due_at: datetime
    at: datetime
    late: bool


@dataclass
class Result:
    name: str
    missed: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    # Seconds from "could run again" (or the due time, if later) to the firing, worst step.
    worst_after_resume: float = 0.0
    wrong_late_flag: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missed or self.doubled or self.wrong_late_flag)


def ladder(steps: Sequence[tuple[str, float, float | None]]) -> str:
    """A TOML policy: (name, after seconds, repeat seconds or None), all to the team chat."""
    out = []
    for name, after, repeat in steps:
        out.append(
            f'[[ladder.default]]\nname = "{name}"\nafter = "{after:g}s"\ntarget = "team"\n'
            + (f'repeat = "{repeat:g}s"\n' if repeat else "")
        )
    # A deadline far away: these trials are about the steps.
    return "\n".join(out) + '\n[deadlines]\nP1 = "1h"\n'


def wall() -> datetime:
    return datetime.now(UTC)


async def sleep_until(when: datetime) -> None:
    await asyncio.sleep(max(0.0, (when - wall()).total_seconds()))


class Trial:
    """One serve process (or two) with its own database, tmp folder and policy."""

    def __init__(
        self,
        name: str,
        url: str,
        tmp: Path,
        policy: str,
        served_factory: list[Served],
        **settings: Any,
    ) -> None:
        self.name = name
        self.url = url
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "policy.toml").write_text(policy)
        self.settings = {
            **base_settings(url, tmp),
            "escalation_policy_file": tmp / "policy.toml",
            "telegram_bot_token": None,
            **settings,
        }
        self._factory = served_factory

    def serve(self, log: str = "serve.log", **extra: Any) -> Served:
        served = Served({**self.settings, **extra}, self.tmp / log, self.tmp)
        self._factory.append(served)
        return served

    async def alert(self, http: aiohttp.ClientSession, base: str) -> tuple[int, datetime]:
        body = {"severity": "P1", "title": f"trial {self.name}", "dedup_key": self.name}
        async with http.post(f"{base}/api/alerts", json=body, headers=intake_headers()) as r:
            assert r.status == 202, await r.text()
            [incident_id] = (await r.json())["created"]
        detail = await self.detail(http, base, incident_id)
        return incident_id, datetime.fromisoformat(detail["first_seen_at"])

    @staticmethod
    async def detail(http: aiohttp.ClientSession, base: str, incident_id: int) -> dict[str, Any]:
        async with http.get(f"{base}/api/incidents/{incident_id}") as r:
            assert r.status == 200, await r.text()
            result: dict[str, Any] = await r.json()
            return result

    async def fired(self, http: aiohttp.ClientSession, base: str, incident_id: int) -> list[Fired]:
        detail = await self.detail(http, base, incident_id)
        return [
            Fired(
                e["details"]["step"],
                int(e["details"].get("repeat", 0)),
                datetime.fromisoformat(e["details"]["due_at"]),
                datetime.fromisoformat(e["at"]),
                bool(e["details"].get("late")),
            )
            for e in detail["timeline"]
            if e["kind"] == "escalated"
        ]

    async def claims(self, incident_id: int) -> dict[tuple[str, int], int]:
        rows = await query(
            self.url,
            "SELECT step_name, seq, count(*) FROM escalation_firings WHERE incident_id = :i "
            "GROUP BY step_name, seq",
            i=incident_id,
        )
        return {(str(r[0]), int(r[1])): int(r[2]) for r in rows}

    async def wait_fired(
        self,
        http: aiohttp.ClientSession,
        base: str,
        incident_id: int,
        done: Callable[[list[Fired]], bool],
        *,
        timeout: float,
    ) -> list[Fired]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(await self.fired(http, base, incident_id)):
                break
            await asyncio.sleep(0.2)
        # No sleep to let a double show up: wait until nothing can fire before the next
        # wake-up the database holds (a second firing would need a due wake-up first).
        while time.monotonic() < deadline and not await self.quiet(incident_id):
            await asyncio.sleep(0.2)
        return await self.fired(http, base, incident_id)

    async def quiet(self, incident_id: int) -> bool:
        """Nothing of this incident is due, or claimed and not yet on the timeline."""
        [(wake,)] = await query(
            self.url,
            "SELECT next_wake_at FROM escalation_ladders WHERE incident_id = :i",
            i=incident_id,
        )
        if wake is None:
            return True
        at = wake if isinstance(wake, datetime) else datetime.fromisoformat(str(wake))
        return (at if at.tzinfo else at.replace(tzinfo=UTC)) > wall() + timedelta(seconds=0.5)


def judge(  # the 0 s step is the alert itself: claimed, never on the timeline
    result: Result,
    fired: list[Fired],
    claims: dict[tuple[str, int], int],
    expected: Sequence[tuple[str, int]],
    *,
    resumed: datetime,
    could_not_run_from: datetime,
) -> None:
    """Each expected (step, repeat) fired once; none twice; each on time once the process
    could run (`resumed`); late-flagged exactly when more than 5 s after its due time."""
    seen: dict[tuple[str, int], list[Fired]] = {}
    for f in fired:
        seen.setdefault((f.step, f.seq), []).append(f)
    for key in expected:
        if key not in seen:
            result.missed.append(f"{result.name}: {key[0]}#{key[1]}")
    for key, fs in seen.items():
        if len(fs) > 1 or claims.get(key, 0) > 1:
            result.doubled.append(f"{result.name}: {key[0]}#{key[1]} x{len(fs)}")
    for f in fired:
        if f.due_at < could_not_run_from:
            continue  # fired before the fault
        start = max(f.due_at, resumed)
        after = (f.at - start).total_seconds()
        slack = RESUME_SLACK if f.due_at <= resumed else ON_TIME_SLACK
        result.worst_after_resume = max(result.worst_after_resume, after)
        if after > slack:
            result.missed.append(f"{result.name}: {f.step}#{f.seq} {after:.1f} s after it could")
        if f.late != ((f.at - f.due_at).total_seconds() > 5):
            result.wrong_late_flag.append(f"{result.name}: {f.step}#{f.seq}")


# -- the scenarios ------------------------------------------------------------------------


async def pause_trial(
    name: str, url: str, tmp: Path, served_factory: list[Served], *, pause: float, block: bool
) -> Result:
    """Freeze the process (SIGSTOP) — or block its own event loop — `pause` seconds across
    the due times of two steps, from 2.7 s after the alert; a third step comes due after."""
    frozen_at = 2.7
    last = math.ceil(frozen_at + pause + 4)
    policy = ladder([("team", 0, None), ("a", 3, None), ("b", 6, None), ("c", last, None)])
    trial = Trial(name, url, tmp, policy, served_factory, fault_injection=block)
    served = trial.serve()
    result = Result(name)
    async with aiohttp.ClientSession() as http:
        await served.start()
        incident_id, first_seen = await trial.alert(http, served.base)
        await sleep_until(first_seen + timedelta(seconds=frozen_at))
        stopped = wall()
        if block:
            async with http.post(
                f"{served.base}/api/admin/faults/block-loop?seconds={pause}",
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as r:
                assert r.status == 200, await r.text()
            await asyncio.sleep(pause)
        else:
            served.pause()
            await asyncio.sleep(pause)
            served.resume()
        resumed = wall()
        fired = await trial.wait_fired(
            http,
            served.base,
            incident_id,
            lambda fs: any(f.step == "c" for f in fs),
            timeout=last - (resumed - first_seen).total_seconds() + 15,
        )
        claims = await trial.claims(incident_id)
    expected = [("a", 0), ("b", 0), ("c", 0)]
    judge(result, fired, claims, expected, resumed=resumed, could_not_run_from=stopped)
    return result


async def repeat_trial(
    name: str, url: str, tmp: Path, served_factory: list[Served], *, outage: str
) -> Result:
    """A step repeating every 5 s from 2 s; at 2.8 s the process is killed (restarted at
    15 s) or frozen for 17 s. The missed repeats collapse into one catch-up, then the
    repeats go on, on their period, none doubled, until 40 s after the alert."""
    period, first, watch = 5.0, 2.0, 40.0
    policy = ladder([("team", 0, None), ("pd", first, period)])
    trial = Trial(name, url, tmp, policy, served_factory)
    served = trial.serve()
    result = Result(name)
    async with aiohttp.ClientSession() as http:
        await served.start()
        incident_id, first_seen = await trial.alert(http, served.base)
        await sleep_until(first_seen + timedelta(seconds=2.8))
        stopped = wall()
        if outage == "kill":
            served.pause()  # stopped first so nothing fires between the sleep and the kill
            await served.kill9()
            await sleep_until(first_seen + timedelta(seconds=15))
            await served.start()  # ready: it can run again
        else:
            served.pause()
            await asyncio.sleep(17)
            served.resume()
        resumed = wall()
        last_seq = int((watch - first) // period)
        fired = await trial.wait_fired(
            http,
            served.base,
            incident_id,
            lambda fs: any(f.step == "pd" and f.seq >= last_seq for f in fs),
            timeout=(first_seen + timedelta(seconds=watch) - wall()).total_seconds() + 10,
        )
        claims = await trial.claims(incident_id)
    repeats = sorted(f.seq for f in fired if f.step == "pd")
    catch_up = [s for s in repeats if s > 0]
    # seq 0 fired before the outage; the first one after it is the catch-up (the latest
    # repeat due when the process ran again); every repeat after it fires on its own.
    expected = [("pd", 0)]
    if catch_up:
        expected += [("pd", s) for s in range(catch_up[0], last_seq + 1)]
        skipped = (resumed - first_seen).total_seconds() - first
        if catch_up[0] != int(skipped // period):
            result.notes.append(f"catch-up was repeat {catch_up[0]}, expected {skipped // period}")
    else:
        result.missed.append(f"{name}: no repeat after the outage")
    judge(result, fired, claims, expected, resumed=resumed, could_not_run_from=stopped)
    return result


async def frozen_leader_trial(
    name: str, url: str, tmp: Path, served_factory: list[Served]
) -> Result:
    """Two instances on one PostgreSQL database, a 3 s lease. The leader is frozen (SIGSTOP)
    from 1.5 s to 11.5 s: the follower takes over and fires what comes due; when the old
    leader wakes it steps down, and every step has fired exactly once."""
    steps = [("team", 0, None), ("s1", 2, None), ("s2", 8, None), ("s3", 14, None)]
    trial = Trial(name, url, tmp, ladder(steps), served_factory, leader_lease_seconds=3)
    first = trial.serve("a.log", instance_id=f"{name}-a")
    second = trial.serve("b.log", instance_id=f"{name}-b")
    result = Result(name)
    async with aiohttp.ClientSession() as http:
        await first.start()
        await second.start()
        assert await leads(http, first.base), "the first instance should lead"
        incident_id, first_seen = await trial.alert(http, second.base)
        await sleep_until(first_seen + timedelta(seconds=1.5))
        stopped = wall()
        first.pause()
        await sleep_until(first_seen + timedelta(seconds=11.5))
        first.resume()
        fired = await trial.wait_fired(
            http,
            second.base,
            incident_id,
            lambda fs: any(f.step == "s3" for f in fs),
            timeout=(first_seen + timedelta(seconds=14) - wall()).total_seconds() + 10,
        )
        claims = await trial.claims(incident_id)
        stepped_down = await until_true(lambda: not_leading(http, first.base), 10)
    # The follower can fire only once the lease has run out (3 s after the last renewal).
    takeover = stopped + timedelta(seconds=4)
    judge(
        result,
        fired,
        claims,
        [(s, 0) for s, _, _ in steps[1:]],
        resumed=max(takeover, stopped),
        could_not_run_from=stopped,
    )
    if not stepped_down:
        result.doubled.append(f"{name}: the old leader still says it leads")
    if "no longer leads" not in first.log_text():
        result.notes.append("the old leader did not log stepping down")
    return result


async def leads(http: aiohttp.ClientSession, base: str) -> bool:
    async with http.get(f"{base}/api/health") as r:
        body = await r.json()
    return bool(body["components"]["leader"]["leader"])


async def not_leading(http: aiohttp.ClientSession, base: str) -> bool:
    return not await leads(http, base)


async def until_true(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def run_side_by_side(
    trials: Sequence[tuple[Callable[[list[Served]], Awaitable[Result]], asyncio.Semaphore | None]],
    served_factory: list[Served],
    parallel: int = PARALLEL,
) -> list[Result]:
    """Run trials with at most `parallel` at a time (and at most what a trial's own gate
    allows, e.g. PostgreSQL's connections), starts staggered (imports are CPU). Each trial's
    processes are stopped as soon as it ends; the fixture's list still stops them on a failure."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int, trial: Callable[[list[Served]], Awaitable[Result]]) -> Result:
        mine: list[Served] = []
        try:
            return await trial(mine)
        finally:
            served_factory.extend(mine)
            for served in mine:
                await served.stop()

    async def slot(
        i: int, trial: Callable[[list[Served]], Awaitable[Result]], own: asyncio.Semaphore | None
    ) -> Result:
        async with own or contextlib.nullcontext(), gate:
            await asyncio.sleep(0.5 * (i % parallel))
            return await one(i, trial)

    return list(await asyncio.gather(*(slot(i, t, g) for i, (t, g) in enumerate(trials))))


def summary(results: Sequence[Result]) -> str:
    missed = sum(len(r.missed) for r in results)
    doubled = sum(len(r.doubled) for r in results)
    worst = max((r.worst_after_resume for r in results), default=0.0)
    return (
        f"{len(results)} trials: missed {missed}, doubled {doubled}, "
        f"worst lateness after the process could run again {worst:.2f} s"
    )
