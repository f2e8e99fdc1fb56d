"""services.notify.storm: the fold decision as a table, and storms through the fake Bot API
(Telegram's limits enforced) in both languages."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.callbacks import DigestAction, DigestCallback, IncidentAction
from bot.locales import Catalogue
from services.clock import FrozenClock
from services.container import Services
from services.incident_types import AlertIn
from services.main import open_services
from services.models import IncidentState, OutboxMessage, OutboxStatus, StormDigest
from services.notify.outbox import Op, Pending
from services.notify.storm import ChatBacklog, StormPlan, digest_slots, plan
from services.severity import Severity
from tests.botkit import RESPONDER, TEAM, TOKEN, VIEWER, bot_settings, running_fake
from tests.conftest import Client, free_port, intake_headers
from tests.fakes.telegram import FakeTelegram, Posted
from tests.test_bot_e2e import button, drained, live
from tests.test_bot_language import HANGUL, leaks, sent_texts
from tests.test_locales import english

LANGUAGES = ["en", "ko"]
START = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


def backlog(
    new: int, other: int = 0, room: int = 16, *, storm: bool = False, slots: int = 6
) -> ChatBacklog:
    return ChatBacklog(
        new=new, other=other, room=room, capacity=16, storm=storm, digest_slots=slots
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # Quiet: what fits in the group's minute goes as cards.
        (backlog(0), StormPlan()),
        (backlog(16), StormPlan()),
        (backlog(10, other=6), StormPlan()),
        # What a whole minute carries is not a storm, even when this minute is spent (after
        # an outage, say): the cards wait for the window.
        (backlog(12, room=0), StormPlan()),
        (backlog(16, room=3), StormPlan()),
        # One card alone never folds: a digest would cost the same message.
        (backlog(1, other=20, room=0), StormPlan()),
        # More than the minute carries: the digest keeps its slots, the rest of the room
        # goes to the first cards, everything after them folds.
        (backlog(17), StormPlan(fold=7)),
        (backlog(50), StormPlan(fold=40)),
        (backlog(11, other=6), StormPlan(fold=7)),
        (backlog(17, room=3), StormPlan(fold=17)),
        (backlog(2, other=16, room=0), StormPlan(fold=2)),
        # During a storm new cards fold unless the room beside the digest's slots holds them.
        (backlog(3, room=16, storm=True), StormPlan()),
        (backlog(3, room=8, storm=True), StormPlan(fold=1)),
        (backlog(3, room=2, storm=True), StormPlan(fold=3)),
        (backlog(3, other=20, room=16, storm=True), StormPlan(fold=3)),
        # The storm's queue drained: close the digest.
        (backlog(0, room=0, storm=True), StormPlan(close=True)),
        (backlog(0, other=1, room=0, storm=True), StormPlan()),
    ],
)
def test_plan(given: ChatBacklog, expected: StormPlan) -> None:
    assert plan(given) == expected


@pytest.mark.parametrize(
    ("seconds", "slots"), [(10, 6), (60, 1), (600, 1), (2, 8), (7, 8), (15, 4)]
)
def test_digest_slots(seconds: float, slots: int) -> None:
    assert digest_slots(timedelta(seconds=seconds)) == slots


# -- through the fake Bot API ---------------------------------------------------------------


async def storm(client: Client, n: int, *, prefix: str = "storm") -> list[int]:
    """`n` distinct P2 alerts in one intake call: one burst."""
    alerts = [
        {
            "severity": "P2",
            "title": f"{prefix} {i}",
            "dedup_key": f"{prefix}-{i}",
            "source": "stats" if i % 3 else "cdn",
        }
        for i in range(n)
    ]
    resp = await client.post("/api/alerts", json=alerts, headers=intake_headers())
    assert resp.status == 202, await resp.text()
    return [int(i["id"]) for i in (await resp.json())["incidents"]]


async def alert(client: Client, title: str, severity: str) -> int:
    body = {"severity": severity, "title": title, "dedup_key": title, "source": "test"}
    resp = await client.post("/api/alerts", json=body, headers=intake_headers())
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["incidents"][0]["id"])


def callbacks(posted: Posted) -> list[str]:
    rows = (posted.reply_markup or {}).get("inline_keyboard", [])
    return [str(b.get("callback_data", "")) for row in rows for b in row]


def is_digest(posted: Posted) -> bool:
    return any(data.startswith("dg:l:") for data in callbacks(posted))


def digests(fake: FakeTelegram) -> list[Posted]:
    return [p for p in fake.in_chat(TEAM) if is_digest(p)]


def card_of(fake: FakeTelegram, incident_id: int) -> Posted | None:
    """The incident's own card: its Details button is on no other message."""
    for posted in fake.in_chat(TEAM):
        if posted.reply_to is None and f"inc:d:{incident_id}:0" in callbacks(posted):
            return posted
    return None


