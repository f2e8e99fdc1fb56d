"""Telegram's sending limits as sliding windows, with headroom kept for urgent alerts
(`services.notify.delivery.Pacing` through the client; the aiogram bot's replies too)."""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """At most `limit` events in any `period` seconds: the exact shape of Telegram's limits.

    A token bucket of the same average rate would let a burst through that a window-based
    server (Telegram, or our fake) refuses with 429, so we count the window itself.
    """

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._times: deque[float] = deque()

    def _purge(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()

    def wait(self, now: float, *, reserve: int = 0) -> float:
        """Seconds until one more event fits, keeping `reserve` slots free."""
        self._purge(now)
        allowed = max(1, self.limit - reserve)
        if len(self._times) < allowed:
            return 0.0
        return self._times[len(self._times) - allowed] + self.period - now

    def record(self, now: float) -> None:
        self._times.append(now)

    def free(self, now: float, *, reserve: int = 0) -> int:
        """How many more events fit now, keeping `reserve` slots free."""
        self._purge(now)
        return max(0, self.limit - reserve - len(self._times))


class TelegramLimits:
    """≤ N/s overall, ≤ 1/s per chat, ≤ 20/min per group; P2/P3 leave room for P0/P1."""

    def __init__(
        self,
        *,
        global_per_second: int = 30,
        chat_per_second: int = 1,
        group_per_minute: int = 20,
        margin: float = 0.05,
    ) -> None:
        # The margin absorbs the gap between our clock and the server's arrival times.
        self._global = SlidingWindow(global_per_second, 1.0 + margin)
        self._chat_rate = chat_per_second
        self._group_rate = group_per_minute
        self._margin = margin
        self._chats: dict[int, SlidingWindow] = {}
        self._groups: dict[int, SlidingWindow] = {}

    @staticmethod
    def is_group(chat_id: int) -> bool:
        return chat_id < 0

    def _windows(self, chat_id: int) -> list[tuple[SlidingWindow, int]]:
        chat = self._chats.setdefault(chat_id, SlidingWindow(self._chat_rate, 1.0 + self._margin))
        windows = [(self._global, max(1, self._global.limit // 6)), (chat, 0)]
        if self.is_group(chat_id):
            group = self._groups.setdefault(
                chat_id, SlidingWindow(self._group_rate, 60.0 + self._margin)
            )
            windows.append((group, max(1, self._group_rate // 5)))
        return windows

    def wait(self, chat_id: int, priority: int, now: float) -> float:
        """Seconds before a message of this priority may go to this chat."""
        urgent = priority <= 1
        return max(
            window.wait(now, reserve=0 if urgent else reserve)
            for window, reserve in self._windows(chat_id)
        )

    def room(self, chat_id: int, priority: int, now: float) -> int | None:
        """How many more messages of this priority the group's minute takes now (its reserve
        kept for urgent ones); None for a chat without a per-minute limit (a person's)."""
        if not self.is_group(chat_id):
            return None
        group, reserve = self._windows(chat_id)[-1]
        return group.free(now, reserve=0 if priority <= 1 else reserve)

    def per_minute(self, chat_id: int, priority: int) -> int | None:
        """How many messages of this priority the group's minute takes when it starts empty;
        None for a chat without a per-minute limit."""
        if not self.is_group(chat_id):
            return None
        group, reserve = self._windows(chat_id)[-1]
        return group.limit - (0 if priority <= 1 else reserve)

    def record(self, chat_id: int, now: float) -> None:
        for window, _ in self._windows(chat_id):
            window.record(now)
