"""Log bundles (`collect-logs`): one archive per incident with error lines, traces and timeline."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.clock import Clock
from services.incidents import IncidentService
from services.traces import TraceService

ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL|Traceback|Exception|429|401|5\d\d)\b")
MAX_LINES = 200


def recent_error_lines(paths: list[Path], *, limit: int = MAX_LINES) -> list[str]:
    """The last `limit` lines of `*_stderr.log` files and the error lines of other logs."""
    lines: deque[str] = deque(maxlen=limit)
    for path in sorted(paths):
        try:
            text = path.read_text("utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if path.name.endswith("_stderr.log") or ERROR_LINE.search(line):
                lines.append(f"{path.name}: {line}")
    return list(lines)


def redact(text: str, secrets: list[str]) -> str:
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class Bundle:
    path: Path
    incident_id: int
    traces: list[str]
    error_lines: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "incident_id": self.incident_id,
            "traces": self.traces,
            "error_lines": self.error_lines,
            "size": self.size,
        }


class BundleService:
    def __init__(
        self,
        clock: Clock,
        incidents: IncidentService,
        traces: TraceService,
        *,
        log_dir: Path,
        out_dir: Path,
        secrets: list[str],
    ) -> None:
        self._clock = clock
        self._incidents = incidents
        self._traces = traces
        self.log_dir = log_dir
        self.out_dir = out_dir
        self._secrets = secrets

    async def collect(self, incident_id: int) -> Bundle:
        """Write `incident-<id>-<time>.tar.gz`; secrets are masked in every file."""
        detail = await self._incidents.get(incident_id)
        trace_ids = [
            str(v)
            for k, v in detail.incident.labels.items()
            if k == "trace_id" or k.endswith("_trace_id")
        ]
        for entry in detail.timeline:
            for key in ("trace_id",):
                value = entry.details.get(key) if isinstance(entry.details, dict) else None
                if isinstance(value, str):
                    trace_ids.append(value)
        traces = await self._traces.many(trace_ids)
        logs = sorted(self.log_dir.glob("*.log")) if self.log_dir.is_dir() else []
        errors = recent_error_lines(logs)
        now = self._clock.now()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"incident-{incident_id}-{now:%Y%m%d-%H%M%S}.tar.gz"
        files: dict[str, str] = {
            "incident.json": json.dumps(detail.to_json(), ensure_ascii=False, indent=2),
            "errors.log": "\n".join(errors) + ("\n" if errors else ""),
        }
        for trace in traces:
            files[f"traces/{trace.id}.json"] = json.dumps(
                trace.to_json(), ensure_ascii=False, indent=2
            )
        with tarfile.open(path, "w:gz") as archive:
            for name, text in files.items():
                data = redact(text, self._secrets).encode()
                info = tarfile.TarInfo(f"incident-{incident_id}/{name}")
                info.size = len(data)
                info.mtime = int(now.timestamp())
                archive.addfile(info, io.BytesIO(data))
        return Bundle(path, incident_id, [t.id for t in traces], len(errors), path.stat().st_size)
