import asyncio
import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Client, free_port, intake_headers, require_program
from tests.sse_wire import StreamParser

pytestmark = pytest.mark.e2e

CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "sunflow-ops.conf"


def site_for(upstream_port: int, listen_port: int) -> str:
    """The deployed site with this test's ports; everything else exactly as shipped."""
    text = CONF.read_text()
    text, upstreams = re.subn(
        r"server 127\.0\.0\.1:8002;", f"server 127.0.0.1:{upstream_port};", text
    )
    text, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", text)
    assert (upstreams, listens) == (1, 1)
    return text


@pytest.fixture
def nginx(client: Client, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    assert client.port is not None
    with run_nginx(site_for(client.port, port), port, tmp_path) as url:
        yield url


@contextlib.contextmanager
def run_nginx(site: str, port: int, tmp_path: Path) -> Iterator[str]:
    """The Debian nginx serving `site` (listening on `port`) until the block ends."""
    program = require_program("nginx")
    (tmp_path / "site.conf").write_text(site)
    # A distribution-like main context, with gzip on for event streams as a trap: the SSE
    # location must switch it off.
    (tmp_path / "nginx.conf").write_text(
        f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
    include {tmp_path}/site.conf;
}}
"""
    )
    conf = str(tmp_path / "nginx.conf")
    check = subprocess.run(
        [program, "-t", "-c", conf, "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [program, "-c", conf, "-p", str(tmp_path)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


async def test_events_pass_through_nginx_unbuffered(
    client: Client, nginx: str, record_property: Callable[[str, object], None]
) -> None:
    job = "/api/generation/jobs/nginx-job/events"
    first = await client.post(job, json={"type": "progress", "data": 0}, headers=intake_headers())
    assert first.status == 202
    latencies = []
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(
            nginx + job,
            headers={"Accept": "text/event-stream", "Accept-Encoding": "gzip"},
        ) as stream,
    ):
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert "Content-Encoding" not in stream.headers  # gzip is off for the stream
        assert stream.headers["X-Accel-Buffering"] == "no"
        parser = StreamParser()
        while not parser.events:
            parser.feed((await stream.content.readany()).decode())
        for n in range(1, 21):
            sent = time.perf_counter()
            # Publish through nginx too, as a worker behind the same proxy would.
            async with session.post(
                nginx + job, json={"type": "progress", "data": n}, headers=intake_headers()
            ) as published:
                assert published.status == 202
            # A small event (about 40 bytes) and no more bytes behind it: with buffering
            # anywhere in nginx it would sit there and this read would time out.
            while len(parser.events) < n + 1:
                chunk = await asyncio.wait_for(stream.content.readany(), 10)
                parser.feed(chunk.decode())
            latencies.append((time.perf_counter() - sent) * 1000)
        assert [int(e.data) for e in parser.events] == list(range(21))
    latencies.sort()
    # Recorded, not asserted: a shared machine makes timings noisy (docs/benchmarks.md).
    record_property("nginx_publish_to_receive_ms_p50", round(latencies[len(latencies) // 2], 2))
    record_property("nginx_publish_to_receive_ms_max", round(latencies[-1], 2))
    print(
        f"through nginx: p50 {latencies[len(latencies) // 2]:.2f} ms, max {latencies[-1]:.2f} ms"
    )


async def test_the_runbook_grep_finds_the_sse_settings() -> None:
    # `grep -n "proxy_buffering\|proxy_cache" /etc/nginx/sites-enabled/*` (runbook, 4단계).
    found = subprocess.run(
        ["grep", "-n", r"proxy_buffering\|proxy_cache", str(CONF)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "proxy_buffering off;" in found.stdout
    assert "proxy_cache off;" in found.stdout
