"""Alertmanager groups kept as one incident: a notification's alerts merged into the group's
stored list (the incident's `alert_group`), as pure functions of the two."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Alerts a group's incident keeps in its list (Alertmanager's max_alerts defaults to no
# limit, and a 16 MiB notification holds about 25,000): firing ones first, the rest counted.
MAX_GROUP_ALERTS = 500

FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True)
class AlertGroupIn:
    """One notification's view of an Alertmanager group: every alert it carries (JSON-ready
    entries: key, status, severity, title, labels, starts_at, ends_at) and whether
    Alertmanager left some out (`truncatedAlerts`), which means an alert missing from it
    may still be firing."""

    group_key: str
    receiver: str
    status: str
    alerts: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    truncated_alerts: int = 0


def merge(
    previous: dict[str, Any] | None, incoming: AlertGroupIn
) -> tuple[dict[str, Any], dict[str, int]]:
    """The group as stored after `incoming`, and what changed in it ({} when nothing did:
    a re-sent unchanged group).

    Alertmanager sends the whole group each time, so an alert the group had that a complete
    notification no longer carries has left it (resolved, or silenced): it is kept as
    resolved. Alerts keep the order they were first seen in."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in (previous or {}).get("alerts") or []:
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            merged[entry["key"]] = entry
    added = cleared = 0
    seen = set()
    for entry in incoming.alerts:
        prior = merged.get(entry["key"])
        was_firing = prior is not None and prior.get("status") == FIRING
        if entry["status"] == FIRING and not was_firing:
            added += 1
        elif entry["status"] == RESOLVED and was_firing:
            cleared += 1
        merged[entry["key"]] = entry
        seen.add(entry["key"])
    if not incoming.truncated_alerts:
        for key, entry in merged.items():
            if key not in seen and entry.get("status") == FIRING:
                merged[key] = {**entry, "status": RESOLVED}
                cleared += 1
    alerts = list(merged.values())
    firing = sum(1 for a in alerts if a.get("status") == FIRING)
    kept = _capped(alerts)
    stored = {
        "group_key": incoming.group_key,
        "receiver": incoming.receiver,
        "status": incoming.status,
        "firing": firing,
        "resolved": len(alerts) - firing,
        "truncated_alerts": incoming.truncated_alerts,
        "omitted": len(alerts) - len(kept),
        "alerts": kept,
    }
    change = {"added": added, "cleared": cleared} if added or cleared else {}
    return stored, change


def _capped(alerts: list[dict[str, Any]], limit: int = MAX_GROUP_ALERTS) -> list[dict[str, Any]]:
    """At most `limit` alerts: the resolved ones seen longest ago go first."""
    if len(alerts) <= limit:
        return alerts
    firing = [a for a in alerts if a.get("status") == FIRING]
    resolved = [a for a in alerts if a.get("status") != FIRING]
    room = limit - len(firing)
    chosen = firing[:limit] if room <= 0 else firing + resolved[-room:]
    keep = {id(a) for a in chosen}
    return [a for a in alerts if id(a) in keep]


def change_summary(stored: dict[str, Any], change: dict[str, int]) -> dict[str, int]:
    """The timeline's record of a changed alert set: what came and went, and the counts."""
    return {**change, "firing": int(stored["firing"]), "resolved": int(stored["resolved"])}
