"""Inline keyboards: the Ack / Resolve / Snooze / Details buttons of an alert, and a page's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.callbacks import (
    ChecklistCallback,
    DigestAction,
    DigestCallback,
    IncidentAction,
    IncidentCallback,
    JobCallback,
    SSEAction,
    SSECallback,
)
from bot.locales import Catalogue
from services.checklists import CHECKLISTS, ChecklistState, label
from services.durations import format_duration
from services.incident_types import IncidentView
from services.models import IncidentState, JobState
from services.notify.storm import DigestPage
from services.retry import JobView

# The Snooze choices on the card, in minutes.
SNOOZE_CHOICES = (30, 60, 240)


def incident_keyboard(
    view: IncidentView, catalogue: Catalogue, *, runbook_url: str | None = None
) -> InlineKeyboardMarkup:
    """The buttons that make sense in the incident's state; Details always; the alert's
    runbook as a link when it has one."""
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
        text=t("button.details"),
        callback_data=IncidentCallback(action=IncidentAction.DETAILS, incident_id=view.id),
    )
    builder.button(
        text=t("button.checklist"),
        callback_data=IncidentCallback(action=IncidentAction.CHECKLIST, incident_id=view.id),
    )
    first_row = len(list(builder.buttons))
    if view.is_open:
        for minutes in SNOOZE_CHOICES:
            builder.button(
                text=t("button.snooze_for", duration=format_duration(timedelta(minutes=minutes))),
                callback_data=IncidentCallback(
                    action=IncidentAction.SNOOZE, incident_id=view.id, minutes=minutes
                ),
            )
    rows = [first_row]
    if view.is_open:
        rows.append(len(SNOOZE_CHOICES))
    if runbook_url is not None:
        builder.button(text=t("button.runbook"), url=runbook_url)
        rows.append(1)
    builder.adjust(*rows)
    return builder.as_markup()


# The page's one Snooze choice, in minutes: enough to get to a laptop.
PAGE_SNOOZE = 30


def card_link(card: dict[str, Any] | None) -> str | None:
    """The t.me link of a card in a supergroup (`-100…` ids); None where Telegram has none."""
    if not isinstance(card, dict):
        return None
    chat_id, message_id = card.get("chat_id"), card.get("message_id")
    if not isinstance(chat_id, int) or not isinstance(message_id, int):
        return None
    digits = str(chat_id)
    if not digits.startswith("-100") or len(digits) <= 4:
        return None
    thread = card.get("thread_id")
    middle = f"{thread}/" if isinstance(thread, int) else ""
    return f"https://t.me/c/{digits[4:]}/{middle}{message_id}"


def page_keyboard(
    view: IncidentView, catalogue: Catalogue, *, card: dict[str, Any] | None = None
) -> InlineKeyboardMarkup:
    """Under a page sent by direct message: Ack, Snooze 30m, Resolve (what the incident's
    state still allows; the person paged may do them) and a link to the card in the group."""
    builder = InlineKeyboardBuilder()
    t = catalogue.t
    if view.state is IncidentState.TRIGGERED:
        builder.button(
            text=t("button.ack"),
            callback_data=IncidentCallback(action=IncidentAction.ACK, incident_id=view.id),
        )
    if view.is_open:
        builder.button(
            text=t("button.snooze_for", duration=format_duration(timedelta(minutes=PAGE_SNOOZE))),
            callback_data=IncidentCallback(
                action=IncidentAction.SNOOZE, incident_id=view.id, minutes=PAGE_SNOOZE
            ),
        )
        builder.button(
            text=t("button.resolve"),
            callback_data=IncidentCallback(action=IncidentAction.RESOLVE, incident_id=view.id),
        )
    rows = [len(list(builder.buttons))] if view.is_open else []
    link = card_link(card)
    if link is not None:
        builder.button(text=t("button.open_in_group"), url=link)
        rows.append(1)
    builder.adjust(*rows)
    return builder.as_markup()


def checklist_keyboard(state: ChecklistState, language: str) -> InlineKeyboardMarkup:
    """One ☐/☑ button per checklist item, a row each, the lists in the playbook's order."""
    builder = InlineKeyboardBuilder()
    for item in state.items:
        index = CHECKLISTS[item.checklist].index(item.item)
        builder.button(
            text=f"{'☑' if item.done else '☐'} {label(item.item, language)}",
            callback_data=ChecklistCallback(
                incident_id=state.incident_id, checklist=item.checklist, item=index
            ),
        )
    builder.adjust(1)
    return builder.as_markup()


