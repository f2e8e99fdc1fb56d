"""The weekly report: incidents by severity, response times, missed deadlines, noisy keys."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from services.clock import Clock
from services.db import Database
from services.durations import format_duration
from services.incident_types import ChangeKind
from services.locales import Texts
from services.models import Incident, TimelineEvent
from services.severity import Severity


@dataclass(frozen=True)
class ResponseStats:
    count: int
    mean: timedelta | None
    p90: timedelta | None


@dataclass(frozen=True)
class Report:
    start: datetime
    end: datetime
    by_severity: dict[Severity, int]
    per_day: list[tuple[datetime, dict[Severity, int]]]
    acknowledge: dict[Severity, ResponseStats]
    resolve: dict[Severity, ResponseStats]
    deadlines_missed: dict[Severity, int]
    noisy_keys: list[tuple[str, str, int]]
    still_open: int

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())

    def to_json(self) -> dict[str, object]:
        def stats(s: ResponseStats) -> dict[str, object]:
            return {
                "count": s.count,
                "mean_seconds": s.mean.total_seconds() if s.mean else None,
                "p90_seconds": s.p90.total_seconds() if s.p90 else None,
            }

        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "total": self.total,
            "by_severity": {k.value: v for k, v in self.by_severity.items()},
            "acknowledge": {k.value: stats(v) for k, v in self.acknowledge.items()},
            "resolve": {k.value: stats(v) for k, v in self.resolve.items()},
            "deadlines_missed": {k.value: v for k, v in self.deadlines_missed.items()},
            "noisy_keys": [
                {"dedup_key": k, "title": t, "occurrences": n} for k, t, n in self.noisy_keys
            ],
            "still_open": self.still_open,
        }


def response_stats(samples: list[timedelta]) -> ResponseStats:
    """Mean and nearest-rank 90th percentile; pure."""
    if not samples:
        return ResponseStats(0, None, None)
    ordered = sorted(samples)
    mean = sum(ordered, timedelta(0)) / len(ordered)
    rank = max(1, math.ceil(0.9 * len(ordered)))
    return ResponseStats(len(ordered), mean, ordered[rank - 1])


def _fmt(value: timedelta | None) -> str:
    return format_duration(value) if value is not None else "—"


def summary_text(report: Report, *, language: str, title: Callable[[str], str] = str) -> str:
    """Plain text for the chat (the bot escapes and formats it); `title` words an incident's
    title in the chat's language (the bot's catalogue: the titles our services write)."""
    text = Texts(language)
    by_severity = ", ".join(f"{s.value} {n}" for s, n in report.by_severity.items())
    lines = [
        f"{text.t('report.title')}: {report.start:%Y-%m-%d} – {report.end:%Y-%m-%d}",
        text.t("report.incidents", total=report.total, by_severity=by_severity),
    ]
    for severity in Severity:
        ack, res = report.acknowledge[severity], report.resolve[severity]
        if not (ack.count or res.count):
            continue
        lines.append(
            text.t(
                "report.times",
                severity=severity.value,
                ack_mean=_fmt(ack.mean),
                ack_p90=_fmt(ack.p90),
                resolve_mean=_fmt(res.mean),
                resolve_p90=_fmt(res.p90),
            )
        )
    lines.append(text.t("report.missed", count=sum(report.deadlines_missed.values())))
    lines.append(text.t("report.open", count=report.still_open))
    if report.noisy_keys:
        lines.append(text.t("report.noisiest"))
        lines += [f"  {n}× {title(name)} ({key})" for key, name, n in report.noisy_keys]
    return "\n".join(lines)


def chart_png(report: Report) -> bytes:
    """A stacked bar chart of the week's incidents per day by severity. It holds no words,
    only dates and severities, so it reads the same in either language (the summary above
    it is worded; matplotlib's own fonts have no Hangul)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colors = {Severity.P0: "#c62828", Severity.P1: "#ef6c00", Severity.P2: "#f9a825",
              Severity.P3: "#607d8b"}  # fmt: skip
    days = [d.strftime("%m-%d") for d, _ in report.per_day]
    figure, axes = plt.subplots(figsize=(8, 3.6), dpi=100)
    try:
        bottom = [0] * len(days)
        for severity in Severity:
            values = [counts.get(severity, 0) for _, counts in report.per_day]
            axes.bar(days, values, bottom=bottom, label=severity.value, color=colors[severity])
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        axes.set_title(f"{report.start:%Y-%m-%d} – {report.end:%Y-%m-%d}")
        axes.legend(loc="upper left", ncols=4, fontsize="small")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        figure.tight_layout()
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(figure)


class ReportService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def weekly(self, *, end: datetime | None = None, days: int = 7) -> Report:
        end = end or self._clock.now()
        start = end - timedelta(days=days)
        async with self._db.read() as session:
            rows = (
                await session.scalars(
                    select(Incident).where(
                        Incident.first_seen_at >= start, Incident.first_seen_at < end
                    )
                )
            ).all()
            missed_rows = (
                await session.execute(
                    select(Incident.severity, func.count())
                    .join(TimelineEvent, TimelineEvent.incident_id == Incident.id)
                    .where(
                        TimelineEvent.kind == ChangeKind.DEADLINE_MISSED.value,
                        TimelineEvent.at >= start,
                        TimelineEvent.at < end,
                    )
                    .group_by(Incident.severity)
                )
            ).all()
            still_open = await session.scalar(
                select(func.count()).select_from(Incident).where(Incident.state != "resolved")
            )
        by_severity = {s: 0 for s in Severity}
        ack: dict[Severity, list[timedelta]] = {s: [] for s in Severity}
        res: dict[Severity, list[timedelta]] = {s: [] for s in Severity}
        day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
        per_day = [(day0 + timedelta(days=i), {s: 0 for s in Severity}) for i in range(days + 1)]
        for row in rows:
            severity = Severity(row.severity)
            by_severity[severity] += 1
            index = (row.first_seen_at - day0).days
            if 0 <= index < len(per_day):
                per_day[index][1][severity] += 1
            if row.acknowledged_at:
                ack[severity].append(row.acknowledged_at - row.first_seen_at)
            if row.resolved_at:
                res[severity].append(row.resolved_at - row.first_seen_at)
        noisy = sorted(rows, key=lambda r: (-r.occurrence_count, r.id))[:5]
        return Report(
            start=start,
            end=end,
            by_severity=by_severity,
            per_day=[d for d in per_day if d[0] < end],
            acknowledge={s: response_stats(v) for s, v in ack.items()},
            resolve={s: response_stats(v) for s, v in res.items()},
            deadlines_missed={s: 0 for s in Severity} | {Severity(k): n for k, n in missed_rows},
            noisy_keys=[
                (r.dedup_key, r.title, r.occurrence_count) for r in noisy if r.occurrence_count > 1
            ],
            still_open=int(still_open or 0),
        )
