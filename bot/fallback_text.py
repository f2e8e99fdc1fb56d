"""The fallback channel's words (services.notify.fallback.FallbackWording): plain text for
e-mail and webhooks, in the bot's language, with the card's titles and descriptions."""

from __future__ import annotations

import re
from datetime import datetime

from bot.locales import Catalogue
from bot.render import TelegramRenderer, at
from services.incident_types import IncidentView
from services.notify.fallback import Reason


class FallbackText:
    def __init__(self, catalogue: Catalogue) -> None:
        self.t = catalogue.t
        self._card = TelegramRenderer(catalogue)  # the card's title, state and description

    def reason(self, reason: Reason) -> str:
        values = {k: at(v) if isinstance(v, datetime) else v for k, v in reason.values.items()}
        return self.t(f"fallback.reason.{reason.code}", **values)

    def alert(self, view: IncidentView, reason: Reason) -> tuple[str, str]:
        title = self._card.catalogue.title(view.title)
        severity = view.severity.value
        subject = self.t("fallback.alert.subject", severity=severity, id=view.id, title=title)
        labels = ", ".join(f"{k}={v}" for k, v in sorted(view.labels.items())) or "-"
        body = self.t(
            "fallback.alert.body",
            severity=severity,
            meaning=self.t(f"severity.meaning.{severity}"),
            id=view.id,
            title=title,
            source=view.source,
            state=self._card.state(view),
            count=view.occurrence_count,
            first_seen=at(view.first_seen_at),
            deadline=at(view.response_deadline),
            labels=labels,
            description=self._card.description(view)[:4000],
            reason=self.reason(reason),
        )
        return subject[:200], re.sub(r"\n{3,}", "\n\n", body)  # no description: no gap

    def telegram_down(
        self,
        since: datetime,
        now: datetime,
        pending: int,
        oldest: datetime | None,
        error: str | None,
    ) -> tuple[str, str]:
        body = self.t(
            "fallback.down.body",
            since=at(since),
            minutes=int((now - since).total_seconds() // 60),
            pending=pending,
            oldest=self.t("fallback.down.oldest", oldest=at(oldest)) if oldest else "",
            error=error or self.t("fallback.down.no_error"),
        )
        return self.t("fallback.down.subject"), body

    def test_message(self, actor: str, now: datetime) -> tuple[str, str]:
        return self.t("fallback.test.subject"), self.t("notify.text", actor=actor, at=at(now))

    def database_down(self, instance: str, detail: str, reason: str) -> tuple[str, str]:
        subject = self.t("fallback.database.subject", instance=instance)
        body = self.t("fallback.database.body", instance=instance, detail=detail, reason=reason)
        return subject, body

    def telegram_up(self, since: datetime, now: datetime) -> tuple[str, str]:
        return self.t("fallback.up.subject"), self.t(
            "fallback.up.body", since=at(since), now=at(now)
        )
