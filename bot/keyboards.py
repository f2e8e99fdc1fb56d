"""Inline keyboards: the Ack / Resolve / Snooze / Details buttons of an alert."""

from __future__ import annotations

from typing import Any

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import IncidentAction, IncidentCallback, JobCallback
from bot.locales import Catalogue
from services.incidents import IncidentView
from services.models import IncidentState, JobState
from services.retry import JobView

SNOOZE_MINUTES = 60


def incident_keyboard(view: IncidentView, catalogue: Catalogue) -> InlineKeyboardMarkup:
    """The buttons that make sense in the incident's state; Details always."""
    builder = InlineKeyboardBuilder()
    t = catalogue.t
    if view.state is IncidentState.TRIGGERED:
        builder.button(
            text=t("button.ack"),
            callback_data=IncidentCallback(action=IncidentAction.ACK, incident_id=view.id),
        )
    if view.is_open:
        builder.button(
            text=t("button.resolve"),
            callback_data=IncidentCallback(action=IncidentAction.RESOLVE, incident_id=view.id),
        )
        builder.button(
            text=t("button.snooze"),
            callback_data=IncidentCallback(
                action=IncidentAction.SNOOZE, incident_id=view.id, minutes=SNOOZE_MINUTES
            ),
        )
    builder.button(
        text=t("button.details"),
        callback_data=IncidentCallback(action=IncidentAction.DETAILS, incident_id=view.id),
    )
    builder.adjust(4)
    return builder.as_markup()


def incident_keyboard_json(view: IncidentView, catalogue: Catalogue) -> dict[str, Any]:
    """The same keyboard as Bot API JSON, for the outbox sender."""
    markup: dict[str, Any] = incident_keyboard(view, catalogue).model_dump(
        mode="json", exclude_none=True
    )
    return markup


# -- pipeline operations (issue 6) ------------------------------------------------------


def retry_keyboard(jobs: list[JobView], catalogue: Catalogue) -> InlineKeyboardMarkup | None:
    """One Retry button per job that can be retried now (a running one cannot)."""
    builder = InlineKeyboardBuilder()
    retryable = [j for j in jobs if j.state in (JobState.FAILED, JobState.EXHAUSTED)]
    for job in retryable:
        builder.button(
            text=catalogue.t("button.retry", id=job.id), callback_data=JobCallback(job_id=job.id)
        )
    if not retryable:
        return None
    builder.adjust(3)
    return builder.as_markup()


def details_keyboard(incident_id: int, catalogue: Catalogue) -> InlineKeyboardMarkup:
    """Under the Details view: collect the incident's logs as a document."""
    builder = InlineKeyboardBuilder()
    builder.button(
        text=catalogue.t("button.logs"),
        callback_data=IncidentCallback(action=IncidentAction.LOGS, incident_id=incident_id),
    )
    return builder.as_markup()
