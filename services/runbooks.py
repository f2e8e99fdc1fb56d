"""Where an incident's runbook is: the alert's own `runbook`/`runbook_url`, or ours.

A card shows it as a button (a URL) or a line (a path in this repository, made a URL with
RUNBOOK_BASE_URL), with the chat commands that act on it (`/sse_reset` for the SSE streams).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SSE_SECTION = "docs/sse.md#immediate-actions-즉시-대응-조치"
# The playbook scenario each of the pipeline's incidents belongs to (docs/operations.md).
SCENARIOS: dict[str, str] = {
    "instagram:unauthorized": "docs/operations.md#scenario-1-instagram-token-expired",
    "token:instagram": "docs/operations.md#scenario-1-instagram-token-expired",
    "cloudinary:upload": "docs/operations.md#scenario-2-cloudinary-upload-failure",
    "fal:generate": "docs/operations.md#scenario-3-image-generation-failure-flux2",
    "instagram:rate-limit": "docs/operations.md#scenario-4-instagram-api-rate-limit-429",
    "stats:collector": "docs/operations.md#scenario-5-stats-collection-failure",
    "health:telegram": "docs/operations.md#scenario-6-telegram-notification-failure",
}
COMMANDS: dict[str, list[str]] = {
    "instagram:unauthorized": ["/token", "/retry"],
    "token:instagram": ["/token"],
    "cloudinary:upload": ["/retry", "/health"],
    "fal:generate": ["/retry", "/traces"],
    "instagram:rate-limit": ["/retry"],
    "stats:collector": ["/stats restart"],
    "health:telegram": ["/health"],
}


@dataclass(frozen=True)
class Runbook:
    url: str | None = None
    path: str | None = None
    commands: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "path": self.path, "commands": self.commands}


def is_sse(labels: dict[str, Any], dedup_key: str) -> bool:
    """An incident about the SSE job streams: an SSE alert rule, or the health watch's."""
    alertname = str(labels.get("alertname", ""))
    component = str(labels.get("component", ""))
    return (
        alertname.upper().startswith("SSE")
        or component in {"sse", "redis"}
        or dedup_key in {"health:sse", "health:redis"}
    )


def runbook_for(
    *, labels: dict[str, Any], dedup_key: str, base_url: str | None = None
) -> Runbook | None:
    """The alert's `runbook_url` or `runbook` annotation first; else our runbook for it."""
    given = labels.get("runbook_url") or labels.get("runbook")
    sse = is_sse(labels, dedup_key)
    commands = ["/sse_reset"] if sse else list(COMMANDS.get(dedup_key, []))
    target = str(given).strip() if given else None
    if target is None:
        target = SSE_SECTION if sse else SCENARIOS.get(dedup_key)
    if target is None:
        return Runbook(commands=commands) if commands else None
    if target.startswith(("http://", "https://")):
        return Runbook(url=target, commands=commands)
    url = f"{base_url.rstrip('/')}/{target.lstrip('/')}" if base_url else None
    return Runbook(url=url, path=target, commands=commands)