def shown_total(posted: Posted) -> int:
    match = re.search(r"<b>(\d+)</b>", posted.text.split("\n", 1)[0])
    assert match is not None, posted.text
    return int(match.group(1))


def visible(fake: FakeTelegram, ids: list[int]) -> bool:
    """Every alert shows in the chat: its own card, or counted in a digest."""
    carded = sum(1 for i in ids if card_of(fake, i) is not None)
    return carded + sum(shown_total(d) for d in digests(fake)) >= len(ids)


def sent_index(fake: FakeTelegram, matches: Callable[[Any], bool]) -> int:
    for index, call in enumerate(fake.calls):
        if call.status == 200 and matches(call):
            return index
    raise AssertionError("no such call")


async def folded_ids(services: Services) -> set[int]:
    from sqlalchemy import select

    from services.models import StormEntry

    async with services.db.read() as session:
        return set(await session.scalars(select(StormEntry.incident_id)))


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_storm_folds_into_one_digest(migrated_url: str, language: str) -> None:
    t = Catalogue(language).t
    async with (
        running_fake(enforce_limits=True) as fake,
        live(migrated_url, fake, bot_language=language, telegram_digest_edit_seconds=2) as (
            services,
            client,
        ),
    ):
        ids = await storm(client, 50)
        # A P0 in the middle of the storm gets its own card ahead of the waiting P2 cards.
        p0 = await alert(client, "publishing down", "P0")
        first = await fake.wait_for(lambda: card_of(fake, ids[0]))
        # An Ack on an older card: its edit goes ahead of the storm's new cards.
        await fake.press(RESPONDER, first, button(IncidentAction.ACK, ids[0]))
        await fake.wait_for(lambda: f"tg:{RESPONDER}" in first.text)
        acked_at = sent_index(
            fake,
            lambda c: c.method == "editMessageText" and c.params["message_id"] == first.message_id,
        )
        await fake.wait_for(lambda: digests(fake) and visible(fake, ids))
        carded = [i for i in ids if card_of(fake, i) is not None]
        p0_card = card_of(fake, p0)
        assert p0_card is not None and "<b>P0</b>" in p0_card.text
        last_card = max(card_of(fake, i).message_id for i in carded)  # type: ignore[union-attr]
        assert p0_card.message_id < last_card
        assert acked_at < sent_index(
            fake,
            lambda c: c.method == "sendMessage" and f"#{carded[-1]} storm" in c.params["text"],
        )
        # One digest for the storm, in the chat's language, holding the rest.
        [digest] = digests(fake)
        folded = await folded_ids(services)
        assert len(carded) + len(folded) == 50 and not folded & set(carded)
        assert t("storm.title", total=len(folded)) in digest.text
        assert t("storm.newest") in digest.text and f"#{ids[-1]} storm 49" in digest.text
        assert "🟡 P2 50" not in digest.text and f"🟡 P2 {len(folded)}" in digest.text

        # A folded incident that repeats updates the digest, not a card of its own.
        repeated = max(folded)
        edits = digest.edits
        resp = await client.post(
            "/api/alerts",
            json={"severity": "P2", "title": "again", "dedup_key": f"storm-{ids.index(repeated)}"},
            headers=intake_headers(),
        )
        assert resp.status == 202
        await fake.wait_for(lambda: digest.edits > edits)

        # The list under the digest; an entry opened from it is posted as its own card.
        [digest_id] = [int(d.split(":")[2]) for d in callbacks(digest) if d.startswith("dg:l:")]
        await fake.press(
            VIEWER, digest, DigestCallback(action=DigestAction.LIST, id=digest_id).pack()
        )
        listing = await fake.wait_for(
            lambda: [p for p in fake.in_chat(TEAM) if p.reply_to == digest.message_id]
        )
        entry = f"dg:o:{repeated}:0"
        assert entry in callbacks(listing[0])
        assert t("storm.list.title", total=len(folded), first=1, last=8) in listing[0].text
        await fake.press(VIEWER, listing[0], entry)
        opened = await fake.wait_for(lambda: card_of(fake, repeated))
        assert button(IncidentAction.ACK, repeated) in callbacks(opened)
        # Paging the list edits it in place.
        await fake.press(VIEWER, listing[0], f"dg:p:{digest_id}:1")
        await fake.wait_for(lambda: listing[0].edits == 1)

        # A person acting on a folded incident by id gets its card too.
        by_id = min(folded - {repeated})
        await fake.send_text(RESPONDER, TEAM, f"/ack {by_id}")
        acked = await fake.wait_for(lambda: card_of(fake, by_id))
        await fake.wait_for(lambda: f"tg:{RESPONDER}" in acked.text)

        # The queue drains: the digest is closed and shows the latest counts; only edited.
        over = t("storm.closed", since="", at="").split("(")[0]
        # Two of its alerts have their own card now; one folded alert came twice.
        final = t(
            "storm.states",
            open=len(folded),
            resolved=0,
            carded=2,
            occurrences=len(folded) + 1,
        )
        # The digest's edits are P2/P3 work: when the group's minute has no room left for them
        # (a slow run fits one more edit in a pause between the steps above, and a responder
        # slower than that closes the storm before the /ack), the last one waits for the
        # window to slide, up to a minute; the person's own messages above never wait.
        await fake.wait_for(lambda: over in digest.text and final in digest.text, timeout=75)
        await drained(services)
        assert len(digests(fake)) == 1
        digest_posts = [c for c in fake.sent() if "dg:l:" in str(c.params.get("reply_markup"))]
        assert len(digest_posts) == 1
        assert fake.rate_limited == 0
        # No message mixes languages: the digest, its list, the cards, the answers.
        views = await services.incidents.list(states=list(IncidentState))
        content = sorted(
            {v.title for v in views} | {v.source for v in views} | {v.dedup_key for v in views},
            key=len,
            reverse=True,
        )
        if language == "ko":
            assert leaks(sent_texts(fake), content, english) == {}
        else:
            assert leaks(sent_texts(fake), content, lambda p: set(HANGUL.findall(p))) == {}
        view = await services.incidents.get(ids[0])
        assert view.incident.state is IncidentState.ACKNOWLEDGED


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_restart_mid_storm_keeps_every_alert_visible(
    migrated_url: str, language: str
) -> None:
    # A stricter group budget than Telegram's: the storm folds after fewer cards.
    settings = {
        "bot_language": language,
        "telegram_digest_edit_seconds": 2,
        "telegram_rate_group_per_minute": 12,
    }
    async with running_fake(enforce_limits=True) as fake:
        async with live(migrated_url, fake, **settings) as (_, client):
            ids = await storm(client, 30)
            await fake.wait_for(lambda: digests(fake))
            # More arrive than a minute carries; the process stops before it has shown them.
            ids += await storm(client, 20, prefix="late")
        async with live(migrated_url, fake, **settings) as (services, _):
            await fake.wait_for(lambda: visible(fake, ids), timeout=30)
            await drained(services)
            folded = await folded_ids(services)
        carded = {i for i in ids if card_of(fake, i) is not None}
        assert carded | folded == set(ids)
        # What the digests show adds up to what was folded; none was posted twice (the new
        # process edits the message the old one posted).
        assert sum(shown_total(d) for d in digests(fake)) == len(folded)
        posts = [c for c in fake.sent() if "dg:l:" in str(c.params.get("reply_markup"))]
        assert len(posts) == len(digests(fake))


