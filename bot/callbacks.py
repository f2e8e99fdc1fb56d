"""Typed callback data of the inline buttons (short prefixes: 64 bytes is all we get)."""

from __future__ import annotations

import enum

from aiogram.filters.callback_data import CallbackData


class IncidentAction(enum.StrEnum):
    ACK = "a"
    RESOLVE = "r"
    SNOOZE = "s"
    DETAILS = "d"
    # On the Details view: collect the incident's logs and send them as a document.
    LOGS = "l"
    # Opens the incident's checklists.
    CHECKLIST = "c"


class IncidentCallback(CallbackData, prefix="inc"):
    action: IncidentAction
    incident_id: int
    # For SNOOZE: how long, in minutes.
    minutes: int = 0


class JobCallback(CallbackData, prefix="job"):
    """The Retry button under a failed pipeline job in /retry."""

    job_id: int


# -- escalation, SSE admin and checklists ----------------------------------


class SSEAction(enum.StrEnum):
    RESTART = "restart"
    RESET = "reset"
    BROADCAST = "broadcast"
    CANCEL = "cancel"


class SSECallback(CallbackData, prefix="sse"):
    """`/sse_reset`: choose an action, then confirm it (`confirm=True` runs it)."""

    action: SSEAction
    confirm: bool = False


class ChecklistCallback(CallbackData, prefix="chk"):
    """One checkbox: the checklist's key and the item's index in it (keys can be long)."""

    incident_id: int
    checklist: str
    item: int


# -- storm digests ------------------------------------------------------------


class DigestAction(enum.StrEnum):
    # On the digest: send its list under it.
    LIST = "l"
    # On the list: show another page of it (the list message is edited).
    PAGE = "p"
    # On the list: post this entry's own card.
    OPEN = "o"


class DigestCallback(CallbackData, prefix="dg"):
    """A storm digest's buttons: `id` is the digest (LIST, PAGE) or the incident (OPEN)."""

    action: DigestAction
    id: int
    page: int = 0
