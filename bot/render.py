"""Message text for Telegram: HTML escaping, 4096-character splitting, the alert card."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.locales import Catalogue
from services.backups import BackupInfo, RestoreResult
from services.durations import format_duration
from services.health import ComponentHealth, HealthReport, Status
from services.incident_types import IncidentDetail, IncidentView
from services.models import IncidentState
from services.notify.fallback import ChannelResult
from services.notify.outbox import Op
from services.notify.sender import Rendered
from services.notify.storm import PAGE as PAGE_SIZE
from services.notify.storm import DigestPage
from services.retry import DEFAULT_STEP_MESSAGE, JobView
from services.severity import Severity
from services.stats import RestartResult
from services.tokens import TokenStatus, guide
from services.traces import TraceView

LIMIT = 4096
BADGES = {Severity.P0: "🔴", Severity.P1: "🟠", Severity.P2: "🟡", Severity.P3: "🔵"}
STATUS_BADGES = {Status.HEALTHY: "🟢", Status.DEGRADED: "🟡", Status.DOWN: "🔴"}
MAX_LABELS = 6
# An Alertmanager group's card lists at most this many of its alerts, and leaves at least
# this much of Telegram's 4096 to the description.
MAX_CARD_ALERTS = 40
CARD_DESCRIPTION_KEPT = 600
# Changes the card names in a "Last:" line; the others already show in its state lines.
LAST_SHOWN = frozenset({"escalated", "deadline_missed", "unacknowledged", "annotated", "reopened"})

_TOKEN = re.compile(r"<[^<>]*>|&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);|[^<&]+|[<&]")
_TAG = re.compile(r"<\s*(/)?\s*([a-zA-Z][a-zA-Z0-9-]*)")


def esc(value: object) -> str:
    """Escape anything that came from outside (alert text, labels, user names)."""
    return html.escape(str(value), quote=True)


def tg_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def html_to_plain(text: str) -> str:
    """The same message without markup: for the plain-text resend."""
    return html.unescape(re.sub(r"<[^<>]*>", "", text))


def visible_len(text: str) -> int:
    """What Telegram counts against 4096 for an HTML message: UTF-16 code units of the text
    after entity parsing (tags count nothing, `&lt;` counts one)."""
    return tg_len(html_to_plain(text))


def _visible(token: str) -> int:
    if token.startswith("<") and len(token) > 1:
        return 0
    if token.startswith("&") and len(token) > 1:
        return tg_len(html.unescape(token))
    return tg_len(token)


def split_html(text: str, limit: int = LIMIT) -> list[str]:
    """Cut HTML into messages of at most `limit` visible characters (as Telegram counts
    them), never inside a tag or an entity.

    Tags open at a cut are closed at the end of one part and opened again at the start of
    the next, so every part is valid on its own; text is cut at a line break when one is near.
    """
    if limit <= 0:
        raise ValueError("the limit must be positive")
    parts: list[str] = []
    stack: list[tuple[str, str]] = []  # (name, opening tag as written)
    current = ""
    used = 0  # visible characters in `current`

    def closing() -> str:
        return "".join(f"</{name}>" for name, _ in reversed(stack))

    def flush() -> None:
        nonlocal current, used
        parts.append(current + closing())
        current = "".join(tag for _, tag in stack)
        used = 0

    for token in _TOKEN.findall(text):
        if token.startswith("<") and len(token) > 1 and _TAG.match(token):
            match = _TAG.match(token)
            assert match is not None
            is_close, name = bool(match.group(1)), match.group(2).lower()
            if is_close:
                current += token
                for index in range(len(stack) - 1, -1, -1):
                    if stack[index][0] == name:
                        del stack[index]
                        break
                continue
            if used >= limit:
                flush()
            current += token
            stack.append((name, token))
            continue
        if token.startswith("&") and len(token) > 1:
            width = _visible(token)
            if used + width > limit:
                flush()
            current += token
            used += width
            continue
        piece = token
        while piece:
            space = limit - used
            if space <= 0:
                flush()
                continue
            if tg_len(piece) <= space:
                current += piece
                used += tg_len(piece)
                break
            take = piece[:space]
            while tg_len(take) > space:
                take = take[:-1]
            newline = take.rfind("\n")
            if newline > len(take) // 2:
                take = take[: newline + 1]
            if not take:  # one character wider than the room left (a surrogate pair)
                if used == 0:
                    raise ValueError("the limit is smaller than one character")
                flush()
                continue
            current += take
            used += tg_len(take)
            piece = piece[len(take) :]
            flush()
    if current and current != "".join(tag for _, tag in stack) or not parts:
        parts.append(current + closing())
    return [p for p in parts if p.strip()] or [""]


def trim_html(text: str, limit: int = LIMIT, marker: str = "…") -> tuple[str, bool]:
    """The first part that fits (counted as Telegram counts: visible text), with `marker`
    after it; True when something was cut."""
    if visible_len(text) <= limit:
        return text, False
    first = split_html(text, limit - visible_len(marker))[0]
    return first + marker, True


def age(delta: timedelta) -> str:
    return format_duration(delta)


def at(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def hhmm(value: datetime) -> str:
    return value.strftime("%H:%M UTC")


def role_name(catalogue: Catalogue, role: str) -> str:
    return catalogue.t(f"role.{role}")


class TelegramRenderer:
    """Renders outbox rows (services.notify.sender.Renderer) in the bot's language."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.t = catalogue.t
        self.catalogue = catalogue

    # -- the alert card ---------------------------------------------------------------

    def state(self, view: IncidentView) -> str:
        return self.t(f"state.{view.state.value}")

    def change_line(self, change: dict[str, Any], incident: IncidentView | None = None) -> str:
        kind = str(change.get("kind", ""))
        details: dict[str, Any] = change.get("details") or {}
        actor = esc(self.catalogue.actor(str(change.get("actor", ""))))
        values: dict[str, Any] = {"actor": actor, "kind": esc(self.catalogue.kind(kind))}
        if kind == "deduplicated":
            values["count"] = esc(details.get("count", ""))
        elif kind == "annotated":
            values["text"] = esc(str(details.get("text", ""))[:300])
        elif kind == "snoozed":
            values["until"] = _iso_at(details.get("until"))
        elif kind == "unacknowledged":
            values["who"] = esc(details.get("acknowledged_by") or "?")
        elif kind == "deadline_missed":
            values.update(self._missed(details, incident))
        elif kind == "escalated":
            values.update(
                step=esc(details.get("step", "")),
                target=esc(details.get("target", "")),
                message=esc(self.step_message(change)[:500]),
                late=self.t("change.escalated.late") if details.get("late") else "",
            )
        key = f"change.{kind}"
        try:
            return self.t(key, **values)
        except KeyError:
            return self.t("change.other", **values)

    def step_message(self, change: dict[str, Any]) -> str:
        """An escalation step's message (plain text): the built-in ladder's in this
        language, a team's as written; the retries step says where the retries stand."""
        details: dict[str, Any] = change.get("details") or {}
        retries = details.get("retries")
        if not isinstance(retries, dict) or "step_message" not in details:
            return self.catalogue.ladder(str(details.get("message", "")))
        base = self.catalogue.ladder(str(details["step_message"] or DEFAULT_STEP_MESSAGE))
        now = _parse_at(change.get("at")) or _parse_at(details.get("due_at"))
        jobs = [j for j in retries.get("jobs") or [] if isinstance(j, dict)]
        if not jobs or now is None:
            return f"{base}: {self.t('change.retries.none')}"
        return f"{base}: " + "; ".join(html_to_plain(self.retry_line(j, now)) for j in jobs)

    def _missed(self, details: dict[str, Any], incident: IncidentView | None) -> dict[str, Any]:
        """Which incident, its severity, how long it has gone unacknowledged, the deadline,
        and who is paged next and when."""
        upcoming = details.get("next")
        if isinstance(upcoming, dict) and upcoming.get("due_at"):
            ids = [str(i) for i in upcoming.get("user_ids") or []]
            following = self.t(
                "change.deadline_missed.next",
                step=esc(upcoming.get("step", "")),
                target=esc(upcoming.get("target", "")),
                who=f" ({esc(', '.join(ids))})" if ids else "",
                at=_iso_at(upcoming.get("due_at")),
            )
        else:
            following = self.t("change.deadline_missed.last")
        seconds = details.get("unacknowledged_seconds")
        return {
            "incident": f"#{incident.id} " if incident is not None else "",
            "severity": esc(details.get("severity", "")),
            "waited": age(timedelta(seconds=seconds)) if isinstance(seconds, int) else "?",
            "deadline": _iso_at(details.get("deadline")),
            "next": following,
        }

    def card_facts(self, view: IncidentView, now: datetime, facts: dict[str, Any]) -> list[str]:
        """The next escalation step ("PD paged at 04:12 UTC, in 12 min") and unticked
        checklist items of a resolved incident: facts the sender looked up at send time."""
        lines: list[str] = []
        upcoming = facts.get("next_step")
        if view.is_open and isinstance(upcoming, dict) and upcoming.get("due_at"):
            due = datetime.fromisoformat(str(upcoming["due_at"]))
            left = due - now
            when = (
                self.t("card.next.in", delta=age(left))
                if left > timedelta(seconds=0)
                else self.t("card.next.due")
            )
            lines.append(
                self.t(
                    "card.next",
                    step=esc(upcoming.get("name", "")),
                    target=esc(upcoming.get("target", "")),
                    at=hhmm(due),
                    when=when,
                )
            )
        for job in facts.get("retries") or []:
            if isinstance(job, dict):
                lines.append(self.retry_line(job, now))
        runbook = facts.get("runbook")
        if isinstance(runbook, dict):
            if runbook.get("path"):
                lines.append(self.t("card.runbook", where=f"<code>{esc(runbook['path'])}</code>"))
            elif runbook.get("url"):
                lines.append(self.t("card.runbook", where=esc(runbook["url"])))
            commands = [str(c) for c in runbook.get("commands") or []]
            if commands and view.is_open:
                lines.append(self.t("card.commands", commands=esc(" · ".join(commands))))
        unticked = int(facts.get("checklist_open") or 0)
        if view.state is IncidentState.RESOLVED and unticked:
            lines.append(self.t("card.checklist_open", count=unticked))
        return lines

    def retry_line(self, job: dict[str, Any], now: datetime) -> str:
        """One job behind the incident: its next retry, or how its retries ended."""
        values: dict[str, Any] = {
            "id": esc(job.get("id", "?")),
            "work": esc(f"{job.get('kind', '')} {job.get('topic', '')}".strip()),
            "done": job.get("attempts", 0),
            "n": int(job.get("attempts") or 0) + 1,
            "total": job.get("max_attempts", 0),
            "left": job.get("left", 0),
        }
        state = job.get("state")
        updated = _parse_at(job.get("updated_at"))
        if state == "succeeded":
            return self.t("card.retry.succeeded", at=hhmm(updated) if updated else "?", **values)
        if state == "running":
            return self.t("card.retry.running", **values)
        due = _parse_at(job.get("next_retry_at"))
        if state == "failed" and due is not None:
            left = due - now
            when = (
                self.t("card.next.in", delta=age(left))
                if left > timedelta(0)
                else self.t("card.next.due")
            )
            return self.t("card.retry.next", at=hhmm(due), when=when, **values)
        if int(job.get("attempts") or 0) == 0:
            return self.t("card.retry.refused", **values)
        return self.t("card.retry.exhausted", **values)

    def card(
        self,
        view: IncidentView,
        now: datetime,
        last: dict[str, Any] | None = None,
        facts: dict[str, Any] | None = None,
    ) -> str:
        t = self.t
        lines = [
            f"{BADGES[view.severity]} <b>{view.severity.value}</b> · "
            f"<b>#{view.id} {esc(self.catalogue.title(view.title))}</b>"
        ]
        state = self.state(view)
        if view.state is IncidentState.ACKNOWLEDGED and view.acknowledged_at:
            line = t(
                "card.by",
                state=state,
                actor=esc(self.catalogue.actor(view.acknowledged_by or "?")),
                at=at(view.acknowledged_at),
            )
            if view.ack_expires_at:
                line += t("card.ack_until", until=at(view.ack_expires_at))
            lines.append(line)
        elif view.state is IncidentState.RESOLVED and view.resolved_at:
            lines.append(
                t(
                    "card.by",
                    state=state,
                    actor=esc(self.catalogue.actor(view.resolved_by or "?")),
                    at=at(view.resolved_at),
                )
            )
        else:
            lines.append(t("card.state", state=state))
        lines.append(
            t(
                "card.meta",
                source=esc(view.source),
                count=view.occurrence_count,
                age=age(now - view.first_seen_at),
            )
        )
        if view.is_open:
            # The incident's one stored deadline (for P0, "immediately", the policy's 5 min).
            left = view.response_deadline - now
            if left < timedelta(0):
                when = t("card.deadline.overdue", delta=age(-left))
            else:
                when = t("card.deadline.left", delta=age(left))
            lines.append(t("card.deadline", deadline=at(view.response_deadline), left=when))
        if view.labels:
            shown = sorted(view.labels.items())[:MAX_LABELS]
            labels = ", ".join(f"<code>{esc(k)}</code>={esc(str(v)[:60])}" for k, v in shown)
            lines.append(t("card.labels", labels=labels))
        group_at = len(lines)
        if view.snoozed_until and view.snoozed_until > now and view.is_open:
            lines.append(t("card.snoozed", until=at(view.snoozed_until)))
        lines += self.card_facts(view, now, facts or {})
        if (
            last
            and last.get("kind") in LAST_SHOWN
            and not (last.get("details") or {}).get("initial")
        ):
            lines.append(t("card.last", what=self.change_line(last, view)))
        description = self.description(view)
        if description:
            lines.append("")
            lines.append(f"<blockquote>{esc(description)}</blockquote>")
        if view.alert_group:
            lines[group_at:group_at] = self.group_lines(view, lines)
        return "\n".join(lines)

    def group_lines(self, view: IncidentView, others: Sequence[str]) -> list[str]:
        """An Alertmanager group's alerts on its card: the counts, then one line per alert
        (firing first, the most urgent first), as many as fit in what the rest of the card
        leaves of Telegram's 4096 (keeping room for some of the description), the rest
        counted. A group that only ever had one alert reads as that alert: no list."""
        group = view.alert_group or {}
        alerts = [a for a in group.get("alerts") or [] if isinstance(a, dict)]
        omitted = int(group.get("omitted") or 0) + int(group.get("truncated_alerts") or 0)
        if len(alerts) + omitted <= 1:
            return []
        lines = [
            self.t(
                "card.alerts",
                firing=int(group.get("firing") or 0),
                resolved=int(group.get("resolved") or 0),
            )
        ]
        description = visible_len(f"<blockquote>{esc(self.description(view))}</blockquote>")
        used = sum(visible_len(line) + 1 for line in others if not line.startswith("<blockquote"))
        room = LIMIT - used - min(description, CARD_DESCRIPTION_KEPT) - visible_len(lines[0])
        more = self.t("card.alerts.more", count=len(alerts) + omitted, id=view.id)
        room -= visible_len(more) + 2
        ordered = sorted(
            alerts,
            key=lambda a: (a.get("status") != "firing", str(a.get("severity")), a.get("title")),
        )
        shown = 0
        for alert in ordered[:MAX_CARD_ALERTS]:
            line = self.group_alert_line(alert)
            if visible_len(line) + 1 > room:
                break
            lines.append(line)
            room -= visible_len(line) + 1
            shown += 1
        hidden = len(alerts) - shown + omitted
        if hidden:
            lines.append(self.t("card.alerts.more", count=hidden, id=view.id))
        return lines

    @staticmethod
    def group_alert_line(alert: dict[str, Any]) -> str:
        title = esc(str(alert.get("title") or alert.get("key") or "?")[:120])
        if alert.get("status") == "firing":
            try:
                badge = BADGES[Severity(str(alert.get("severity")))]
            except ValueError:
                badge = BADGES[Severity.P2]
            return f"  {badge} {title}"
        return f"  ✅ <s>{title}</s>"

    def render(
        self, op: str, payload: dict[str, Any], incident: IncidentView | None, now: datetime
    ) -> Rendered:
        from bot.keyboards import (
            digest_keyboard_json,
            incident_keyboard_json,
            page_keyboard_json,
        )

        if op == Op.DIGEST and isinstance(payload.get("digest"), dict):
            digest: dict[str, Any] = payload["digest"]
            text, _ = trim_html(self.digest(digest), LIMIT)
            buttons = digest_keyboard_json(
                int(digest["id"]), int(digest.get("total", 0)), self.catalogue
            )
            return Rendered(text, html_to_plain(text), reply_markup=buttons)
        if op in {Op.CARD, Op.DOCUMENT} and incident is not None:
            full = self.card(incident, now, payload.get("last"), payload)
            marker = self.t("trimmed")
            text, trimmed = trim_html(full, LIMIT, marker)
            if op == Op.DOCUMENT:
                return Rendered(
                    self.t("document.caption", id=incident.id),
                    self.t("document.caption", id=incident.id),
                    full_text=html_to_plain(full),
                    filename=f"incident-{incident.id}.txt",
                )
            return Rendered(
                text,
                html_to_plain(text),
                reply_markup=incident_keyboard_json(
                    incident, self.catalogue, runbook_url=_runbook_url(payload)
                ),
                full_text=html_to_plain(full) if trimmed else None,
            )
        if op == Op.REPLY:
            text = self.change_line(payload.get("change") or {}, incident)
        elif op == Op.DIRECT:
            change = payload.get("change") or {}
            text = self.t(
                "direct.escalated",
                badge=BADGES[incident.severity] if incident else "",
                id=esc(payload.get("incident_id", "?")),
                title=esc(self.catalogue.title(incident.title)) if incident else "",
                message=esc(self.step_message(change)[:1000]),
            )
            if incident is not None:
                text, _ = trim_html(text, LIMIT)
                markup = page_keyboard_json(incident, self.catalogue, card=payload.get("card"))
                return Rendered(text, html_to_plain(text), reply_markup=markup)
        elif isinstance(payload.get("token_weekly"), dict):
            status = TokenStatus.from_json(payload["token_weekly"])
            lines = esc(self.token_lines(status))
            text = "\n".join([self.t("token.weekly"), f"<pre>{lines}</pre>", self.t("token.hint")])
        else:
            text = esc(payload.get("text", ""))
        text, _ = trim_html(text, LIMIT)
        return Rendered(text, html_to_plain(text))

    # -- the storm digest -----------------------------------------------------------------

    def digest(self, shown: dict[str, Any]) -> str:
        """A storm digest: how many alerts it holds by severity and source, their states,
        the newest titles; when the storm is over, that it is (the counts are final)."""
        t = self.t
        lines = [t("storm.title", total=shown.get("total", 0))]
        opened = _parse_at(shown.get("opened_at"))
        closed = _parse_at(shown.get("closed_at"))
        changed = _parse_at(shown.get("changed_at"))
        lines.append(t("storm.why"))
        severities = shown.get("severities") or {}
        if severities:
            counts = " · ".join(
                f"{_badge(name)} {esc(name)} {count}" for name, count in severities.items()
            )
            lines.append(t("storm.severities", counts=counts))
        sources = [f"{esc(name)} {count}" for name, count in shown.get("sources") or []]
        if int(shown.get("sources_other") or 0):
            sources.append(t("storm.sources_other", count=shown["sources_other"]))
        if sources:
            lines.append(t("storm.sources", counts=", ".join(sources)))
        lines.append(
            t(
                "storm.states",
                open=shown.get("open", 0),
                resolved=shown.get("resolved", 0),
                carded=shown.get("carded", 0),
                occurrences=shown.get("occurrences", 0),
            )
        )
        newest = shown.get("newest") or []
        if newest:
            lines.append(t("storm.newest"))
            for entry in newest:
                lines.append(
                    t(
                        "storm.line",
                        badge=_badge(entry.get("severity")),
                        id=esc(entry.get("id", "?")),
                        title=esc(self.catalogue.title(str(entry.get("title", "")))[:80]),
                    )
                )
        if closed is not None:
            lines.append(t("storm.closed", since=hhmm(opened) if opened else "?", at=hhmm(closed)))
        elif opened is not None:
            updated = changed.strftime("%H:%M:%S") if changed else "?"
            lines.append(t("storm.since", at=hhmm(opened), updated=updated))
        return "\n".join(lines)

    def digest_list(self, page: DigestPage) -> str:
        """A page of a digest's list, newest first: one line per alert with its state."""
        t = self.t
        first = page.page * PAGE_SIZE + 1
        lines = [
            t(
                "storm.list.title",
                total=page.total,
                first=min(first, page.total),
                last=first + len(page.entries) - 1,
            )
        ]
        for entry in page.entries:
            lines.append(
                t(
                    "storm.list.line",
                    badge=_badge(entry.severity),
                    id=entry.incident_id,
                    title=esc(self.catalogue.title(entry.title)[:80]),
                    state=self.t(f"state.{entry.state}"),
                    carded=t("storm.list.carded") if entry.carded else "",
                )
            )
        text, _ = trim_html("\n".join(lines), LIMIT)
        return text

    # -- command replies ----------------------------------------------------------------

    def incidents(self, views: Sequence[IncidentView], now: datetime) -> str:
        if not views:
            return self.t("incidents.none")
        lines = [self.t("incidents.title", count=len(views))]
        for view in views:
            lines.append(
                self.t(
                    "incidents.line",
                    badge=BADGES[view.severity],
                    id=view.id,
                    title=esc(self.catalogue.title(view.title)[:120]),
                    state=self.state(view),
                    count=view.occurrence_count,
                    age=age(now - view.first_seen_at),
                )
            )
        return "\n".join(lines)

    def status(self, counts: dict[str, int]) -> str:
        total = sum(counts.values())
        return "\n".join([self.t("status.title"), self.t("status.counts", total=total, **counts)])

    def detail(self, detail: IncidentDetail, now: datetime) -> str:
        view = detail.incident
        lines = [
            self.t(
                "detail.title",
                badge=BADGES[view.severity],
                id=view.id,
                title=esc(self.catalogue.title(view.title)),
                state=self.state(view),
            ),
            self.t("detail.meta", source=esc(view.source), dedup=esc(view.dedup_key)),
            "",
            self.t("detail.timeline"),
        ]
        for entry in detail.timeline[-30:]:
            lines.append(
                self.t(
                    "detail.entry",
                    at=at(entry.at),
                    kind=esc(self.catalogue.kind(entry.kind)),
                    actor=esc(self.catalogue.actor(entry.actor)),
                )
            )
        return "\n".join(lines)

    def notify_results(self, results: Sequence[ChannelResult]) -> str:
        lines = [self.t("notify.title")]
        for result in results:
            lines.append(
                self.t(
                    "notify.line",
                    badge="✅" if result.ok else "❌",
                    channel=esc(result.channel),
                    detail=esc(self._reason("notify.reason", result.reason, result.params))
                    if result.reason
                    else esc(result.detail),
                )
            )
        return "\n".join(lines)

    def _reason(self, prefix: str, reason: str, params: dict[str, Any]) -> str:
        message = self.catalogue.get(f"{prefix}.{reason}") or "{error}"
        return message.format_map(_Blank({k: "" if v is None else v for k, v in params.items()}))

    # -- pipeline operations ----------------------------------------------------

    def health_card(self, report: HealthReport) -> str:
        """The compact card: the overall status, then one line per component with its figure."""
        badge = STATUS_BADGES[report.status]
        lines = [self.t("health.title", status=self.t(f"status.{report.status.value}"))]
        for c in report.components:
            mark = self.t(f"health.mark.{c.status.value}")
            lines.append(f"{mark:<4} {c.name}: {self.health_detail(c)}"[:120])
        return f"{badge} <pre>{esc(chr(10).join(lines))}</pre>"

    def health_detail(self, c: ComponentHealth) -> str:
        """A component's finding (plain text) in this language, from its reason and values;
        a check that names no reason is shown as it said."""
        message = self.catalogue.get(f"health.reason.{c.reason}") if c.reason else None
        if message is None:
            return c.detail
        values = {k: _health_value(k, v) for k, v in c.params.items()}
        if values.get("status") not in (None, ""):
            values["status"] = f"HTTP {values['status']}, "
        text = message.format_map(_Blank(values))
        if c.params.get("restart"):
            text += self.t("health.reason.restart")
        if c.reason.startswith("stats_") and "since" in values:
            text += self.t(
                "health.reason.stats_failing", since=values["since"], error=values["error"]
            )
        incident = c.figures.get("incident")
        if incident is not None and f"#{incident}" not in text:
            text += self.t("health.reason.open_p0", id=incident)
        return text

    def description(self, view: IncidentView) -> str:
        """The incident's description (plain text): one our services wrote, from its reason
        and values in this language (`AlertIn.wording`); an alert's own as written."""
        wording = view.wording or {}
        reason, params = wording.get("reason"), wording.get("params")
        if not isinstance(reason, str) or not isinstance(params, dict):
            return view.description
        if reason == "health":
            finding = ComponentHealth(
                str(params.get("name", "")),
                Status.DOWN,
                str(params.get("detail", "")),
                reason=str(params.get("finding") or ""),
                params=dict(params.get("values") or {}),
            )
            return self.health_detail(finding)
        steps = guide(self.catalogue.language)
        if reason == "expiry":
            return self.token_lines(TokenStatus.from_json(params.get("status") or {})) + (
                "\n\n" + steps
            )
        values = dict(params)
        if reason == "unauthorized":
            where = str(values.get("where", ""))
            values["where"] = self.catalogue.get(f"desc.where.{where}") or where
            values["guide"] = steps
        if reason == "publish_blocked":
            values["error"] = self.refusal(values)
        message = self.catalogue.get(f"desc.{reason}")
        if message is None:
            return view.description
        return message.format_map(_Blank({k: "" if v is None else v for k, v in values.items()}))

    def refusal(self, values: dict[str, Any]) -> str:
        """Why a publish was refused, in this language when the service named its reason."""
        error = str(values.get("error", ""))
        refusal = values.get("refusal")
        reason = refusal.get("reason") if isinstance(refusal, dict) else None
        if not isinstance(refusal, dict) or not isinstance(reason, str):
            return error
        text = html_to_plain(self._reason("error", reason, {"error": error, **refusal}))
        return text.removeprefix("⚠️").strip().rstrip(".")

    def token_lines(self, status: TokenStatus) -> str:
        """The token's status lines in the bot's language (the CLI's `text()` in English)."""
        t = self.t
        if not status.configured:
            return t("token.line.unset")
        lines = [t("token.line.state", state=t(f"token.state.{status.state.value}"))]
        if status.restart_needed:
            lines.append(t("token.line.restart"))
        if status.expires_at is not None:
            lines.append(
                t(
                    "token.line.expires",
                    at=f"{status.expires_at:%Y-%m-%d %H:%M} UTC",
                    days=status.days_left,
                )
            )
        else:
            lines.append(t("token.line.no_expiry"))
        if status.live is not None:
            verdict = t("token.live.valid" if status.live.valid else "token.live.invalid")
            lines.append(t("token.line.live", verdict=verdict))
            if status.live.detail:
                lines.append(f"  {status.live.detail}")
        if status.unauthorized_incident is not None:
            lines.append(t("token.line.unauthorized", id=status.unauthorized_incident))
        return "\n".join(lines)

    def token_status(self, status: TokenStatus) -> str:
        return "\n".join(
            [
                self.t("token.title"),
                f"<pre>{esc(self.token_lines(status))}</pre>",
                self.t("token.hint"),
            ]
        )

    def token_set(self, status: TokenStatus, actor: str) -> str:
        return (
            self.t("token.set", actor=esc(actor))
            + "\n"
            + f"<pre>{esc(self.token_lines(status))}</pre>"
        )

    @staticmethod
    def pre(text: str) -> str:
        return f"<pre>{esc(text)}</pre>"

    def jobs(self, jobs: Sequence[JobView], now: datetime) -> str:
        if not jobs:
            return self.t("retry.none")
        lines = [self.t("retry.title", count=len(jobs))]
        lines += [f"• {self.job_line(job, now)}" for job in jobs]
        lines += ["", self.t("retry.hint")]
        return "\n".join(lines)

    def job_state(self, state: str) -> str:
        return self.catalogue.get(f"job.state.{state}") or state

    def job_line(self, job: JobView, now: datetime) -> str:
        """One job for a list (HTML): what, where it stands, and the error it last met
        (the provider's words, as data)."""
        when = ""
        if job.state.value == "failed" and job.next_retry_at is not None:
            when = " · " + self.t("job.next", delta=age(job.next_retry_at - now))
        trace = f" · <code>{esc(job.trace_id)}</code>" if job.trace_id else ""
        head = self.t(
            "job.line",
            id=job.id,
            work=esc(job.work or "-"),
            state=esc(self.job_state(job.state.value)),
            done=job.attempts,
            total=job.max_attempts,
        )
        line = f"{head}{when}{trace}"
        if job.state.value == "succeeded" or not job.last_error:
            return line
        return f"{line}: <code>{esc(job.last_error[:120])}</code>"

    def job_done(self, job: JobView, actor: str, now: datetime) -> str:
        head = self.t(
            "retry.done", id=job.id, actor=esc(actor), state=esc(self.job_state(job.state.value))
        )
        return f"{head}\n{self.job_line(job, now)}"

    def trace_status(self, status: str) -> str:
        return self.catalogue.get(f"trace.status.{status}") or status

    def traces(self, traces: Sequence[TraceView]) -> str:
        if not traces:
            return self.t("traces.none")
        lines = [self.t("traces.title", count=len(traces))]
        for trace in traces:
            took = (
                f"{trace.duration_ms} ms"
                if trace.duration_ms is not None
                else self.t("trace.running")
            )
            error = f" · <code>{esc(trace.error[:100])}</code>" if trace.error else ""
            lines.append(
                f"<code>{esc(trace.id)}</code> · {esc(trace.kind)} {esc(trace.topic or '-')} · "
                f"{esc(self.trace_status(trace.status))} · {took}{error}"
            )
        lines += ["", self.t("traces.hint")]
        return "\n".join(lines)

    def trace(self, trace: TraceView) -> str:
        took = (
            f"{trace.duration_ms} ms" if trace.duration_ms is not None else self.t("trace.running")
        )
        lines = [
            self.t(
                "trace.title",
                id=esc(trace.id),
                kind=esc(trace.kind),
                topic=esc(trace.topic or "-"),
                status=esc(self.trace_status(trace.status)),
                took=took,
            )
        ]
        for step in trace.steps:
            error = f" — <code>{esc(step.error[:200])}</code>" if step.error else ""
            lines.append(
                self.t(
                    "trace.step",
                    badge="✅" if step.status == "ok" else "⚠️",
                    name=esc(step.name),
                    status=esc(self.trace_status(step.status)),
                    ms=step.duration_ms,
                    error=error,
                )
            )
        if trace.error:
            lines.append(self.t("trace.error", error=f"<code>{esc(trace.error[:500])}</code>"))
        return "\n".join(lines)

    def backups(self, backups: Sequence[BackupInfo]) -> str:
        if not backups:
            return self.t("backup.none")
        lines = [self.t("backup.title", count=len(backups))]
        lines += [f"<code>{esc(info.line())}</code>" for info in backups]
        return "\n".join(lines)

    def backup_restored(self, result: RestoreResult) -> str:
        return self.t(
            "backup.restored.text",
            id=f"<code>{esc(result.restored.id)}</code>",
            files=esc(", ".join(result.written)) or self.t("backup.restored.nothing"),
            snapshot=f"<code>{esc(result.snapshot.id)}</code>",
        )

    def backup_created(self, info: BackupInfo) -> str:
        return self.t("backup.created", id=esc(info.id), files=esc(", ".join(info.files)))

    def stats_status(self, component: ComponentHealth) -> str:
        return self.t(
            "stats.status",
            badge=STATUS_BADGES[component.status],
            status=self.t(f"status.{component.status.value}"),
            detail=esc(self.health_detail(component)),
        )

    def stats_restarted(self, result: RestartResult) -> str:
        when = at(result.next_run) if result.next_run else self.t("stats.not_scheduled")
        if not result.ok:
            collected = result.collected
            # Our own outcome in the chat's words; the provider's answer quoted as it came.
            if collected.reason == "not_configured":
                detail = self.t("stats.not_configured")
            else:
                detail = f"<code>{esc(collected.detail[:200])}</code>"
            return self.t("stats.restart_failed", next=when, detail=detail)
        return self.t("stats.restarted", next=when)


class _Blank(dict[str, Any]):
    """A message's values; one the check did not give reads as empty."""

    def __missing__(self, key: str) -> str:
        return ""


def _health_value(key: str, value: Any) -> Any:
    if key in {"at", "since"} and isinstance(value, str):
        moment = _parse_at(value)
        return hhmm(moment) if moment is not None else value
    return "" if value is None else value


def _badge(severity: object) -> str:
    """The badge of a severity given by name (from JSON); a neutral one for anything else."""
    try:
        return BADGES[Severity(str(severity))]
    except ValueError:
        return "⚪"


def _runbook_url(payload: dict[str, Any]) -> str | None:
    runbook = payload.get("runbook")
    url = runbook.get("url") if isinstance(runbook, dict) else None
    return str(url) if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def _parse_at(value: object) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _iso_at(value: object) -> str:
    if isinstance(value, str):
        try:
            return at(datetime.fromisoformat(value))
        except ValueError:
            return esc(value)
    return "?"
