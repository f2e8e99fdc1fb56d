"""A fake SMTP server (aiosmtpd on loopback) that keeps every message it receives."""

from __future__ import annotations

import threading
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


class _Keep:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class FakeSmtp:
    def __init__(self, port: int) -> None:
        self._keep = _Keep()
        self.port = port
        self._controller = Controller(self._keep, hostname="127.0.0.1", port=port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Message]:
        with self._keep.lock:
            return list(self._keep.messages)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
