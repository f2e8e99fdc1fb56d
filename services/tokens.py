"""The Instagram access token: its registered expiry, live checks, alerts and the renewal guide."""

from __future__ import annotations

import enum
import logging
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from sqlalchemy import select

from services.clock import Clock
from services.db import Database
from services.errors import InvalidInput
from services.health import ComponentHealth, Status
from services.incident_types import AlertIn, wording
from services.incidents import IncidentService
from services.integrations.instagram import InstagramClient, InstagramError
from services.locales import Texts
from services.models import TokenExpiry
from services.severity import Severity

log = logging.getLogger(__name__)

TOKEN_NAME = "instagram"
EXPIRY_KEY = "token:instagram"
UNAUTHORIZED_KEY = "instagram:unauthorized"
ENV_NAME = "INSTAGRAM_ACCESS_TOKEN"


class TokenState(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # no expiry registered and no live check possible


def days_left(*, expires_at: datetime, now: datetime) -> float:
    return (expires_at - now).total_seconds() / 86400


def token_state(
    *, expires_at: datetime | None, now: datetime, warning_days: int, critical_days: int
) -> TokenState:
    """ok above the warning days, warning down to the critical days, then critical, expired."""
    if expires_at is None:
        return TokenState.UNKNOWN
    left = days_left(expires_at=expires_at, now=now)
    if left <= 0:
        return TokenState.EXPIRED
    if left <= critical_days:
        return TokenState.CRITICAL
    if left <= warning_days:
        return TokenState.WARNING
    return TokenState.OK


ALERT_SEVERITY: dict[TokenState, Severity] = {
    TokenState.WARNING: Severity.P2,
    TokenState.CRITICAL: Severity.P1,
    TokenState.EXPIRED: Severity.P0,
}


@dataclass(frozen=True)
class LiveCheck:
    valid: bool
    expires_at: datetime | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "detail": self.detail,
        }


RESTART_TEXT = (
    "restart needed: .env holds another INSTAGRAM_ACCESS_TOKEN than the one this service "
    "runs with; restart sunflow-ops serve (systemctl restart 'sunflow-ops@*')"
)


