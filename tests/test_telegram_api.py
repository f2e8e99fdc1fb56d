"""bot.telegram_api: the Bot API client as the outbox's `Delivery`, against the fake Bot API;
each Telegram answer becomes the services' delivery error the sender acts on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bot.limits import TelegramLimits
from bot.telegram_api import TelegramClient, refusal
from services.notify.delivery import (
    Delivery,
    Refusal,
    Refused,
    RetryAfter,
    Unavailable,
)
from tests.botkit import TEAM, TOKEN, running_fake
from tests.conftest import free_port
from tests.fakes.telegram import FakeTelegram


@pytest.mark.parametrize(
    ("status", "description", "reason"),
    [
        (400, "Bad Request: can't parse entities: unsupported start tag", Refusal.BAD_MARKUP),
        (400, "Bad Request: message is not modified: specified new message", Refusal.NOT_MODIFIED),
        (400, "Bad Request: message to edit not found", Refusal.TARGET_GONE),
        (400, "Bad Request: message can't be edited", Refusal.TARGET_GONE),
        (403, "Forbidden: bot was kicked from the supergroup chat", Refusal.FORBIDDEN),
        (403, "Forbidden: bot was blocked by the user", Refusal.FORBIDDEN),
        (400, "Bad Request: message is too long", Refusal.OTHER),
        (400, "Bad Request: chat not found", Refusal.OTHER),
    ],
)
def test_refusals(status: int, description: str, reason: Refusal) -> None:
    assert refusal(status, description) is reason


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with running_fake() as running:
        yield running


@pytest.fixture
async def client(fake: FakeTelegram) -> AsyncIterator[TelegramClient]:
    client = TelegramClient(fake.base, SecretStr(TOKEN))
    try:
        yield client
    finally:
        await client.close()


async def test_it_is_a_delivery_that_sends_edits_and_files(
    client: TelegramClient, fake: FakeTelegram
) -> None:
    delivery: Delivery = client
    assert (await delivery.identify()).startswith("@")
    first = await delivery.send_message(TEAM, "<b>P1</b> stats", reply_markup=None)
    await delivery.edit_message(TEAM, first, "<b>P1</b> stats (acked)")
    plain = await delivery.send_message(TEAM, "1 < 2", html=False, reply_to=first)
    document = await delivery.send_document(TEAM, "full.txt", b"the whole text", reply_to=first)
    assert len({first, plain, document}) == 3
    card = fake.messages[(TEAM, first)]
    assert (card.text, card.parse_mode, card.history) == (
        "<b>P1</b> stats (acked)",
        "HTML",
        ["<b>P1</b> stats"],
    )
    reply = fake.messages[(TEAM, plain)]
    assert (reply.text, reply.parse_mode, reply.reply_to) == ("1 < 2", None, first)


async def test_telegram_answers_become_delivery_errors(
    client: TelegramClient, fake: FakeTelegram
) -> None:
    with pytest.raises(Refused) as bad:
        await client.send_message(TEAM, "<b>unclosed")
    assert bad.value.reason is Refusal.BAD_MARKUP
    sent = await client.send_message(TEAM, "same")
    with pytest.raises(Refused) as same:
        await client.edit_message(TEAM, sent, "same")
    assert same.value.reason is Refusal.NOT_MODIFIED
    with pytest.raises(Refused) as gone:
        await client.edit_message(TEAM, 999, "text")
    assert gone.value.reason is Refusal.TARGET_GONE
    fake.fail("sendMessage", status=403, description="Forbidden: bot was kicked")
    with pytest.raises(Refused) as kicked:
        await client.send_message(TEAM, "text")
    assert kicked.value.reason is Refusal.FORBIDDEN
    fake.fail("sendMessage", status=429, retry_after=7)
    with pytest.raises(RetryAfter) as slow:
        await client.send_message(TEAM, "text")
    assert slow.value.retry_after == 7.0
    fake.fail("sendMessage", status=502)
    with pytest.raises(Unavailable):
        await client.send_message(TEAM, "text")


async def test_a_wrong_token_or_no_server_is_unavailable_and_never_shows_the_token(
    fake: FakeTelegram,
) -> None:
    wrong = TelegramClient(fake.base, SecretStr("999:wrong-token"))
    try:
        with pytest.raises(Unavailable) as refused:
            await wrong.identify()
    finally:
        await wrong.close()
    assert "TELEGRAM_BOT_TOKEN" in str(refused.value)
    assert "wrong-token" not in str(refused.value)
    nobody = TelegramClient(f"http://127.0.0.1:{free_port()}", SecretStr(TOKEN))
    try:
        with pytest.raises(Unavailable) as down:
            await nobody.send_message(TEAM, "text")
    finally:
        await nobody.close()
    assert TOKEN not in str(down.value)


def test_its_pacing_is_the_limits_it_was_given() -> None:
    limits = TelegramLimits(chat_per_second=1, margin=0.0)
    client = TelegramClient("http://127.0.0.1:9", SecretStr(TOKEN), limits=limits)
    assert client.wait(TEAM, 0, 100.0) == 0.0
    client.record(TEAM, 100.0)
    assert limits.wait(TEAM, 0, 100.5) == pytest.approx(0.5)
    assert client.wait(TEAM, 0, 100.5) == pytest.approx(0.5)
