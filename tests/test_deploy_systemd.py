"""The systemd unit for several instances and its settings file, as shipped in deploy/."""

from __future__ import annotations

import getpass
import grp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.config import Settings
from tests.conftest import require_program

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
UNIT = DEPLOY / "sunflow-ops@.service"
ENV = DEPLOY / "sunflow-ops.env.example"


def test_the_unit_verifies_as_an_instance_per_port(tmp_path: Path) -> None:
    program = require_program("systemd-analyze")
    entry = Path(sys.executable).parent / "sunflow-ops"
    assert entry.exists(), "the console script is installed with the package"
    user = getpass.getuser()
    text = UNIT.read_text()
    assert "/opt/sunflow-ops/.venv/bin/sunflow-ops serve" in text
    # This machine's paths and user; everything else as shipped.
    text = text.replace("/opt/sunflow-ops/.venv/bin/sunflow-ops", str(entry))
    text = text.replace("User=sunflow-ops", f"User={user}")
    text = text.replace("Group=sunflow-ops", f"Group={grp.getgrgid(os.getgid()).gr_name}")
    instance = tmp_path / "sunflow-ops@8002.service"
    instance.write_text(text)
    done = subprocess.run(
        [program, "verify", str(instance)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Unknown" not in done.stderr, done.stderr
    assert "Environment=HTTP_PORT=%i" in text and "Environment=INSTANCE_ID=%H:%i" in text


def test_every_setting_in_the_shared_env_file_exists() -> None:
    known = {name.upper() for name in Settings.model_fields}
    keys = [
        line.split("=", 1)[0]
        for line in ENV.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert keys, "the example sets something"
    assert [k for k in keys if k not in known] == []
    # Per instance, from the unit: never shared.
    assert "HTTP_PORT" not in keys and "INSTANCE_ID" not in keys
    assert any(k == "DATABASE_URL" for k in keys)


def test_the_unit_gives_room_for_every_stream() -> None:
    """systemd's default of 1,024 descriptors is spent by the default 1,000 SSE streams; the
    unit's LimitNOFILE is at least what the start-up warning asks for, with headroom."""
    from services.web.limits import wanted_nofile

    [line] = [x for x in UNIT.read_text().splitlines() if x.startswith("LimitNOFILE=")]
    limit = int(line.split("=", 1)[1])
    default = Settings.model_fields["max_sse_connections"].default
    assert limit >= 2 * wanted_nofile(default)
    assert limit >= wanted_nofile(31_000)  # the unit's comment says so
    assert limit >= wanted_nofile(20_000)  # what one process holds (docs/benchmarks.md)