@dataclass(frozen=True)
class TokenStatus:
    configured: bool
    state: TokenState
    expires_at: datetime | None
    days_left: int | None
    set_at: datetime | None
    set_by: str | None
    live: LiveCheck | None
    # The open "Graph API answered 401" incident, if any: the last real call's verdict.
    unauthorized_incident: int | None = None
    # The token in .env is not the one this process loaded (edited under a running service).
    restart_needed: bool = False

    @property
    def restart_text(self) -> str:
        return RESTART_TEXT

    def to_json(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "state": self.state.value,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "days_left": self.days_left,
            "set_at": self.set_at.isoformat() if self.set_at else None,
            "set_by": self.set_by,
            "live": self.live.to_json() if self.live else None,
            "unauthorized_incident": self.unauthorized_incident,
            "restart_needed": self.restart_needed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenStatus:
        """The status a running service answered (`GET /api/token`)."""

        def when(value: object) -> datetime | None:
            return datetime.fromisoformat(value) if isinstance(value, str) else None

        live = data.get("live")
        return cls(
            configured=bool(data.get("configured")),
            state=TokenState(str(data.get("state", "unknown"))),
            expires_at=when(data.get("expires_at")),
            days_left=data.get("days_left") if isinstance(data.get("days_left"), int) else None,
            set_at=when(data.get("set_at")),
            set_by=data.get("set_by") if isinstance(data.get("set_by"), str) else None,
            live=LiveCheck(
                bool(live.get("valid")), when(live.get("expires_at")), str(live.get("detail", ""))
            )
            if isinstance(live, dict)
            else None,
            unauthorized_incident=data.get("unauthorized_incident")
            if isinstance(data.get("unauthorized_incident"), int)
            else None,
            restart_needed=bool(data.get("restart_needed")),
        )

    def text(self) -> str:
        if not self.configured:
            return "Instagram token: INSTAGRAM_ACCESS_TOKEN is not set"
        lines = [f"Instagram token: {self.state.value}"]
        if self.restart_needed:
            lines.append(self.restart_text)
        if self.expires_at is not None:
            lines.append(
                f"expires {self.expires_at:%Y-%m-%d %H:%M} UTC ({self.days_left} days left)"
            )
        else:
            lines.append("no expiry registered: run `token set-expiry 60` after renewing")
        if self.live is not None:
            lines.append(f"live check: {'valid' if self.live.valid else 'INVALID'}")
            if self.live.detail:
                lines.append(f"  {self.live.detail}")
        if self.unauthorized_incident is not None:
            lines.append(
                f"the Graph API answered 401 (incident #{self.unauthorized_incident} open "
                f"until a call succeeds)"
            )
        return "\n".join(lines)


def guide(language: str) -> str:
    """The playbook's renewal steps in `language` (services/locales)."""
    return Texts(language).t("token.guide")


class TokenService:
    """`token status|guide|set-expiry`, the daily check and the weekly status post."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        incidents: IncidentService,
        instagram: InstagramClient,
        *,
        configured: bool,
        warning_days: int = 14,
        critical_days: int = 3,
        lifetime_days: int = 60,
        app_id: str | None = None,
        app_secret: str | None = None,
        language: str = "ko",
        token: str | None = None,
        env_file: Path | None = None,
        post: Callable[[TokenStatus], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._incidents = incidents
        self._instagram = instagram
        self.configured = configured
        self.warning_days = warning_days
        self.critical_days = critical_days
        self.lifetime_days = lifetime_days
        self._app = (app_id, app_secret) if app_id and app_secret else None
        self.language = language
        # The token this process runs with, and the .env a restart would read it from.
        self._token = token
        self._env_file = env_file
        # Where the weekly status goes (the team chat's outbox). Unset: logged.
        self.post = post

    def guide(self, language: str | None = None) -> str:
        return guide(language or self.language)

    async def _record(self) -> TokenExpiry | None:
        async with self._db.read() as session:
            return await session.get(TokenExpiry, TOKEN_NAME)

    async def live_check(self) -> LiveCheck | None:
        """Graph API `debug_token` when app credentials are set; None otherwise."""
        if self._app is None or not self.configured:
            return None
        try:
            data = await self._instagram.debug_token(app_id=self._app[0], app_secret=self._app[1])
        except InstagramError as exc:
            return LiveCheck(False, None, str(exc))
        expires = data.get("expires_at")
        expires_at = (
            datetime.fromtimestamp(int(expires), UTC)
            if isinstance(expires, int) and expires
            else None
        )
        valid = bool(data.get("is_valid"))
        detail = ""
        if not valid:
            error = data.get("error")
            detail = str(error.get("message", "")) if isinstance(error, dict) else "not valid"
        return LiveCheck(valid, expires_at, detail[:200])

    def restart_needed(self) -> bool:
        """.env names another token than the one loaded (a restart would change it)."""
        if self._env_file is None or self._token is None or ENV_NAME in os.environ:
            return False
        try:
            values = dotenv_values(self._env_file)
        except OSError:
            return False
        written = {k.upper(): v for k, v in values.items()}.get(ENV_NAME)
        return written is not None and written.strip().strip('"') != self._token

    async def status(self, *, live: bool = True) -> TokenStatus:
        """The token as this service uses it: its registered expiry, the live check, the open
        401 incident, and whether .env changed under it (the CLI asks the service for this,
        so `token status` and `health` tell one story)."""
        now = self._clock.now()
        record = await self._record()
        expires_at = record.expires_at if record else None
        live_result = await self.live_check() if live else None
        if expires_at is None and live_result and live_result.expires_at:
            expires_at = live_result.expires_at
        state = token_state(
            expires_at=expires_at,
            now=now,
            warning_days=self.warning_days,
            critical_days=self.critical_days,
        )
        if live_result is not None and not live_result.valid:
            state = TokenState.EXPIRED
        unauthorized = await self._open(UNAUTHORIZED_KEY)
        if unauthorized is not None and live_result is None:
            # No live check to ask: the last real call's 401 is the best evidence.
            state = TokenState.EXPIRED
        left = None
        if expires_at is not None:
            # Rounded up: a token set to last 60 days says 60 until a whole day has passed.
            left = max(0, math.ceil(days_left(expires_at=expires_at, now=now)))
        return TokenStatus(
            configured=self.configured,
            state=state if self.configured else TokenState.UNKNOWN,
            expires_at=expires_at,
            days_left=left,
            set_at=record.set_at if record else None,
            set_by=record.set_by if record else None,
            live=live_result,
            unauthorized_incident=unauthorized,
            restart_needed=self.configured and self.restart_needed(),
        )

    async def set_expiry(self, days: int | None = None, *, actor: str) -> TokenStatus:
        """The token was renewed and lasts `days` (default: the 60-day long-lived token)."""
        days = self.lifetime_days if days is None else days
        if not 1 <= days <= 365:
            raise InvalidInput(
                f"set-expiry takes 1 to 365 days, not {days}",
                detail={"reason": "expiry_days", "value": days},
            )
        now = self._clock.now()
        async with self._db.write() as session:
            record = await session.get(TokenExpiry, TOKEN_NAME)
            if record is None:
                record = TokenExpiry(name=TOKEN_NAME, expires_at=now, set_at=now, set_by=actor)
                session.add(record)
            record.expires_at = now + timedelta(days=days)
            record.set_at = now
            record.set_by = actor[:200]
        return await self.check()

    async def check(self) -> TokenStatus:
        """The daily check: raise (or raise the severity of) or resolve the expiry incident."""
        status = await self.status()
        severity = ALERT_SEVERITY.get(status.state)
        if status.state is TokenState.EXPIRED and status.unauthorized_incident is not None:
            severity = None  # the open 401 incident already pages P0 for this token
        if severity is not None and status.configured:
            when = f"{status.days_left} days left" if status.days_left is not None else ""
            await self._incidents.trigger(
                AlertIn(
                    severity=severity,
                    title=f"Instagram token {status.state.value}"
                    + (f": {when}" if status.state is not TokenState.EXPIRED else ""),
                    dedup_key=EXPIRY_KEY,
                    source="token_monitor",
                    description=status.text() + "\n\n" + self.guide("en"),
                    labels={"component": "instagram_token", "state": status.state.value},
                    wording=wording("expiry", status=status.to_json()),
                ),
                actor="token_monitor",
            )
        elif status.state is TokenState.OK:
            await self._incidents.resolve_by_dedup_key(EXPIRY_KEY, actor="token_monitor")
            if status.live is not None and status.live.valid:
                await self._incidents.resolve_by_dedup_key(UNAUTHORIZED_KEY, actor="token_monitor")
        return status

    def unauthorized_alert(self, *, where: str, trace_id: str | None = None) -> AlertIn:
        """Any Instagram call answered 401: the token is expired or revoked (P0)."""
        labels = {"component": "instagram_token"}
        if trace_id:
            labels["trace_id"] = trace_id
        return AlertIn(
            severity=Severity.P0,
            title="Instagram token expired: the Graph API answers 401",
            dedup_key=UNAUTHORIZED_KEY,
            source="instagram",
            description=f"{where} was refused (401 Unauthorized).\n\n{self.guide('en')}",
            labels=labels,
            wording=wording("unauthorized", where=where),
        )

    async def unauthorized(self, *, where: str, trace_id: str | None = None) -> int:
        """Open (or count into) the P0 token incident; its id."""
        result = await self._incidents.trigger(
            self.unauthorized_alert(where=where, trace_id=trace_id), actor="instagram"
        )
        return result.incident.id

    async def authorized(self) -> None:
        """An Instagram call succeeded: a 401 incident is over."""
        await self._incidents.resolve_by_dedup_key(UNAUTHORIZED_KEY, actor="instagram")

    async def weekly_report(self) -> str:
        status = await self.status()
        return "Weekly Instagram token status\n" + status.text()

    async def weekly_post(self) -> str:
        """The week's status to the team chat (as data: the chat renders it in its language),
        or to the log without one; returns the English text the log and CLI use."""
        status = await self.status()
        text = "Weekly Instagram token status\n" + status.text()
        if self.post is not None:
            await self.post(status)
        else:
            log.info("%s", text.replace("\n", " | "))
        return text

    async def health(self) -> ComponentHealth:
        if not self.configured:
            return ComponentHealth(
                "instagram_token", Status.DEGRADED, "not configured", reason="not_configured"
            )
        status = await self.status()
        figures = {
            "state": status.state.value,
            "days_left": status.days_left,
            "restart_needed": status.restart_needed,
        }
        detail = (
            f"{status.days_left} days left" if status.days_left is not None else "expiry unknown"
        )
        reason = "token_days" if status.days_left is not None else "token_no_expiry"
        params: dict[str, Any] = {"days": status.days_left, "restart": status.restart_needed}
        if status.restart_needed:
            detail = f"{detail}; {RESTART_TEXT}"
        if status.state is TokenState.EXPIRED:
            why, reason = "expired", "token_expired"
            if status.unauthorized_incident is not None:
                why = f"the Graph API answered 401 (incident #{status.unauthorized_incident})"
                reason, params["id"] = "token_unauthorized", status.unauthorized_incident
            elif status.live is not None and not status.live.valid:
                error = status.live.detail or "debug_token says invalid"
                why, reason, params["error"] = f"expired: {error}", "token_invalid", error
            if status.restart_needed:
                why = f"{why}; {RESTART_TEXT}"
            return ComponentHealth(
                "instagram_token", Status.DOWN, why, figures, reason=reason, params=params
            )
        state = (
            Status.HEALTHY
            if status.state is TokenState.OK and not status.restart_needed
            else Status.DEGRADED
        )
        return ComponentHealth(
            "instagram_token", state, detail, figures, reason=reason, params=params
        )

    async def _open(self, dedup_key: str) -> int | None:
        from services.models import Incident, IncidentState

        async with self._db.read() as session:
            found = await session.scalar(
                select(Incident.id).where(
                    Incident.dedup_key == dedup_key,
                    Incident.state != IncidentState.RESOLVED.value,
                )
            )
            return int(found) if found is not None else None
