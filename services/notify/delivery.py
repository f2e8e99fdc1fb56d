"""What the outbox sender needs from the chat it delivers to: the `Delivery` protocol and
its errors. The bot implements it (bot/telegram_api.py); nothing here knows its wire format."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol


class DeliveryError(Exception):
    """A delivery failed: `action` is what was asked, `detail` why; neither holds a secret."""

    def __init__(self, action: str, detail: str) -> None:
        super().__init__(f"{action}: {detail}")
        self.action = action
        self.detail = detail


class RetryAfter(DeliveryError):
    """Too many messages: the chat service says when to try again (seconds)."""

    def __init__(self, action: str, detail: str, retry_after: float) -> None:
        super().__init__(action, detail)
        self.retry_after = retry_after


class Unavailable(DeliveryError):
    """The chat service cannot be used now (network, its errors, our credentials): retry
    with backoff, and let the fallback carry urgent alerts meanwhile."""


class Refusal(StrEnum):
    """Why a message was refused, as far as the sender acts on it."""

    BAD_MARKUP = "bad_markup"  # the HTML did not parse: send the plain twin instead
    NOT_MODIFIED = "not_modified"  # an edit to the same text: nothing to do
    TARGET_GONE = "target_gone"  # the message to edit was deleted or is too old
    FORBIDDEN = "forbidden"  # not allowed in that chat (removed from it, blocked)
    OTHER = "other"


class Refused(DeliveryError):
    """The message itself was refused: sending it again unchanged will not help."""

    def __init__(self, action: str, detail: str, reason: Refusal) -> None:
        super().__init__(action, detail)
        self.reason = reason


class Pacing(Protocol):
    """The chat service's sending limits, shared by everything this process sends."""

    def wait(self, chat_id: int, priority: int, now: float) -> float:
        """Seconds (monotonic) before a message of this priority may go to this chat."""
        ...

    def record(self, chat_id: int, now: float) -> None: ...

    def room(self, chat_id: int, priority: int, now: float) -> int | None:
        """How many more messages of this priority the chat's minute takes now; None for a
        chat without a per-minute limit (the storm digest's measure)."""
        ...

    def per_minute(self, chat_id: int, priority: int) -> int | None:
        """How many messages of this priority a whole minute of the chat takes; None for a
        chat without a per-minute limit."""
        ...


class Delivery(Pacing, Protocol):
    """Sends, edits and files for the outbox sender; raises the errors above.

    `html=False` sends the text as it is; `reply_markup` is the renderer's, passed through.
    """

    async def close(self) -> None:
        """Release the connections (the composition root calls it last)."""
        ...

    async def identify(self) -> str:
        """Who we are on the chat service (its health check), e.g. "@sunflow_ops_bot"."""
        ...

    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        html: bool = True,
        thread_id: int | None = None,
        reply_to: int | None = None,
        reply_markup: dict[str, Any] | None = None,
    ) -> int:
        """Returns the new message's id."""
        ...

    async def edit_message(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        html: bool = True,
        reply_markup: dict[str, Any] | None = None,
    ) -> None: ...

    async def send_document(
        self,
        chat_id: int,
        filename: str,
        content: bytes,
        *,
        caption: str | None = None,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        """Returns the new message's id."""
        ...