def sse_keyboard(catalogue: Catalogue, confirm: SSEAction | None = None) -> InlineKeyboardMarkup:
    """The runbook's three actions; with `confirm`, that action's confirm and cancel."""
    builder = InlineKeyboardBuilder()
    if confirm is None:
        for action in (SSEAction.RESTART, SSEAction.RESET, SSEAction.BROADCAST):
            builder.button(
                text=catalogue.t(f"sse.button.{action.value}"),
                callback_data=SSECallback(action=action),
            )
    else:
        builder.button(
            text=catalogue.t("sse.button.confirm"),
            callback_data=SSECallback(action=confirm, confirm=True),
        )
        builder.button(
            text=catalogue.t("sse.button.cancel"),
            callback_data=SSECallback(action=SSEAction.CANCEL),
        )
    builder.adjust(1)
    return builder.as_markup()


def incident_keyboard_json(
    view: IncidentView, catalogue: Catalogue, *, runbook_url: str | None = None
) -> dict[str, Any]:
    """The same keyboard as Bot API JSON, for the outbox sender."""
    markup: dict[str, Any] = incident_keyboard(
        view, catalogue, runbook_url=runbook_url
    ).model_dump(mode="json", exclude_none=True)
    return markup


def page_keyboard_json(
    view: IncidentView, catalogue: Catalogue, *, card: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The page's keyboard as Bot API JSON; None when it has no button left."""
    markup = page_keyboard(view, catalogue, card=card)
    if not markup.inline_keyboard:
        return None
    data: dict[str, Any] = markup.model_dump(mode="json", exclude_none=True)
    return data


# -- pipeline operations ------------------------------------------------------


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


# -- storm digests --------------------------------------------------------------------------

# Badges by severity name, for buttons (the renderer has the same for text).
_BADGES = {"P0": "🔴", "P1": "🟠", "P2": "🟡", "P3": "🔵"}


def digest_keyboard_json(digest_id: int, total: int, catalogue: Catalogue) -> dict[str, Any]:
    """Under a storm digest: one button that lists what it holds."""
    builder = InlineKeyboardBuilder()
    builder.button(
        text=catalogue.t("storm.button.list", count=total),
        callback_data=DigestCallback(action=DigestAction.LIST, id=digest_id),
    )
    data: dict[str, Any] = builder.as_markup().model_dump(mode="json", exclude_none=True)
    return data


def digest_list_keyboard(page: DigestPage, catalogue: Catalogue) -> InlineKeyboardMarkup:
    """One button per entry (posts its own card), then the pages either side."""
    builder = InlineKeyboardBuilder()
    for entry in page.entries:
        builder.button(
            text=catalogue.t(
                "storm.button.entry",
                badge=_BADGES.get(entry.severity, "⚪"),
                id=entry.incident_id,
                title=catalogue.title(entry.title)[:40],
            ),
            callback_data=DigestCallback(action=DigestAction.OPEN, id=entry.incident_id),
        )
    rows = [1] * len(page.entries)
    nav = 0
    if page.page > 0:
        builder.button(
            text=catalogue.t("storm.button.prev"),
            callback_data=DigestCallback(
                action=DigestAction.PAGE, id=page.digest_id, page=page.page - 1
            ),
        )
        nav += 1
    if page.page + 1 < page.pages:
        builder.button(
            text=catalogue.t("storm.button.next"),
            callback_data=DigestCallback(
                action=DigestAction.PAGE, id=page.digest_id, page=page.page + 1
            ),
        )
        nav += 1
    if nav:
        rows.append(nav)
    builder.adjust(*rows)
    return builder.as_markup()
