"""The bot's one error handler: what each kind of error answers, in both languages."""

from __future__ import annotations

import pytest

from bot.errors import Usage, reply_for
from bot.locales import Catalogue
from services.errors import InvalidTransition, NotFound

ACK_USAGE = (
    "Usage: /ack ID [DURATION] — e.g. /ack 42 or /ack 42 30m; "
    "or reply to the alert with /ack [DURATION]"
)


@pytest.mark.parametrize(
    ("exc", "command", "language", "expected"),
    [
        (Usage("ack"), "ack", "en", ACK_USAGE),
        # A domain error says what was wrong, then how to write the command.
        (
            NotFound("incident 999 not found"),
            "ack",
            "en",
            "⚠️ incident 999 not found\n" + ACK_USAGE,
        ),
        # A command without a usage line (and a button): the message alone.
        (InvalidTransition("already resolved"), "health", "en", "⚠️ already resolved"),
        (InvalidTransition("already resolved"), None, "en", "⚠️ already resolved"),
        # Anything else: no exception text reaches the chat.
        (
            RuntimeError("token=abc secret"),
            "ack",
            "en",
            "⚠️ That failed on our side; it is logged. Please try again.",
        ),
        (
            RuntimeError("token=abc secret"),
            "ack",
            "ko",
            "⚠️ 서버 쪽에서 실패했습니다(로그에 기록됨). 다시 시도해 주세요.",
        ),
        (NotFound("<b>x</b>"), None, "en", "⚠️ &lt;b&gt;x&lt;/b&gt;"),
    ],
)
def test_reply_for(exc: BaseException, command: str | None, language: str, expected: str) -> None:
    assert reply_for(exc, command, Catalogue(language)) == expected
