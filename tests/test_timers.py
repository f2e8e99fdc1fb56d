from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from services.clock import SystemClock
from services.health import Status
from services.incident_types import AlertIn
from services.leader import Duties, Leadership, LeaseStore
from services.main import open_services
from services.models import Lease
from services.severity import Severity
from services.timers import Alarm, EscalationTimer
from tests.conftest import Client, make_settings
from tests.waiting import until

POLICY = """
[[ladder.default]]
name = "team"
after = "0s"
target = "team"

[[ladder.default]]
name = "page"
after = "1s"
target = "team"
"""


async def test_alarm_wakes_only_for_an_earlier_time() -> None:
    alarm = Alarm()
    alarm.planned = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    alarm.hint(datetime(2026, 12, 6, 3, 30, tzinfo=UTC))  # later than planned: no wake-up
    assert await alarm.wait(0.05) is False  # it ran out its time
    alarm.hint(datetime(2026, 12, 6, 2, 59, tzinfo=UTC))
    assert await alarm.wait(60) is True  # woken by the earlier hint


async def test_an_overdue_step_shows_in_health_and_metrics_until_it_fires(
    migrated_url: str, tmp_path: Path
) -> None:
    """The watchdog: while another holder keeps the lease, this instance fires nothing, and
    its health and metric say a step is overdue; once it leads, the step fires."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    settings = make_settings(migrated_url, escalation_policy_file=policy)
    async with open_services(settings) as services:
        ghost = LeaseStore(
            services.db, SystemClock(), name="scheduler", holder="ghost", ttl=timedelta(hours=1)
        )
        assert await ghost.acquire() is not None
        leadership = Leadership(
            LeaseStore(
                services.db, SystemClock(), name="scheduler", holder="me", ttl=timedelta(seconds=3)
            )
        )
        timer = EscalationTimer(
            services.escalation,
            services.incidents,
            services.alarm,
            services.clock,
            gate=leadership,
            sweep_seconds=0.3,
        )

        async def gained() -> None:
            timer.lead()

        await leadership.start(Duties(gained=gained))
        timer.start()
        try:
            assert not leadership.is_leader
            incident = (
                await services.incidents.trigger(AlertIn(Severity.P1, "x", "k", "test"))
            ).incident

            async def overdue() -> bool:
                return (await timer.check()).status is Status.DEGRADED

            assert await until(overdue)
            health = await timer.check()
            assert health.figures["overdue"] == 1
            assert health.figures["oldest_incident"] == incident.id
            assert "follows" in health.detail
            assert "sunflow_escalation_overdue_steps 1.0" in services.metrics.render().decode()

            # The other holder goes away: this instance leads, and the step fires, late.
            async with services.db.write() as session:
                await session.execute(
                    update(Lease).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                )

            async def fired() -> bool:
                detail = await services.incidents.get(incident.id)
                return any(e.details.get("step") == "page" for e in detail.timeline)

            assert await until(fired)

            async def healthy() -> bool:
                return (await timer.check()).status is Status.HEALTHY

            assert await until(healthy)
            assert "sunflow_escalation_overdue_steps 0.0" in services.metrics.render().decode()
        finally:
            await timer.stop()
            await leadership.stop()


async def test_health_has_an_escalation_component(client: Client) -> None:
    response = await client.get("/api/health")
    body = await response.json()
    assert body["components"]["escalation"]["status"] == "healthy"
    assert body["components"]["escalation"]["overdue"] == 0
