"""bot.limits: Telegram's sending limits as sliding windows, urgent messages keeping room."""

from __future__ import annotations

import pytest

from bot.limits import SlidingWindow, TelegramLimits
from tests.botkit import PD_USER, TEAM


@pytest.mark.parametrize(
    ("sent_at", "now", "reserve", "wait"),
    [
        ([], 0.0, 0, 0.0),
        ([0.0], 0.5, 0, 0.5),
        ([0.0], 1.0, 0, 0.0),
        ([0.0, 0.1], 0.2, 1, 0.9),  # limit 2, one kept free: wait for the newest
        ([0.0, 0.1], 0.2, 0, 0.8),
        ([0.0], 0.2, 0, 0.0 + 0.8),
    ],
)
def test_sliding_window(sent_at: list[float], now: float, reserve: int, wait: float) -> None:
    window = SlidingWindow(2 if len(sent_at) > 1 or reserve else 1, 1.0)
    for moment in sent_at:
        window.record(moment)
    assert window.wait(now, reserve=reserve) == pytest.approx(wait)


def test_group_limits_keep_room_for_urgent_alerts() -> None:
    limits = TelegramLimits(group_per_minute=20, margin=0.0)
    for second in range(16):
        assert limits.wait(TEAM, 3, float(second * 2)) == 0.0
        limits.record(TEAM, float(second * 2))
    now = 40.0
    assert limits.wait(TEAM, 3, now) > 0  # P3 must wait: 4 slots are kept for P0/P1
    assert limits.wait(TEAM, 0, now) == 0.0
    assert limits.wait(PD_USER, 3, now) == 0.0  # another chat is not held up
