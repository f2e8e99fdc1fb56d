"""Roles (SPEC.md): who may do what, decided in one place before any service call."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.callbacks import IncidentAction, IncidentCallback, JobCallback
from services.config import Settings


class Role(enum.IntEnum):
    OUTSIDER = 0
    VIEWER = 1
    RESPONDER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


# Every command the bot answers, with the least role that may use it.
COMMAND_ROLES: dict[str, Role] = {
    "start": Role.VIEWER,
    "help": Role.VIEWER,
    "health": Role.VIEWER,
    "token": Role.VIEWER,
    "incidents": Role.VIEWER,
    "status": Role.VIEWER,
    "ack": Role.RESPONDER,
    "resolve": Role.RESPONDER,
    "snooze": Role.RESPONDER,
    "retry": Role.RESPONDER,
    "sse_reset": Role.ADMIN,
    "notify_test": Role.ADMIN,
    # Pipeline operations (issue 6); subcommands that need more are in SUBCOMMAND_ROLES.
    "traces": Role.VIEWER,
    "stats": Role.VIEWER,
    "backup": Role.ADMIN,
}

# `/token set_expiry` changes what the monitor believes; `/stats restart` re-arms a job.
SUBCOMMAND_ROLES: dict[str, dict[str, Role]] = {
    "token": {"set_expiry": Role.ADMIN, "set-expiry": Role.ADMIN},
    "stats": {"restart": Role.RESPONDER},
}

BUTTON_ROLES: dict[IncidentAction, Role] = {
    IncidentAction.ACK: Role.RESPONDER,
    IncidentAction.RESOLVE: Role.RESPONDER,
    IncidentAction.SNOOZE: Role.RESPONDER,
    IncidentAction.DETAILS: Role.VIEWER,
    IncidentAction.LOGS: Role.RESPONDER,
}
# The Retry button of a failed job: the same as `/retry JOB_ID`.
JOB_BUTTON_ROLE = Role.RESPONDER

# Unknown commands are answered with a pointer to /help, to team members only.
UNKNOWN_ROLE = Role.VIEWER


@dataclass(frozen=True)
class RolePolicy:
    admins: frozenset[int]
    responders: frozenset[int]
    team_chat_id: int | None

    @classmethod
    def from_settings(cls, settings: Settings) -> RolePolicy:
        return cls(
            admins=frozenset(settings.admin_user_ids),
            responders=frozenset(settings.responder_user_ids),
            team_chat_id=settings.telegram_team_chat_id,
        )

    def role_of(self, user_id: int, chat_id: int | None) -> Role:
        """admin and responder by id; viewer: anyone writing in the team chat."""
        if user_id in self.admins:
            return Role.ADMIN
        if user_id in self.responders:
            return Role.RESPONDER
        if chat_id is not None and chat_id == self.team_chat_id:
            return Role.VIEWER
        return Role.OUTSIDER


def command_name(text: str | None, bot_username: str | None = None) -> str | None:
    """`/ack@SunBot 42` -> `ack`; None when the text is not a command (or for another bot)."""
    if not text or not text.startswith("/"):
        return None
    head = text.split(maxsplit=1)[0][1:]
    name, _, mention = head.partition("@")
    if mention and bot_username and mention.lower() != bot_username.lower():
        return None
    return name.lower() or None


def required_role(command: str, text: str | None = None) -> Role:
    """The command's role, or its subcommand's when that needs more (`/token set_expiry`)."""
    needed = COMMAND_ROLES.get(command, UNKNOWN_ROLE)
    words = (text or "").split()
    if len(words) > 1:
        needed = max(needed, SUBCOMMAND_ROLES.get(command, {}).get(words[1].lower(), needed))
    return needed


def button_role(data: str) -> tuple[str, Role] | None:
    """(audit label, least role) of an inline button's data; None when it is not ours."""
    try:
        incident = IncidentCallback.unpack(data)
    except (TypeError, ValueError):
        pass
    else:
        return f"button:{incident.action.name.lower()}", BUTTON_ROLES[incident.action]
    try:
        JobCallback.unpack(data)
    except (TypeError, ValueError):
        return None
    return "button:retry", JOB_BUTTON_ROLE
