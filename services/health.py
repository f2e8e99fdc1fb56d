"""Health checks: every component checked concurrently, each within its own timeout."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "detail": self.detail,
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


@dataclass(frozen=True)
class _Registered:
    name: str
    check: Check
    critical: bool
    timeout: float


class HealthService:
    """Runs the registered checks; a critical component that is down makes the whole down."""

    def __init__(self, *, default_timeout: float = 3.0) -> None:
        self._checks: list[_Registered] = []
        self._default_timeout = default_timeout

    def register(
        self, name: str, check: Check, *, critical: bool = False, timeout: float | None = None
    ) -> None:
        self._checks.append(_Registered(name, check, critical, timeout or self._default_timeout))

    async def run(self) -> HealthReport:
        results = await asyncio.gather(*(self._run_one(c) for c in self._checks))
        return HealthReport(
            overall(results, {c.name for c in self._checks if c.critical}), results
        )

    async def _run_one(self, registered: _Registered) -> ComponentHealth:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(registered.check(), registered.timeout)
        except TimeoutError:
            result = ComponentHealth(
                registered.name, Status.DOWN, f"no answer within {registered.timeout:g} s"
            )
        except Exception as exc:  # a failing check is a finding, not a crash
            result = ComponentHealth(registered.name, Status.DOWN, _describe(exc))
        elapsed = (time.perf_counter() - started) * 1000
        return ComponentHealth(
            registered.name, result.status, result.detail, result.figures, elapsed
        )


def overall(components: list[ComponentHealth], critical: set[str]) -> Status:
    """Down if a critical component is down; degraded if anything is not healthy."""
    if any(c.status is Status.DOWN and c.name in critical for c in components):
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
# `token:instagram` and `instagram:unauthorized`): the watch would only page twice.
OWN_INCIDENTS = frozenset({"instagram_token"})


class HealthWatch:
    """The scheduled health run: a component down raises `health:<name>`; recovery resolves.

    Degraded (not configured, a warning) neither raises nor resolves.
    """

    def __init__(self, health: HealthService, incidents: Any) -> None:
        self._health = health
        self._incidents = incidents

    async def run(self) -> HealthReport:
        from services.incidents import AlertIn
        from services.severity import Severity

        report = await self._health.run()
        healthy = []
        for component in report.components:
            if component.name in OWN_INCIDENTS:
                continue
            key = f"health:{component.name}"
            if component.status is Status.DOWN:
                await self._incidents.trigger(
                    AlertIn(
                        severity=Severity(COMPONENT_SEVERITY.get(component.name, "P2")),
                        title=f"Health check: {component.name} is down",
                        dedup_key=key,
                        source="health_check",
                        description=component.detail,
                        labels={"component": component.name},
                    ),
                    actor="health_check",
                )
            elif component.status is Status.HEALTHY:
                healthy.append(key)
        # Nearly every run finds everything healthy and nothing open: one read instead of a
        # write transaction per component. Read, not remembered, so that an incident raised
        # before a restart, by another instance or reopened by hand is resolved all the same.
        for key in sorted(await self._incidents.open_dedup_keys(healthy)):
            await self._incidents.resolve_by_dedup_key(key, actor="health_check")
        return report

    def card(self, report: HealthReport) -> str:
        return health_card(report)


_MARK = {Status.HEALTHY: "OK", Status.DEGRADED: "WARN", Status.DOWN: "DOWN"}


def health_card(report: HealthReport) -> str:
    """The bot's compact card: the overall status, then one line per component."""
    lines = [f"Health: {report.status.value}"]
    for c in report.components:
        lines.append(f"{_MARK[c.status]:<4} {c.name}: {c.detail}"[:120])
    return "\n".join(lines)
