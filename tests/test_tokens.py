from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.errors import InvalidInput
from services.models import IncidentState
from services.severity import Severity
from services.tokens import EXPIRY_KEY, TokenState, TokenStatus, token_state
from tests.fakes.world import TOKEN, pipeline_world

NOW = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
D = timedelta(days=1)


@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [
        (None, TokenState.UNKNOWN),
        (NOW + 60 * D, TokenState.OK),
        (NOW + 14 * D + timedelta(seconds=1), TokenState.OK),
        (NOW + 14 * D, TokenState.WARNING),
        (NOW + 4 * D, TokenState.WARNING),
        (NOW + 3 * D, TokenState.CRITICAL),
        (NOW + timedelta(hours=1), TokenState.CRITICAL),
        (NOW, TokenState.EXPIRED),
        (NOW - D, TokenState.EXPIRED),
    ],
)
def test_token_state(expires_at: datetime | None, expected: TokenState) -> None:
    got = token_state(expires_at=expires_at, now=NOW, warning_days=14, critical_days=3)
    assert got is expected


async def test_daily_check_raises_p2_p1_p0_then_renewal_resolves(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path, instagram_app_id=None) as world:
        tokens, incidents, clock = world.services.ops.tokens, world.services.incidents, world.clock
        status = await tokens.set_expiry(None, actor="test")
        assert status.state is TokenState.OK and status.days_left == 60
        assert status.live is None  # no app credentials: no live check
        seen = []
        for day in (46, 11, 2):  # 14, 3 and 1 days left, then expired
            clock.advance(days=day)
            status = await tokens.check()
            [open_incident] = await incidents.list(states=[IncidentState.TRIGGERED])
            seen.append((status.state, open_incident.severity))
        clock.advance(days=2)
        status = await tokens.check()
        [open_incident] = await incidents.list(states=[IncidentState.TRIGGERED])
        seen.append((status.state, open_incident.severity))
        assert seen == [
            (TokenState.WARNING, Severity.P2),
            (TokenState.CRITICAL, Severity.P1),
            (TokenState.CRITICAL, Severity.P1),
            (TokenState.EXPIRED, Severity.P0),
        ]
        assert open_incident.dedup_key == EXPIRY_KEY
        assert open_incident.occurrence_count == 4  # one incident, raised in severity
        # Its title follows the severity: not "warning: 14 days left" at P0.
        assert open_incident.title == "Instagram token expired"
        timeline = (await incidents.get(open_incident.id)).timeline
        renamed = [e.details.get("title") for e in timeline if e.kind == "deduplicated"]
        assert [t["to"] for t in renamed if isinstance(t, dict)] == [
            "Instagram token critical: 3 days left",
            "Instagram token expired",
        ]
        assert "set-expiry 60" in (await incidents.get(open_incident.id)).incident.description
        # Renewed: set-expiry resolves it.
        await tokens.set_expiry(60, actor="test")
        assert await incidents.list(states=[IncidentState.TRIGGERED]) == []
        report = await tokens.weekly_report()
        assert "ok" in report and "60 days left" in report


async def test_live_check_through_debug_token(migrated_url: str, tmp_path: Path) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        tokens = world.services.ops.tokens
        world.instagram.token_expires_at = int((world.clock.now() + 20 * D).timestamp())
        status = await tokens.status()
        # No expiry registered: the live check's expiry is used.
        assert status.live is not None and status.live.valid
        assert status.state is TokenState.OK and status.days_left == 20
        assert "GET /v21.0/debug_token" in world.instagram.requests
        world.instagram.valid_tokens.clear()
        status = await tokens.status()
        assert status.state is TokenState.EXPIRED
        assert status.live is not None and "expired" in status.live.detail.lower()


@pytest.mark.parametrize("days", [0, 366, -1])
async def test_set_expiry_refuses_bad_days(migrated_url: str, tmp_path: Path, days: int) -> None:
    async with pipeline_world(migrated_url, tmp_path) as world:
        with pytest.raises(InvalidInput, match="1 to 365 days"):
            await world.services.ops.tokens.set_expiry(days, actor="test")


async def test_guide_follows_the_playbook() -> None:
    from services.locales import LANGUAGES
    from services.tokens import guide

    for text in map(guide, LANGUAGES):
        for needle in ("developers.facebook.com", ".env", "set-expiry 60", "--retry"):
            assert needle in text


async def test_restart_needed_when_env_changes_under_the_service(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INSTAGRAM_ACCESS_TOKEN", raising=False)
    async with pipeline_world(migrated_url, tmp_path) as world:
        tokens = world.services.ops.tokens
        env = world.settings.env_file_path
        assert not (await tokens.status()).restart_needed  # no .env at all
        env.write_text(f"FAL_KEY=x\ninstagram_access_token='{TOKEN}'\n")
        assert not (await tokens.status()).restart_needed  # the same token
        env.write_text('INSTAGRAM_ACCESS_TOKEN="IGQVJ-renewed-0002"\n')
        status = await tokens.status()
        assert status.restart_needed
        assert status.to_json()["restart_needed"] is True
        assert "IGQVJ-renewed-0002" not in status.text() + str(status.to_json())
        health = await tokens.health()
        assert health.status.value == "degraded" and "restart needed" in health.detail
        # The CLI reads the service's answer back as the same status.
        assert TokenStatus.from_json(status.to_json()) == status


async def test_a_401_with_no_live_check_is_expired_for_status_and_health(
    migrated_url: str, tmp_path: Path
) -> None:
    async with pipeline_world(migrated_url, tmp_path, instagram_app_id=None) as world:
        tokens = world.services.ops.tokens
        await tokens.set_expiry(60, actor="test")
        incident_id = await tokens.unauthorized(where="publishing")
        status = await tokens.status()
        assert status.state is TokenState.EXPIRED
        assert status.unauthorized_incident == incident_id
        assert f"incident #{incident_id}" in status.text()
        health = await tokens.health()
        assert health.status.value == "down" and f"incident #{incident_id}" in health.detail
        # The daily check opens no second P0 for the same token.
        await tokens.check()
        open_keys = {
            v.dedup_key
            for v in await world.services.incidents.list(states=[IncidentState.TRIGGERED])
        }
        assert open_keys == {"instagram:unauthorized"}
