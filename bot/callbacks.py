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


class IncidentCallback(CallbackData, prefix="inc"):
    action: IncidentAction
    incident_id: int
    # For SNOOZE: how long, in minutes.
    minutes: int = 0


class JobCallback(CallbackData, prefix="job"):
    """The Retry button under a failed pipeline job in /retry."""

    job_id: int
