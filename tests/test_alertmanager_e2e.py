"""End to end with the real Alertmanager from Debian: its webhook reaches our intake."""

import io
import json
import subprocess
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from services.container import Services
from services.incident_types import IncidentView
from services.main import open_services
from services.models import IncidentState
from services.web.app import create_app
from tests.conftest import INTAKE, Client, free_port, require_program
from tests.test_probe import grant, pg_role, role_settings  # noqa: F401 (pg_role: fixture)
from tests.waiting import until

CONFIG = """
route:
  receiver: sunflow-ops
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sunflow-ops
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    amtool = require_program("amtool")
    shipped = Path(__file__).parent.parent / "deploy" / "alertmanager" / "alertmanager.yml"
    token = tmp_path / "token"
    token.write_text(INTAKE)
    config = tmp_path / "alertmanager.yml"
    text = shipped.read_text()
    assert "/etc/prometheus/sunflow-intake-token" in text
    config.write_text(text.replace("/etc/prometheus/sunflow-intake-token", str(token)))
    proc = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.fixture
def alertmanager_binary() -> str:
    return require_program("prometheus-alertmanager")


def start_alertmanager(
    binary: str, tmp: Path, webhook: str, *, config_text: str = CONFIG
) -> tuple[subprocess.Popen[bytes], str]:
    token_file = tmp / "token"
    token_file.write_text(INTAKE)
    config = tmp / "alertmanager.yml"
    config.write_text(config_text.format(url=webhook, token_file=token_file))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(10)


async def test_alertmanager_webhook_opens_and_resolves(
    client: Client,
    services: Services,
    alertmanager_binary: str,
    tmp_path: Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> None:
    webhook = str(client.make_url("/api/alerts/alertmanager"))
    proc, base = start_alertmanager(alertmanager_binary, tmp_path, webhook)
    stop_later.append(proc)
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "SSENoActiveConnections", "severity": "critical", "job": "gen"},
        "annotations": {"summary": "No active SSE connections but requests are coming in"},
        "startsAt": (now - timedelta(seconds=30)).isoformat(),
    }
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            try:
                async with session.get(f"{base}/-/ready") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await until(ready)
        async with session.post(f"{base}/api/v2/alerts", json=[alert]) as resp:
            assert resp.status == 200, await resp.text()

        async def opened() -> bool:
            return bool(await services.incidents.list())

        await until(opened)
        [incident] = await services.incidents.list()
        assert incident.severity.value == "P0"
        assert incident.title == "No active SSE connections but requests are coming in"
        assert incident.source == "alertmanager"

        ended = {**alert, "endsAt": (now - timedelta(seconds=1)).isoformat()}
        async with session.post(f"{base}/api/v2/alerts", json=[ended]) as resp:
            assert resp.status == 200

        async def resolved() -> bool:
            detail = await services.incidents.get(incident.id)
            return detail.incident.state is IncidentState.RESOLVED

        await until(resolved)
    assert isinstance(client.app, web.Application)


async def post_alerts(session: aiohttp.ClientSession, base: str, alerts: Sequence[object]) -> None:
    async def ready() -> bool:
        try:
            async with session.get(f"{base}/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await until(ready)
    raw = io.BytesIO(json.dumps(alerts).encode())
    headers = {"Content-Type": "application/json"}
    async with session.post(f"{base}/api/v2/alerts", data=raw, headers=headers) as resp:
        assert resp.status == 200, await resp.text()


def wide_alert(i: int, now: datetime) -> dict[str, object]:
    """75 labels and no alertname: Alertmanager takes and delivers such an alert."""
    labels = {f"label_{k:02d}": f"value-{k}" for k in range(74)}
    labels["node"] = f"node-{i:04d}"
    return {
        "labels": labels,
        "annotations": {"description": "an exporter that sets no alertname"},
        "startsAt": (now - timedelta(seconds=30)).isoformat(),
    }


async def test_a_group_of_2000_alerts_with_75_labels_and_no_alertname(
    client: Client,
    services: Services,
    alertmanager_binary: str,
    tmp_path: Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> None:
    """One notification of about 4 MB (Alertmanager's max_alerts 0: no cap) used to be
    answered 413 and dropped for good; now the group (grouped by an alertname none of
    them has) is one incident that counts all 2,000."""
    webhook = str(client.make_url("/api/alerts/alertmanager"))
    proc, base = start_alertmanager(alertmanager_binary, tmp_path, webhook)
    stop_later.append(proc)
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as session:
        await post_alerts(session, base, [wide_alert(i, now) for i in range(2000)])

        async def all_in() -> bool:
            views = await services.incidents.list()
            return bool(views) and (views[0].alert_group or {}).get("firing") == 2000

        await until(all_in, timeout=60)
    [one] = await services.incidents.list()
    assert one.source == "alertmanager" and one.title.startswith("Alert label_00=value-0 ")
    # The 74 labels they share: 63 kept, and truncated_labels folding the other 11.
    assert len(one.labels) == 64
    assert one.labels["truncated_labels"].startswith("11 more: label_63=value-63")
    assert one.alert_group is not None
    assert {a["title"] for a in one.alert_group["alerts"]} <= {
        f"node=node-{i:04d}" for i in range(2000)
    }


async def test_a_group_is_one_incident_through_its_life(
    client: Client,
    services: Services,
    alertmanager_binary: str,
    tmp_path: Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> None:
    """30 alerts of one group are one incident listing them; one of them ending shows in
    its list (Alertmanager re-sends the group), all of them ending resolves it."""
    webhook = str(client.make_url("/api/alerts/alertmanager"))
    proc, base = start_alertmanager(alertmanager_binary, tmp_path, webhook)
    stop_later.append(proc)
    now = datetime.now(UTC)
    alerts = [
        {
            "labels": {
                "alertname": "HighLatency",
                "severity": "critical" if i == 7 else "warning",
                "instance": f"web-{i:02d}",
            },
            "annotations": {"summary": "API latency is high"},
            "startsAt": (now - timedelta(seconds=30)).isoformat(),
        }
        for i in range(30)
    ]

    def group_of(view: IncidentView) -> dict[str, Any]:
        return view.alert_group or {}

    async with aiohttp.ClientSession() as session:
        await post_alerts(session, base, alerts)

        async def listed() -> IncidentView | None:
            views = await services.incidents.list()
            return views[0] if views and group_of(views[0]).get("firing") == 30 else None

        incident = await until(listed)
        assert len(await services.incidents.list()) == 1
        assert incident.title == "API latency is high"
        assert incident.severity.value == "P0"  # web-07's
        assert {a["title"] for a in group_of(incident)["alerts"]} == {
            f"instance=web-{i:02d}" for i in range(30)
        }

        ended = {**alerts[3], "endsAt": (now - timedelta(seconds=1)).isoformat()}
        await post_alerts(session, base, [ended])

        async def one_resolved() -> bool:
            view = (await services.incidents.get(incident.id)).incident
            return (group_of(view).get("firing"), group_of(view).get("resolved")) == (29, 1)

        await until(one_resolved)
        assert (await services.incidents.get(incident.id)).incident.is_open

        every = [{**a, "endsAt": (now - timedelta(seconds=1)).isoformat()} for a in alerts]
        await post_alerts(session, base, every)

        async def resolved() -> bool:
            view = (await services.incidents.get(incident.id)).incident
            return view.state is IncidentState.RESOLVED

        await until(resolved)
    assert len(await services.incidents.list()) == 1


# The five alerts are posted in one request. Alertmanager notifies at once for an alert that
# started more than group_wait ago, possibly before it has taken in the other four: these
# start now, and a group_wait of 3 s lets a loaded Alertmanager take in all five before its
# first notification, which then is the truncated one.
TRUNCATING = CONFIG.replace(
    "send_resolved: true", "send_resolved: true\n        max_alerts: 2"
).replace("group_wait: 1s", "group_wait: 3s", 1)


async def test_truncated_alerts_from_the_real_alertmanager(
    client: Client,
    services: Services,
    alertmanager_binary: str,
    tmp_path: Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> None:
    webhook = str(client.make_url("/api/alerts/alertmanager"))
    proc, base = start_alertmanager(alertmanager_binary, tmp_path, webhook, config_text=TRUNCATING)
    stop_later.append(proc)
    now = datetime.now(UTC)
    alerts = [
        {
            "labels": {"alertname": "SSEConnectionDropRate", "instance": f"gen-{i}"},
            "startsAt": now.isoformat(),
        }
        for i in range(5)
    ]
    async with aiohttp.ClientSession() as session:
        await post_alerts(session, base, alerts)

        async def truncated() -> bool:
            return any("truncated_alerts" in v.labels for v in await services.incidents.list())

        await until(truncated)
    [incident] = await services.incidents.list()
    assert incident.labels["truncated_alerts"] == "3"
    assert incident.alert_group is not None
    assert len(incident.alert_group["alerts"]) == 2
    assert incident.alert_group["truncated_alerts"] == 3
    metrics = services.metrics.render().decode()
    assert 'sunflow_alerts_truncated_total{source="alertmanager"} 3.0' in metrics


PAGERDUTY = """
route:
  receiver: sunflow-ops-pd
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sunflow-ops-pd
    pagerduty_configs:
      - routing_key_file: {token_file}
        url: {url}
        send_resolved: true
        severity: critical
"""


async def test_alertmanager_pagerduty_configs_pointed_here(
    client: Client,
    services: Services,
    alertmanager_binary: str,
    tmp_path: Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> None:
    """Alertmanager's own PagerDuty integration (Events API v2), its url: set to this
    service: a trigger opens the incident, the resolve event resolves it."""
    url = str(client.make_url("/v2/enqueue"))
    proc, base = start_alertmanager(alertmanager_binary, tmp_path, url, config_text=PAGERDUTY)
    stop_later.append(proc)
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "InstagramTokenExpired", "job": "token-monitor"},
        "annotations": {"summary": "The Instagram token has expired"},
        "startsAt": (now - timedelta(seconds=30)).isoformat(),
    }
    async with aiohttp.ClientSession() as session:
        await post_alerts(session, base, [alert])

        async def opened() -> bool:
            return bool(await services.incidents.list())

        await until(opened)
        [incident] = await services.incidents.list()
        assert incident.source == "pagerduty"
        assert incident.severity.value == "P0"
        assert incident.title.startswith("[FIRING:1] InstagramTokenExpired")
        assert incident.labels["client"] == "Alertmanager"
        assert "num_firing: 1" in incident.description
        assert len(incident.dedup_key) == 64  # Alertmanager's hash of the group key

        ended = {**alert, "endsAt": (now - timedelta(seconds=1)).isoformat()}
        async with session.post(f"{base}/api/v2/alerts", json=[ended]) as resp:
            assert resp.status == 200

        async def resolved() -> bool:
            detail = await services.incidents.get(incident.id)
            return detail.incident.state is IncidentState.RESOLVED

        await until(resolved)
    detail = await services.incidents.get(incident.id)
    assert detail.incident.resolved_by == "pagerduty"


async def test_a_503_is_retried_by_alertmanager_until_the_database_takes_it(
    pg_url: str,
    pg_role: tuple[str, str],  # noqa: F811 (the fixture)
    alertmanager_binary: str,
    tmp_path: Path,
    stop_later: list[subprocess.Popen[bytes]],
) -> None:
    """Why the intake answers 503 when the database refuses a commit: Alertmanager retries
    a 5xx (and never a 4xx), so the alert arrives once writes work again."""
    role, url = pg_role
    await grant(
        pg_url,
        f'GRANT USAGE ON SCHEMA public TO "{role}"',
        f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"',
    )
    settings = role_settings(url, tmp_path)
    async with (
        open_services(settings) as services,
        TestClient(TestServer(create_app(settings, services))) as client,
    ):
        webhook = str(client.make_url("/api/alerts/alertmanager"))
        proc, base = start_alertmanager(alertmanager_binary, tmp_path, webhook)
        stop_later.append(proc)
        now = datetime.now(UTC)
        alert = {
            "labels": {"alertname": "DiskFull", "severity": "critical"},
            "startsAt": (now - timedelta(seconds=30)).isoformat(),
        }

        def answered(status: str) -> float:
            for family in text_string_to_metric_families(services.metrics.render().decode()):
                for sample in family.samples:
                    labels = sample.labels
                    if (
                        sample.name == "http_requests_total"
                        and labels.get("endpoint") == "/api/alerts/alertmanager"
                        and labels.get("status") == status
                    ):
                        return sample.value
            return 0.0

        async with aiohttp.ClientSession() as session:
            await post_alerts(session, base, [alert])

            async def refused_twice() -> bool:
                return answered("503") >= 2

            await until(refused_twice)
            await grant(
                pg_url,
                f'GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"',
                f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
            )

            async def taken() -> bool:
                return bool(await services.incidents.list())

            await until(taken, timeout=60)
        [incident] = await services.incidents.list()
        assert incident.title == "DiskFull" and incident.severity.value == "P0"
        assert answered("202") >= 1 and answered("400") == 0
