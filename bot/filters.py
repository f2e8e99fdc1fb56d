"""Roles (SPEC.md): who may do what, decided in one place before any service call."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.callbacks import (
    ChecklistCallback,
    DigestCallback,
    IncidentAction,
    IncidentCallback,
    JobCallback,
    SSECallback,
)
from services.config import Settings
from services.models import parse_id


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
    "reopen": Role.RESPONDER,
    "retry": Role.RESPONDER,
    "sse_reset": Role.ADMIN,
    "notify_test": Role.ADMIN,
    # Pipeline operations.
    "traces": Role.VIEWER,
    "stats": Role.VIEWER,
    "backup": Role.ADMIN,
    # Escalation, SSE admin, checklists, post-mortems and reports.
    "oncall": Role.VIEWER,
    "postmortem": Role.VIEWER,
    "report": Role.VIEWER,
    # Heartbeats.
    "heartbeats": Role.VIEWER,
}

# Sub-commands that need more than their command's role: (command, sub-command), where the
# sub-command is the first argument (`/stats restart`) or the one after an id
# (`/postmortem 42 cause TEXT`).
SUBCOMMAND_ROLES: dict[tuple[str, str], Role] = {
    # `/token set_expiry` changes what the monitor believes; `/stats restart` re-arms a job.
    ("token", "set_expiry"): Role.ADMIN,
    ("token", "set-expiry"): Role.ADMIN,
    ("stats", "restart"): Role.RESPONDER,
    ("oncall", "set"): Role.ADMIN,
    ("postmortem", "summary"): Role.RESPONDER,
    ("postmortem", "impact"): Role.RESPONDER,
    ("postmortem", "cause"): Role.RESPONDER,
    ("postmortem", "prevention"): Role.RESPONDER,
}

BUTTON_ROLES: dict[IncidentAction, Role] = {
    IncidentAction.ACK: Role.RESPONDER,
    IncidentAction.RESOLVE: Role.RESPONDER,
    IncidentAction.SNOOZE: Role.RESPONDER,
    IncidentAction.DETAILS: Role.VIEWER,
    IncidentAction.LOGS: Role.RESPONDER,
    IncidentAction.CHECKLIST: Role.VIEWER,
}
# What being paged for an incident allows on that incident, whatever the person's role.
GRANTED_COMMANDS = frozenset({"ack", "resolve", "snooze"})
GRANTED_BUTTONS = frozenset({IncidentAction.ACK, IncidentAction.RESOLVE, IncidentAction.SNOOZE})
# Commands that act on one incident: its id first, or a reply to one of its messages.
INCIDENT_COMMANDS = frozenset({"ack", "resolve", "snooze", "reopen", "postmortem"})

# The Retry button of a failed job: the same as `/retry JOB_ID`.
JOB_BUTTON_ROLE = Role.RESPONDER
# Ticking a checklist item is a responder's act; the SSE admin buttons are an admin's.
CHECKLIST_TICK_ROLE = Role.RESPONDER
SSE_BUTTON_ROLE = Role.ADMIN
# A storm digest's list, and an entry's own card from it, are for anyone in the team chat.
DIGEST_BUTTON_ROLE = Role.VIEWER

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
    """The command's role, raised for a sub-command (`/oncall set ...` needs admin)."""
    role = COMMAND_ROLES.get(command, UNKNOWN_ROLE)
    words = (text or "").split()
    if len(words) > 2:  # `/postmortem 42 cause TEXT`: the sub-command follows the id
        role = max(role, SUBCOMMAND_ROLES.get((command, words[2].lower()), role))
    if len(words) > 1:
        role = max(role, SUBCOMMAND_ROLES.get((command, words[1].lower()), role))
    return role


def leading_id(text: str | None) -> int | None:
    """The incident id a command names first (`/ack 42 30m`, `/ack #42`), if it does."""
    words = (text or "").split()
    if len(words) < 2:
        return None
    return parse_id(words[1])


def command_incident(text: str | None, replied: int | None) -> int | None:
    """Which incident a command acts on: the id it names, else the one whose message it
    replies to."""
    named = leading_id(text)
    return named if named is not None else replied


def granted_incident(data: str) -> int | None:
    """The incident a button press acts on, when it is one that a grant allows."""
    try:
        callback = IncidentCallback.unpack(data)
    except (TypeError, ValueError):
        return None
    return callback.incident_id if callback.action in GRANTED_BUTTONS else None


def button_role(data: str) -> tuple[Role, str] | None:
    """The role a button press needs and its audit label; None for buttons not ours."""
    for kind in (IncidentCallback, ChecklistCallback, SSECallback, JobCallback, DigestCallback):
        try:
            callback = kind.unpack(data)
        except (TypeError, ValueError):
            continue
        if isinstance(callback, IncidentCallback):
            return BUTTON_ROLES[callback.action], f"button:{callback.action.name.lower()}"
        if isinstance(callback, ChecklistCallback):
            return CHECKLIST_TICK_ROLE, "button:checklist_tick"
        if isinstance(callback, JobCallback):
            return JOB_BUTTON_ROLE, "button:retry"
        if isinstance(callback, DigestCallback):
            return DIGEST_BUTTON_ROLE, f"button:digest_{callback.action.name.lower()}"
        assert isinstance(callback, SSECallback)
        return SSE_BUTTON_ROLE, f"button:sse_{callback.action.value}"
    return None
