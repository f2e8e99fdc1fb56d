import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.config import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env from the developer's tree
    for name in list(os.environ):
        if name.startswith(
            ("TELEGRAM_", "HTTP_", "BOT_", "DATABASE_", "SSE_", "ADMIN_", "INTAKE_")
        ):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 8002
    assert settings.database_url == "sqlite+aiosqlite:///./data/sunflow.db"
    assert settings.bot_language == "ko"
    assert settings.max_sse_connections == 1000
    assert settings.telegram_bot_token is None


def test_sse_defaults() -> None:
    settings = load_settings()
    assert settings.sse_history_size == 1000
    assert settings.sse_history_seconds == 3600
    assert settings.sse_retry_ms == 3000
    assert settings.probe_jobs == ("test-job-id", "test-job")


def test_id_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_ADMIN_USER_IDS", "1, 2,3")
    monkeypatch.setenv("TELEGRAM_PD_USER_IDS", "")
    settings = load_settings()
    assert settings.admin_user_ids == [1, 2, 3]
    assert settings.pd_user_ids == []


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HTTP_PORT=9100\nBOT_LANGUAGE=en\n")
    settings = load_settings()
    assert settings.http_port == 9100
    assert settings.bot_language == "en"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("HTTP_PORT", "eighty", "setting HTTP_PORT:"),
        ("HTTP_PORT", "70000", "setting HTTP_PORT:"),
        ("BOT_LANGUAGE", "fr", "setting BOT_LANGUAGE:"),
        ("DATABASE_URL", "not a url", "setting DATABASE_URL: not a SQLAlchemy URL"),
        ("DATABASE_URL", "mysql://x/y", "setting DATABASE_URL: driver 'mysql' is not supported"),
        ("TELEGRAM_ADMIN_USER_IDS", "1,bob", "setting TELEGRAM_ADMIN_USER_IDS:"),
        ("TELEGRAM_API_BASE", "api.telegram.org", "setting TELEGRAM_API_BASE: must start with"),
        ("TELEGRAM_TEAM_CHAT_ID", "team", "setting TELEGRAM_TEAM_CHAT_ID:"),
        ("SSE_PROBE_JOBS", "test-job,bad id", "setting SSE_PROBE_JOBS: 'bad id':"),
        ("SSE_RETRY_MS", "10", "setting SSE_RETRY_MS:"),
        ("SSE_HISTORY_SIZE", "0", "setting SSE_HISTORY_SIZE:"),
        ("SSE_CLIENT_BUFFER_BYTES", "100", "setting SSE_CLIENT_BUFFER_BYTES:"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_secrets_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:hunter2secret@db/x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "hunter2secret" not in str(info.value)


def test_bad_setting_stops_startup_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_", "BOT_"))}
    env["HTTP_PORT"] = "abc"
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sunflow-ops: setting HTTP_PORT:")
    assert "Traceback" not in proc.stderr


def test_every_setting_is_in_env_example() -> None:
    from services.config import Settings

    text = (Path(__file__).parent.parent / ".env.example").read_text("utf-8")
    names = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line[:40]}
    missing = [f.upper() for f in Settings.model_fields if f.upper() not in names]
    assert missing == []