async def test_the_sender_chooses_from_its_one_read_as_from_a_read_after_settle(
    migrated_url: str,
) -> None:
    """The sender reads the pending rows once a step; what settle took and queued leaves the
    list a read after settle would give (no sender runs: the fake is never started)."""
    fake = FakeTelegram(TOKEN)
    fake.port = free_port()
    settings = bot_settings(migrated_url, fake)
    async with open_services(settings, clock=FrozenClock(START)) as services:
        sender, storms = services.notify.sender, services.notify.storms
        assert sender is not None
        for i in range(20):
            await services.incidents.trigger(AlertIn(Severity.P2, f"storm {i}", f"storm-{i}"))
        await services.incidents.trigger(AlertIn(Severity.P0, "publishing down", "pub"))
        pending = await sender.pending()
        # A whole minute's room: 20 new P2 cards are more than it carries, so the last 10
        # fold (6 of the 16 are kept for the digest's edits); the P0 never folds.
        settled = await storms.settle(pending, lambda chat_id: (16, 16))
        async with services.db.read() as session:
            folded = set(
                await session.scalars(
                    select(OutboxMessage.id).where(
                        OutboxMessage.status == OutboxStatus.FOLDED.value
                    )
                )
            )
            queued = list(
                await session.scalars(select(OutboxMessage).where(OutboxMessage.op == Op.DIGEST))
            )
            [digest_id] = await session.scalars(select(StormDigest.id))
        p2_cards = [r.id for r in pending if r.op == Op.CARD and r.priority == Severity.P2.rank]
        assert len(p2_cards) == 20
        assert settled.taken == folded == set(p2_cards[10:])
        assert [(r.id, r.op, r.digest_id) for r in settled.queued] == [
            (queued[0].id, Op.DIGEST, digest_id)
        ]
        assert len(queued) == 1 and queued[0].payload["digest_id"] == digest_id

        def choice(rows: list[Pending]) -> list[tuple[Any, ...]]:
            return [
                (r.id, r.chat_id, r.priority, r.incident_id, r.next_attempt_at, r.digest_id)
                for r in rows
            ]

        assert choice(settled.left(pending)) == choice(await sender.pending())
        # Nothing new: the next settle takes nothing and queues no second edit.
        again = await storms.settle(await sender.pending(), lambda chat_id: (16, 16))
        assert again.taken == frozenset() and again.queued == ()
