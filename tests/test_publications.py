import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from services.clock import FrozenClock
from services.config import Settings
from services.main import open_services
from services.models import PublicationState
from services.publications import (
    STALE_CLAIM,
    PostRecord,
    PublicationService,
    PublishRefused,
    Refusal,
    day_of,
    next_day_start,
    refusal,
)

T0 = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
SEOUL = ZoneInfo("Asia/Seoul")


def record(topic: str, state: str = "posted", day: str = "2026-01-30") -> PostRecord:
    return PostRecord(
        id=1,
        topic=topic,
        day=day,
        state=PublicationState(state),
        claimed_at=T0,
        posted_at=T0 if state == "posted" else None,
        media_id="18000000000000000" if state == "posted" else None,
        trace_id="SF-20260130-090000-abcd",
        forced=False,
    )


@pytest.mark.parametrize(
    ("of_topic", "today", "limit", "force", "expected"),
    [
        ([], [], 1, False, None),
        ([record("lily", "failed")], [record("lily", "failed")], 1, False, None),
        ([record("lily")], [record("lily")], 5, False, Refusal.POSTED),
        ([record("lily", day="2026-01-01")], [], 1, False, Refusal.POSTED),  # any day
        ([record("lily", "interrupted")], [], 5, False, Refusal.INTERRUPTED),
        ([], [record("rose")], 1, False, Refusal.DAILY_LIMIT),
        ([], [record("rose", "interrupted")], 1, False, Refusal.DAILY_LIMIT),
        ([], [record("rose")], 2, False, None),
        ([], [record("rose"), record("tulip", "failed")], 2, False, None),
        ([record("lily")], [record("lily")], 1, True, None),  # --force overrides both
    ],
)
def test_refusal(
    of_topic: list[PostRecord],
    today: list[PostRecord],
    limit: int,
    force: bool,
    expected: Refusal | None,
) -> None:
    found = refusal(
        topic="lily", of_topic=of_topic, today=today, day="2026-01-30", limit=limit, force=force
    )
    assert (found[0] if found else None) is expected


def test_refusals_say_what_and_how() -> None:
    posted = refusal(
        topic="lily", of_topic=[record("lily")], today=[], day="2026-01-30", limit=1, force=False
    )
    assert posted is not None
    assert posted[1] == (
        "lily is already posted (media 18000000000000000, at 2026-01-30 09:00 UTC, trace "
        "SF-20260130-090000-abcd); to post it again, use --force"
    )
    limited = refusal(
        topic="lily", of_topic=[], today=[record("rose")], day="2026-01-30", limit=1, force=False
    )
    assert limited is not None
    assert limited[1] == (
        "the daily limit is reached: 1 of PUBLISH_DAILY_LIMIT=1 on 2026-01-30 (rose); "
        "publish tomorrow, or now with --force"
    )


@pytest.mark.parametrize(
    ("moment", "zone", "day", "next_start"),
    [
        (T0, ZoneInfo("UTC"), "2026-01-30", datetime(2026, 1, 31, tzinfo=UTC)),
        # 16:00 UTC is already the next morning in Seoul.
        (
            datetime(2026, 1, 30, 16, 0, tzinfo=UTC),
            SEOUL,
            "2026-01-31",
            datetime(2026, 1, 31, 15, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 1, 30, 14, 59, tzinfo=UTC),
            SEOUL,
            "2026-01-30",
            datetime(2026, 1, 30, 15, 0, tzinfo=UTC),
        ),
    ],
)
def test_days_in_the_publishing_time_zone(
    moment: datetime, zone: ZoneInfo, day: str, next_start: datetime
) -> None:
    assert day_of(moment, zone) == day
    assert next_day_start(moment, zone) == next_start


async def test_a_claim_is_checked_and_taken_at_once(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        posts = PublicationService(services.db, clock, zone=ZoneInfo("UTC"), daily_limit=1)
        claim = await posts.claim("lily", actor="test", force=False)
        # While it is in flight, nothing else publishes (the guards would race).
        with pytest.raises(PublishRefused) as busy:
            await posts.claim("rose", actor="test", force=True)
        assert busy.value.reason is Refusal.BUSY and busy.value.retry_at is not None
        await posts.posted(claim, media_id="1", trace_id="SF-20260130-090000-abcd")
        with pytest.raises(PublishRefused) as again:
            await posts.claim("lily", actor="test", force=False)
        assert again.value.reason is Refusal.POSTED
        with pytest.raises(PublishRefused) as limited:
            await posts.claim("rose", actor="test", force=False)
        assert limited.value.reason is Refusal.DAILY_LIMIT
        assert limited.value.retry_at == datetime(2026, 1, 31, tzinfo=UTC)
        # A failed run releases its claim; tomorrow counts afresh.
        clock.advance(days=1)
        failed = await posts.claim("rose", actor="test", force=False)
        await posts.not_posted(failed, trace_id=None)
        assert await posts.check("rose") is None


async def test_a_crashed_claim_blocks_the_topic_until_forced(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        posts = PublicationService(services.db, clock, zone=ZoneInfo("UTC"), daily_limit=5)
        await posts.claim("lily", actor="crashed", force=False)  # never settled
        clock.advance(seconds=STALE_CLAIM.total_seconds() + 1)
        with pytest.raises(PublishRefused, match="interrupted") as refused:
            await posts.claim("lily", actor="test", force=False)
        assert refused.value.reason is Refusal.INTERRUPTED
        assert (await posts.of_topic("lily"))[0].state is PublicationState.INTERRUPTED
        # Other topics go on; a person who checked the account forces the topic.
        await posts.posted(
            await posts.claim("rose", actor="test", force=False),
            media_id="2",
            trace_id="SF-20260130-091600-beef",
        )
        forced = await posts.claim("lily", actor="test", force=True)
        assert forced > 0


async def test_racing_claims_post_once(settings: Settings) -> None:
    clock = FrozenClock(T0)
    async with open_services(settings, clock=clock) as services:
        posts = PublicationService(services.db, clock, zone=ZoneInfo("UTC"), daily_limit=5)
        results = await asyncio.gather(
            *(posts.claim("lily", actor=f"run {i}", force=False) for i in range(5)),
            return_exceptions=True,
        )
        claims = [r for r in results if isinstance(r, int)]
        refused = [r for r in results if isinstance(r, PublishRefused)]
        assert len(claims) == 1 and len(refused) == 4
        assert {r.reason for r in refused} == {Refusal.BUSY}
