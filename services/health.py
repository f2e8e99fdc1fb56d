"""Health checks: every component checked concurrently, each within its own timeout."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


class Status(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def exit_code(self) -> int:
        return {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.DOWN: 2}[self]


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    status: Status
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0
    # What `detail` says, as a code and its values (`stats_age`, {"minutes": 12}): a chat
    # renders it in its own language; `detail` is the English of the API and the CLI.
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "detail": self.detail,
            "reason": self.reason,
            "elapsed_ms": round(self.elapsed_ms, 1),
            **self.figures,
        }


@dataclass(frozen=True)
class HealthReport:
    status: Status
    components: list[ComponentHealth]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "components": {c.name: c.to_json() for c in self.components},
        }


Check = Callable[[], Awaitable[ComponentHealth]]
# The open incidents that name a component (label `component`): its worst severity first,
# as (severity "P0".."P3", incident id) per component name.
OpenIncidents = Callable[[], Awaitable[dict[str, tuple[str, int]]]]


DEFAULT_TIMEOUT = 3.0


@dataclass(frozen=True)
class HealthCheck:
    """One component in the report: its check, whether the whole is down when it is, and
    how long its check may take."""

    name: str
    check: Check
    critical: bool = False
    timeout: float = DEFAULT_TIMEOUT


class HealthService:
    """Runs its checks; a critical component that is down makes the whole down."""

    def __init__(
        self, checks: Sequence[HealthCheck], *, open_incidents: OpenIncidents | None = None
    ) -> None:
        self._checks = list(checks)
        # A component with an open P0 is down, whatever its probe says (the outage is real
        # until the incident is resolved).
        self.open_incidents = open_incidents

    async def run(self, *, with_incidents: bool = True) -> HealthReport:
        """Every check at once. With `with_incidents`, the open incidents naming a component
        weigh in (`with_open_incidents`); the health watch runs without them, so that it
        resolves what the probes say has recovered."""
        results = list(await asyncio.gather(*(self._run_one(c) for c in self._checks)))
        if with_incidents and self.open_incidents is not None:
            results = with_open_incidents(results, await self.open_incidents())
        return HealthReport(overall(results, self.critical), results)

    @property
    def critical(self) -> set[str]:
        return {c.name for c in self._checks if c.critical}

    async def _run_one(self, check: HealthCheck) -> ComponentHealth:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout):
                result = await check.check()
        except TimeoutError:
            result = ComponentHealth(
                check.name,
                Status.DOWN,
                f"no answer within {check.timeout:g} s",
                reason="timeout",
                params={"seconds": f"{check.timeout:g}"},
            )
        except Exception as exc:  # a failing check is a finding, not a crash
            error = _describe(exc)
            result = ComponentHealth(
                check.name, Status.DOWN, error, reason="error", params={"error": error}
            )
        elapsed = (time.perf_counter() - started) * 1000
        return replace(result, name=check.name, elapsed_ms=elapsed)


def with_open_incidents(
    components: list[ComponentHealth], open_incidents: dict[str, tuple[str, int]]
) -> list[ComponentHealth]:
    """A component with an open P0 incident is down, whatever its probe says: the playbook's
    "service down" lasts until someone resolves it (P1-P3 leave the probe's verdict)."""
    adjusted = []
    for c in components:
        found = open_incidents.get(c.name)
        if found is None or found[0] != "P0":
            adjusted.append(c)
            continue
        severity, incident_id = found
        named = f"#{incident_id}" in c.detail
        detail = c.detail if named else f"{c.detail}; open P0 incident #{incident_id}".lstrip("; ")
        figures = {**c.figures, "incident": incident_id, "incident_severity": severity}
        adjusted.append(replace(c, status=Status.DOWN, detail=detail, figures=figures))
    return adjusted


def overall(components: list[ComponentHealth], critical: set[str]) -> Status:
    """Down if a component that the service cannot do without is down (checked as critical,
    or P0 in the playbook: database, Cloudinary, the token, or any with an open P0 incident);
    degraded if anything is not healthy."""
    for c in components:
        if c.status is not Status.DOWN:
            continue
        if (
            c.name in critical
            or COMPONENT_SEVERITY.get(c.name) == "P0"
            or c.figures.get("incident_severity") == "P0"
        ):
            return Status.DOWN
    if any(c.status is not Status.HEALTHY for c in components):
        return Status.DEGRADED
    return Status.HEALTHY


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


# The playbook's severity for each component when its check says down.
COMPONENT_SEVERITY: dict[str, str] = {
    "database": "P0",
    "cloudinary": "P0",
    "fal": "P1",
    "scheduler": "P1",
    "telegram": "P2",
    "stats": "P2",
    "sse": "P1",
    # REDIS_URL set and Redis down: job events cannot be published.
    "redis": "P1",
}


# Components whose service raises and resolves its own incidents (the token monitor's
# `token:instagram` and `instagram:unauthorized`, the pipeline's Instagram incidents): the
# watch would only page twice.
OWN_INCIDENTS = frozenset({"instagram_token", "instagram"})

# Components whose outage the pipeline pages for under its own key the moment a real call
# fails: the watch uses the same key, so one outage is one incident whoever notices first.
SHARED_KEYS: dict[str, str] = {
    "cloudinary": "cloudinary:upload",
    "fal": "fal:generate",
    "stats": "stats:collector",
}


def incident_key(component: str) -> str:
    return SHARED_KEYS.get(component, f"health:{component}")


class HealthWatch:
    """The scheduled health run: a component down raises its incident; recovery resolves.

    Degraded (not configured, a warning) neither raises nor resolves. An incident already
    open is not triggered again each minute (its card would be edited every run).
    """

    def __init__(self, health: HealthService, incidents: Any) -> None:
        self._health = health
        self._incidents = incidents

    async def run(self) -> HealthReport:
        from services.incident_types import AlertIn, wording
        from services.severity import Severity

        report = await self._health.run(with_incidents=False)
        down: dict[str, ComponentHealth] = {}
        healthy = []
        for component in report.components:
            if component.name in OWN_INCIDENTS:
                continue
            key = incident_key(component.name)
            if component.status is Status.DOWN:
                down[key] = component
            elif component.status is Status.HEALTHY:
                healthy.append(key)
        # Nearly every run finds everything healthy and nothing open: one read instead of a
        # write transaction per component. Read, not remembered, so that an incident raised
        # before a restart, by another instance or reopened by hand is resolved all the same.
        already = await self._incidents.open_dedup_keys(sorted(down)) if down else set()
        for key, component in sorted(down.items()):
            if key in already:
                continue
            await self._incidents.trigger(
                AlertIn(
                    severity=Severity(COMPONENT_SEVERITY.get(component.name, "P2")),
                    title=f"Health check: {component.name} is down",
                    dedup_key=key,
                    source="health_check",
                    description=component.detail,
                    labels={"component": component.name},
                    # The finding as /health words it (bot/render.py `health_detail`).
                    wording=wording(
                        "health",
                        name=component.name,
                        detail=component.detail,
                        finding=component.reason,
                        values=component.params,
                    ),
                ),
                actor="health_check",
            )
        for key in sorted(await self._incidents.open_dedup_keys(healthy)):
            await self._incidents.resolve_by_dedup_key(key, actor="health_check")
        return await self._health_report(report)

    async def _health_report(self, report: HealthReport) -> HealthReport:
        """The report as `health` shows it (open incidents weighing in), for the callers."""
        opened = self._health.open_incidents
        if opened is None:
            return report
        components = with_open_incidents(report.components, await opened())
        return HealthReport(overall(components, self._health.critical), components)

    def card(self, report: HealthReport) -> str:
        return health_card(report)


_MARK = {Status.HEALTHY: "OK", Status.DEGRADED: "WARN", Status.DOWN: "DOWN"}


def health_card(report: HealthReport) -> str:
    """The bot's compact card: the overall status, then one line per component."""
    lines = [f"Health: {report.status.value}"]
    for c in report.components:
        lines.append(f"{_MARK[c.status]:<4} {c.name}: {c.detail}"[:120])
    return "\n".join(lines)
