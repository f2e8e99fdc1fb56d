"""Log bundles (`collect-logs`): one archive per incident with its log lines, traces and timeline.

The lines come from LOG_DIR's files and, where the service runs under systemd, from journald
(`journalctl -u 'sunflow-ops@*'`): `matching.log` has every line that names the incident, its
jobs or its traces (the failures' `incident=#N job=#M trace=SF-...`), `errors.log` the recent
error lines (ERROR, tracebacks, 401/429/5xx) for context.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import tarfile
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from services.clock import Clock
from services.incidents import IncidentService
from services.retry import RetryService
from services.traces import TraceService

ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL|Traceback|Exception|429|401|5\d\d)\b")
MAX_LINES = 200
JOURNAL_UNIT = "sunflow-ops@*"
JOURNAL_TIMEOUT = 10.0


def recent_error_lines(
    sources: Iterable[tuple[str, list[str]]], *, limit: int = MAX_LINES
) -> list[str]:
    """The last `limit` error lines: all of `*_stderr.log`, the matching lines of the rest."""
    lines: deque[str] = deque(maxlen=limit)
    for name, text in sources:
        for line in text:
            if name.endswith("_stderr.log") or ERROR_LINE.search(line):
                lines.append(f"{name}: {line}")
    return list(lines)


def matching_lines(
    sources: Iterable[tuple[str, list[str]]], needles: list[str], *, limit: int = 2000
) -> list[str]:
    """Every line naming one of `needles` (an incident, job or trace id), last `limit`."""
    lines: deque[str] = deque(maxlen=limit)
    if not needles:
        return []
    for name, text in sources:
        if name.endswith("_stderr.log"):
            continue  # its lines are in sunflow-ops.log too
        for line in text:
            if any(needle in line for needle in needles):
                lines.append(f"{name}: {line}")
    return list(lines)


def needles_for(incident_id: int, job_ids: Iterable[int], trace_ids: Iterable[str]) -> list[str]:
    """What the failure lines say of an incident: `incident=#7` (and `#7 ` in others),
    `job=#3`, the trace ids."""
    found = [f"incident=#{incident_id} ", f"incident=#{incident_id}:", f"incident #{incident_id} "]
    found += [f"job=#{j} " for j in job_ids] + [f"job #{j} " for j in job_ids]
    found += sorted(set(trace_ids))
    return found


def read_files(paths: list[Path]) -> list[tuple[str, list[str]]]:
    sources = []
    for path in sorted(paths):
        try:
            sources.append((path.name, path.read_text("utf-8", errors="replace").splitlines()))
        except OSError:
            continue
    return sources


async def journal_lines(journalctl: str | None, since: datetime) -> list[str] | None:
    """The units' journal since `since`, or None where there is no journal to read."""
    if journalctl is None:
        return None
    process = await asyncio.create_subprocess_exec(
        journalctl,
        "--no-pager",
        "-o",
        "short-iso",
        "-u",
        JOURNAL_UNIT,
        "--since",
        since.strftime("%Y-%m-%d %H:%M:%S UTC"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(JOURNAL_TIMEOUT):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    if process.returncode != 0:
        return None
    lines = out.decode("utf-8", errors="replace").splitlines()
    return [line for line in lines if not line.startswith("-- ")]


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
    matching_lines: int
    sources: list[str]
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "incident_id": self.incident_id,
            "traces": self.traces,
            "error_lines": self.error_lines,
            "matching_lines": self.matching_lines,
            "sources": self.sources,
            "size": self.size,
        }


class BundleService:
    def __init__(
        self,
        clock: Clock,
        incidents: IncidentService,
        traces: TraceService,
        *,
        log_dir: Path | None,
        out_dir: Path,
        secrets: list[str],
        retry: RetryService | None = None,
        journalctl: str | None = None,
    ) -> None:
        self._clock = clock
        self._incidents = incidents
        self._traces = traces
        self._retry = retry
        self.log_dir = log_dir
        self.out_dir = out_dir
        self._secrets = secrets
        # `journalctl` where it is installed (the program's path; None: files only).
        self.journalctl = journalctl if journalctl is not None else shutil.which("journalctl")

    async def collect(self, incident_id: int) -> Bundle:
        """Write `incident-<id>-<time>.tar.gz`; secrets are masked in every file."""
        detail = await self._incidents.get(incident_id)
        trace_ids = [
            str(v)
            for k, v in detail.incident.labels.items()
            if k == "trace_id" or k.endswith("_trace_id")
        ]
        for entry in detail.timeline:
            value = entry.details.get("trace_id") if isinstance(entry.details, dict) else None
            if isinstance(value, str):
                trace_ids.append(value)
        jobs = await self._retry.jobs_for_incident(incident_id) if self._retry else []
        trace_ids += [j.trace_id for j in jobs if j.trace_id]
        traces = await self._traces.many(sorted(set(trace_ids)))
        log_files = (
            sorted(self.log_dir.glob("*.log"))
            if self.log_dir is not None and self.log_dir.is_dir()
            else []
        )
        sources = read_files(log_files)
        since = detail.incident.first_seen_at - timedelta(minutes=10)
        journal = await journal_lines(self.journalctl, since)
        if journal:
            sources.append(("journal", journal))
        needles = needles_for(incident_id, [j.id for j in jobs], trace_ids)
        matched = matching_lines(sources, needles)
        errors = recent_error_lines(sources)
        now = self._clock.now()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"incident-{incident_id}-{now:%Y%m%d-%H%M%S}.tar.gz"
        files: dict[str, str] = {
            "incident.json": json.dumps(detail.to_json(), ensure_ascii=False, indent=2),
            "jobs.json": json.dumps([j.to_json() for j in jobs], ensure_ascii=False, indent=2),
            "matching.log": "\n".join(matched) + ("\n" if matched else ""),
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
        return Bundle(
            path,
            incident_id,
            [t.id for t in traces],
            len(errors),
            len(matched),
            [name for name, _ in sources],
            path.stat().st_size,
        )
