"""The on-call person's chat, end to end through the fake Bot API, in both languages: a page
answered from the page, replies that act on their card, reopening."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bot.callbacks import IncidentAction
from bot.locales import Catalogue
from services.models import IncidentState
from tests.botkit import PD_USER, RESPONDER, TEAM, VIEWER, running_fake
from tests.fakes.telegram import FakeTelegram, Posted
from tests.test_bot_e2e import (
    SECONDS_LADDER,
    button,
    card_for,
    cards,
    drained,
    live,
    post_alert,
    replies_to,
)

LANGUAGES = ["en", "ko"]
# P3 never pages anyone: its incidents are the ones a page does not empower for.
LADDER = (
    SECONDS_LADDER
    + """
[[ladder.P3]]
name = "team"
after = "0s"
target = "team"
"""
)


def buttons_of(posted: Posted) -> list[dict[str, str]]:
    return [b for row in (posted.reply_markup or {}).get("inline_keyboard", []) for b in row]


def page_for(fake: FakeTelegram, user_id: int, incident_id: int) -> Posted | None:
    for posted in fake.in_chat(user_id):
        if f"#{incident_id}</b>" in posted.text and posted.reply_markup:
            return posted
    return None


def answered(fake: FakeTelegram, user_id: int, needle: str) -> list[Posted]:
    return [p for p in fake.in_chat(user_id) if needle in p.text]


@pytest.mark.parametrize("language", LANGUAGES)
async def test_the_paged_person_answers_from_the_page(
    migrated_url: str, tmp_path: Path, language: str
) -> None:
    t = Catalogue(language).t
    policy = tmp_path / "policy.toml"
    policy.write_text(LADDER)
    async with (
        running_fake() as fake,
        live(migrated_url, fake, escalation_policy_file=policy, bot_language=language) as (
            services,
            client,
        ),
    ):
        # The on-call person (by override) is a viewer; the PD id has no role at all.
        await services.oncall.set_oncall(
            user_id=VIEWER, name="Mina", duration=timedelta(hours=8), actor="test"
        )
        incident_id = await post_alert(client, "Instagram publishing down", "P1")
        other_id = await post_alert(client, "Stats late", "P3")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        page = await fake.wait_for(lambda: page_for(fake, PD_USER, incident_id))
        await fake.wait_for(lambda: page_for(fake, VIEWER, incident_id))
        labels = [b["text"] for b in buttons_of(page)]
        assert labels == [
            t("button.ack"),
            t("button.snooze_for", duration="30m"),
            t("button.resolve"),
            t("button.open_in_group"),
        ]
        link = buttons_of(page)[-1]["url"]
        assert link == f"https://t.me/c/{str(TEAM)[4:]}/{card.message_id}"

        # One tap on the page: the group card and the timeline name the person paged.
        await fake.press(PD_USER, page, button(IncidentAction.ACK, incident_id))
        await fake.wait_for(lambda: f"tg:{PD_USER} (@user{PD_USER})" in card.text)
        assert t("state.acknowledged") in card.text
        detail = await services.incidents.get(incident_id)
        assert detail.incident.state is IncidentState.ACKNOWLEDGED
        assert detail.timeline[-1].actor == f"tg:{PD_USER} (@user{PD_USER})"
        grants = await services.grants.of_incident(incident_id)
        assert {g.user_id for g in grants} == {PD_USER, VIEWER}
        assert all(g.active and g.step == "pd" for g in grants)

        # By command in the DM: snooze that incident; another incident is still refused.
        await fake.send_text(PD_USER, PD_USER, f"/snooze {incident_id} 30m")
        await fake.wait_for(lambda: answered(fake, PD_USER, f"💤 #{incident_id}"))
        assert (await services.incidents.get(incident_id)).incident.snoozed_until is not None
        await fake.send_text(PD_USER, PD_USER, f"/ack {other_id}")
        refusal = t(
            "refused",
            required=t("role.responder"),
            role=t("role.outsider"),
            user_id=PD_USER,
        )
        await fake.wait_for(lambda: answered(fake, PD_USER, refusal))
        assert (await services.incidents.get(other_id)).incident.state is IncidentState.TRIGGERED
        # Nothing else came with the grant: /reopen and /retry stay a responder's.
        await fake.send_text(PD_USER, PD_USER, "/retry")
        await fake.wait_for(lambda: len(answered(fake, PD_USER, refusal)) == 2)

        # The on-call viewer presses Resolve on the group card: allowed for this incident.
        await fake.press(VIEWER, card, button(IncidentAction.RESOLVE, incident_id))
        await fake.wait_for(lambda: t("state.resolved") in card.text)
        assert f"tg:{VIEWER} (@user{VIEWER})" in card.text
        grants = await services.grants.of_incident(incident_id)
        assert grants and not any(g.active for g in grants)

        # Resolved: the grant has ended with it, so the page's buttons no longer work.
        await fake.press(PD_USER, page, button(IncidentAction.ACK, incident_id))
        await fake.wait_for(lambda: [a for a in fake.callback_answers if a.get("show_alert")])
        refusals = {(r.user_id, r.command) for r in await services.audit.refusals()}
        assert (PD_USER, "ack") in refusals and (PD_USER, "button:ack") in refusals
        await fake.wait_for(lambda: len(cards(fake)) == 2)
        await drained(services)


@pytest.mark.parametrize("language", LANGUAGES)
async def test_replying_to_a_card_acts_on_its_incident(
    migrated_url: str, tmp_path: Path, language: str
) -> None:
    t = Catalogue(language).t
    policy = tmp_path / "policy.toml"
    policy.write_text(LADDER)
    async with (
        running_fake() as fake,
        live(migrated_url, fake, escalation_policy_file=policy, bot_language=language) as (
            services,
            client,
        ),
    ):
        incident_id = await post_alert(client, "Cloudinary upload failing", "P2")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        await drained(services)  # the sender has noted where the card is
        # `/ack 30m` in reply to the card: a timed acknowledgement of that incident.
        await fake.send_text(RESPONDER, TEAM, "/ack 30m", reply_to=card)
        await fake.wait_for(lambda: t("state.acknowledged") in card.text)
        view = (await services.incidents.get(incident_id)).incident
        assert view.ack_expires_at is not None
        assert view.acknowledged_by == f"tg:{RESPONDER} (@user{RESPONDER})"

        # In reply to an escalation reply under the card: `/snooze 1h`.
        second = await post_alert(client, "Fal.ai timeouts", "P1")
        second_card = await fake.wait_for(lambda: card_for(fake, second))
        step = await fake.wait_for(lambda: replies_to(fake, second_card))
        await drained(services)  # the sender has noted which message the reply is
        await fake.send_text(RESPONDER, TEAM, "/snooze 1h", reply_to=step[0])
        await fake.wait_for(lambda: "💤" in second_card.text)
        assert (await services.incidents.get(second)).incident.snoozed_until is not None

        # `/resolve NOTE` in reply: the note is the whole text, no id needed.
        await fake.send_text(RESPONDER, TEAM, "/resolve token renewed", reply_to=card)
        await fake.wait_for(lambda: t("state.resolved") in card.text)
        timeline = (await services.incidents.get(incident_id)).timeline
        assert timeline[-1].kind == "resolved"
        assert timeline[-1].details == {"note": "token renewed"}

        # `/postmortem` in reply: the document of that incident; a field by reply too.
        await fake.send_text(RESPONDER, TEAM, "/postmortem cause quota exceeded", reply_to=card)
        await fake.wait_for(
            lambda: answered(
                fake,
                TEAM,
                t(
                    "postmortem.set",
                    id=incident_id,
                    field="cause",
                    actor=f"tg:{RESPONDER} (@user{RESPONDER})",
                ),
            )
        )
        await fake.send_text(VIEWER, TEAM, "/postmortem", reply_to=card)
        document = (await fake.wait_for(lambda: [p for p in fake.in_chat(TEAM) if p.document]))[0]
        assert b"quota exceeded" in (document.document or b"")
        assert f"#{incident_id}" in document.text

        # A reply to a message that is not about an incident: the usage line, nothing done.
        await fake.send_text(VIEWER, TEAM, "/status")
        status = await fake.wait_for(
            lambda: [p for p in fake.in_chat(TEAM) if t("status.title") in p.text]
        )
        await fake.send_text(RESPONDER, TEAM, "/ack", reply_to=status[0])
        usage = t("usage.ack").split(" — ")[0]
        await fake.wait_for(lambda: answered(fake, TEAM, usage))


@pytest.mark.parametrize("language", LANGUAGES)
async def test_reopen_from_the_chat_starts_the_ladder_again(
    migrated_url: str, tmp_path: Path, language: str
) -> None:
    t = Catalogue(language).t
    policy = tmp_path / "policy.toml"
    policy.write_text(LADDER)
    async with (
        running_fake() as fake,
        live(migrated_url, fake, escalation_policy_file=policy, bot_language=language) as (
            services,
            client,
        ),
    ):
        incident_id = await post_alert(client, "Generation API 5xx", "P1")
        card = await fake.wait_for(lambda: card_for(fake, incident_id))
        await fake.wait_for(lambda: page_for(fake, PD_USER, incident_id))
        await fake.send_text(RESPONDER, TEAM, f"/resolve {incident_id}")
        await fake.wait_for(lambda: t("state.resolved") in card.text)
        assert t("button.ack") not in str(card.reply_markup)

        # A viewer may not reopen; a responder may, and the card is open again with its Ack.
        await fake.send_text(VIEWER, TEAM, f"/reopen {incident_id}")
        refusal = t("refused", required=t("role.responder"), role=t("role.viewer"), user_id=VIEWER)
        await fake.wait_for(lambda: answered(fake, TEAM, refusal))
        await fake.send_text(RESPONDER, TEAM, f"/reopen {incident_id} came back")
        actor = f"tg:{RESPONDER} (@user{RESPONDER})"
        await fake.wait_for(
            lambda: answered(fake, TEAM, f"#{incident_id}") and t("state.triggered") in card.text
        )
        assert t("button.ack") in str(card.reply_markup)
        reopened = t("change.reopened", actor=actor)
        await fake.wait_for(lambda: [p for p in replies_to(fake, card) if reopened in p.text])
        detail = await services.incidents.get(incident_id)
        assert detail.timeline[-1].kind in {"reopened", "escalated"}
        assert any(e.kind == "reopened" and e.actor == actor for e in detail.timeline)

        # The ladder starts again: the PD is paged a second time, and may answer again.
        await fake.wait_for(
            lambda: len([p for p in fake.in_chat(PD_USER) if f"#{incident_id}</b>" in p.text]) == 2
        )
        again = (await services.incidents.get(incident_id)).timeline
        assert {e.details.get("epoch") for e in again if e.kind == "escalated"} == {1, 2}
        assert await services.grants.holds(PD_USER, incident_id)

        # Reopening what is open is refused with one line saying why.
        await fake.send_text(RESPONDER, TEAM, f"/reopen {incident_id}")
        await fake.wait_for(lambda: answered(fake, TEAM, t("error.not_resolved", id=incident_id)))
        # An ack of what is acknowledged, and of an incident that does not exist: said in the
        # chat's language.
        await fake.send_text(RESPONDER, TEAM, "/ack 424242")
        await fake.wait_for(lambda: answered(fake, TEAM, t("error.no_incident", id=424242)))


async def test_an_ack_during_a_storm_goes_ahead_of_new_cards(migrated_url: str) -> None:
    """25 P2 alerts are more than the group's minute of P2 budget (16 of 20): the card edit
    answering an Ack goes in the urgent tier, ahead of the P2 cards still waiting."""
    async with running_fake() as fake, live(migrated_url, fake) as (services, client):
        first = await post_alert(client, "storm 0", "P2")
        card = await fake.wait_for(lambda: card_for(fake, first))
        for n in range(1, 25):
            await post_alert(client, f"storm {n}", "P2")
        await fake.press(RESPONDER, card, button(IncidentAction.ACK, first))
        seen: list[int] = []

        def acked() -> bool:
            if f"tg:{RESPONDER}" in card.text:
                seen.append(len(cards(fake)))
                return True
            return False

        await fake.wait_for(acked)
        assert seen[0] < 25  # the edit did not wait for the storm's cards
        assert (await services.incidents.get(first)).incident.acknowledged_by is not None
