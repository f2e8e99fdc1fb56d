"""Typed callback data of the inline buttons (short prefixes: 64 bytes is all we get)."""

from __future__ import annotations

import enum

from aiogram.filters.callback_data import CallbackData


class IncidentAction(enum.StrEnum):
    ACK = "a"
    RESOLVE = "r"
    SNOOZE = "s"
    DETAILS = "d"


class IncidentCallback(CallbackData, prefix="inc"):
    action: IncidentAction
    incident_id: int
    # For SNOOZE: how long, in minutes.
    minutes: int = 0
