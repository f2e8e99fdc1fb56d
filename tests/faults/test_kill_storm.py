"""kill -9 of `serve` in the middle of a storm of 10,000 alerts: every 2xx answer is kept."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import intake_headers
from tests.faults.conftest import base_settings, query
from tests.faults.process import Served

pytestmark = pytest.mark.slow

# 10,000 alerts in `make soak`, 1,000 in `make test`.
STORMS = [1000, pytest.param(10_000, marks=pytest.mark.soak)]
# Alerts repeat on this many dedup keys, as a real storm does; each answered alert must then
# be counted in its incident's occurrence_count.
KEYS = 200
CONCURRENCY = 64


def key_of(alert: str) -> str:
    return f"storm-key-{int(alert.rsplit('-', 1)[1]) % KEYS:03d}"


async def storm(
    served: Served, keys: list[str], answered: set[str], stop: asyncio.Event
) -> tuple[int, int]:
    """POST each alert until all are sent or `stop` is set. (sent, failed)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)
    sent = failed = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal sent, failed
        while not queue.empty() and not stop.is_set():
            key = queue.get_nowait()
            body = {
                "severity": "P3",
                "title": f"storm {key_of(key)}",
                "dedup_key": key_of(key),
                "description": key,
                "source": "storm",
            }
            sent += 1
            try:
                async with http.post(
                    f"{served.base}/api/alerts", json=body, headers=intake_headers()
                ) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        answered.add(key)
                    else:
                        failed += 1
            except (aiohttp.ClientError, TimeoutError):
                failed += 1  # the process died under this request: not answered, not promised

    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))
    return sent, failed


@pytest.mark.parametrize("storm_size", STORMS)
async def test_every_alert_answered_2xx_survives_kill_9(
    migrated_url: str, tmp_path: Path, served_factory: list[Served], storm_size: int
) -> None:
    served = Served(base_settings(migrated_url, tmp_path), tmp_path / "serve.log", tmp_path)
    served_factory.append(served)
    await served.start()
    keys = [f"storm-{i:05d}" for i in range(storm_size)]
    answered: set[str] = set()

    # The first half of the storm, then kill -9 while requests are in flight.
    half = storm_size // 2
    stop = asyncio.Event()
    task = asyncio.create_task(storm(served, keys, answered, stop))
    while len(answered) < half and not task.done():
        await asyncio.sleep(0.005)
    await served.kill9()
    stop.set()  # no new requests; the ones in flight at the kill fail
    sent_before, failed_before = await task
    answered_before_kill = set(answered)

    # Restart; the rest of the storm (and the ones that got no answer) go to the new process.
    await served.start()
    rest = [k for k in keys if k not in answered]
    sent_after, failed_after = await storm(served, rest, answered, asyncio.Event())
    await served.stop()

    counts = dict(await query(migrated_url, "SELECT dedup_key, occurrence_count FROM incidents"))
    answered_per_key = Counter(key_of(a) for a in answered_before_kill)
    lost = sum(max(0, n - counts.get(k, 0)) for k, n in answered_per_key.items())
    stored = sum(counts.values())
    print(
        f"storm: {len(answered_before_kill)} answered 2xx before kill -9, "
        f"{failed_before} in flight at the kill (no answer), "
        f"{len(answered_before_kill) - lost} kept, {lost} lost; "
        f"after restart {len(answered) - len(answered_before_kill)} more answered, "
        f"{failed_after} failed; {stored} occurrences stored in {len(counts)} incidents; "
        f"start-up {served.startups[-1]:.2f}s"
    )
    assert len(answered_before_kill) >= half
    assert lost == 0
    assert failed_after == 0
    assert len(answered) == storm_size
    assert all(counts.get(k, 0) >= n for k, n in Counter(map(key_of, answered)).items())
    # (A clean stop may log cancelled scheduler jobs; only the running service is judged.)
    assert "Traceback" not in served.log_text().split(" INFO sunflow_ops: stopping")[0]
