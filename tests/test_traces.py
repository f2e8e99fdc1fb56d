import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.clock import FrozenClock
from services.config import Settings
from services.db import Database
from services.errors import InvalidInput, NotFound
from services.traces import TraceService, check_trace_id, new_trace_id

T0 = datetime(2026, 1, 30, 9, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "suffix", "expected"),
    [
        (T0, "a1b2", "SF-20260130-091500-a1b2"),
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "0000", "SF-20261231-235959-0000"),
    ],
)
def test_new_trace_id(now: datetime, suffix: str, expected: str) -> None:
    assert new_trace_id(now=now, suffix=suffix) == expected
    assert check_trace_id(expected) == expected


@pytest.mark.parametrize("bad", ["", "SF-2026-x", "sf-20260130-091500-a1b2", "../etc/passwd"])
def test_check_trace_id_refuses(bad: str) -> None:
    with pytest.raises(InvalidInput, match="not a trace id"):
        check_trace_id(bad)


async def test_steps_durations_errors_and_export(settings: Settings, tmp_path: Path) -> None:
    db = Database(settings.database_url)
    clock = FrozenClock(T0)
    traces = TraceService(db, clock, export_dir=tmp_path / "traces")
    try:
        run = await traces.start("publish", "sunflower")
        async with run.step("images") as step:
            step.details["found"] = 2
        with pytest.raises(RuntimeError):
            async with run.step("upload"):
                raise RuntimeError("Cloudinary answered 500")
        await run.note("fallback_archive", status="fallback", image="a.png")
        clock.advance(seconds=3)
        view = await run.finish(error="Cloudinary answered 500")
        assert view.status == "error"
        assert view.duration_ms == 3000
        assert [(s.name, s.status) for s in view.steps] == [
            ("images", "ok"),
            ("upload", "error"),
            ("fallback_archive", "fallback"),
        ]
        assert view.steps[0].details == {"found": 2}
        assert view.steps[1].error == "Cloudinary answered 500"
        exported = json.loads((tmp_path / "traces" / f"{run.id}.json").read_text())
        assert exported == view.to_json()
        assert exported["trace_id"] == run.id and len(exported["steps"]) == 3

        clock.advance(minutes=1)
        second = await traces.start("stats", "")
        await second.finish()
        listed = await traces.list(limit=10)
        assert [t.id for t in listed] == [second.id, run.id]
        assert [t.id for t in await traces.list(status="error")] == [run.id]
        with pytest.raises(NotFound):
            await traces.get(new_trace_id(now=T0 + timedelta(days=1), suffix="ffff"))
        assert [t.id for t in await traces.many([run.id, "junk", run.id])] == [run.id]
    finally:
        await db.dispose()
