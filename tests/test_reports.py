from datetime import UTC, datetime, timedelta

import pytest

from services.clock import FrozenClock
from services.incident_types import AlertIn
from services.main import open_services
from services.reports import chart_png, response_stats, summary_text
from services.severity import Severity
from tests.conftest import make_settings
from tests.test_bot_language import HANGUL, leaks
from tests.test_locales import english

T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("samples", "mean", "p90"),
    [
        ([], None, None),
        ([10 * M], 10 * M, 10 * M),
        ([M * i for i in range(1, 11)], timedelta(minutes=5.5), 9 * M),
        ([M, M, 30 * M], 32 * M / 3, 30 * M),
    ],
)
def test_response_stats(
    samples: list[timedelta], mean: timedelta | None, p90: timedelta | None
) -> None:
    stats = response_stats(samples)
    assert (stats.count, stats.mean, stats.p90) == (len(samples), mean, p90)


async def test_weekly_report(migrated_url: str) -> None:
    clock = FrozenClock(T0)
    async with open_services(make_settings(migrated_url), clock=clock) as services:
        noisy = AlertIn(Severity.P2, "stats collection failing", "stats")
        first = (await services.incidents.trigger(noisy)).incident.id
        for _ in range(4):
            await services.incidents.trigger(noisy)
        clock.advance(minutes=10)
        await services.incidents.acknowledge(first, actor="a")
        clock.advance(minutes=20)
        await services.incidents.resolve(first, actor="a")
        clock.set(T0 + timedelta(days=2))
        await services.incidents.trigger(AlertIn(Severity.P0, "token expired", "tok"))
        clock.advance(minutes=6)
        await services.escalation.fire_due(services.incidents)
        clock.set(T0 - timedelta(days=3))  # outside the week
        await services.incidents.trigger(AlertIn(Severity.P3, "old", "old"))
        clock.set(T0 + timedelta(days=6))
        report = await services.reports.weekly()
    assert report.by_severity == {Severity.P0: 1, Severity.P1: 0, Severity.P2: 1, Severity.P3: 0}
    assert report.acknowledge[Severity.P2].mean == 10 * M
    assert report.resolve[Severity.P2].p90 == 30 * M
    assert report.deadlines_missed[Severity.P0] == 1
    assert report.noisy_keys == [("stats", "stats collection failing", 5)]
    assert report.still_open == 2
    text = summary_text(report, language="en")
    assert "Incidents: 2 (P0 1, P1 0, P2 1, P3 0)" in text
    assert "Deadlines missed: 1" in text
    assert "5× stats collection failing (stats)" in text
    korean = summary_text(report, language="ko")
    assert "주간 장애 보고서" in korean and "대응 기한 초과: 1" in korean
    # One language: the alert's own title and key stay as written, every other word is Korean.
    assert leaks([korean], ["stats collection failing", "stats"], english) == {}
    assert leaks([text], [], lambda p: set(HANGUL.findall(p))) == {}
    png = chart_png(report)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 5000
