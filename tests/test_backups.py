from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.backups import (
    BackupService,
    env_lines,
    is_secret,
    merge_env,
    public_settings,
    without_secrets,
)
from services.clock import FrozenClock
from services.errors import InvalidInput, NotFound
from tests.conftest import make_settings

T0 = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)
ENV = """# SunFlow
HTTP_PORT=8002
INSTAGRAM_ACCESS_TOKEN="IGQVJ-secret-token"
CLOUDINARY_URL=cloudinary://key:sec@cloud
FAL_KEY=fal-secret
ADMIN_TOKEN=admin-secret
DATABASE_URL=postgresql+asyncpg://user:pw@127.0.0.1/sunflow
TOKEN_ALERT_DAYS=14,3
"""


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("INSTAGRAM_ACCESS_TOKEN", "x", True),
        ("FAL_KEY", "x", True),
        ("CLOUDINARY_URL", "cloudinary://a:b@c", True),
        ("INSTAGRAM_APP_SECRET", "x", True),
        ("DATABASE_URL", "postgresql+asyncpg://u:p@h/db", True),
        ("DATABASE_URL", "sqlite+aiosqlite:///./data/sunflow.db", False),
        ("HTTP_PORT", "8002", False),
        ("TOKEN_ALERT_DAYS", "14,3", False),
        ("TELEGRAM_WEBHOOK_SECRET", "x", True),
    ],
)
def test_is_secret(name: str, value: str, secret: bool) -> None:
    assert is_secret(name, value) is secret


def test_without_secrets_and_merge() -> None:
    public = without_secrets(ENV)
    for secret in ("IGQVJ-secret-token", "sec@cloud", "fal-secret", "admin-secret", "pw@"):
        assert secret not in public
    assert "HTTP_PORT=8002" in public
    merged = merge_env("HTTP_PORT=9000\nFAL_KEY=kept-key\n", public)
    assert "HTTP_PORT=8002" in merged and "FAL_KEY=kept-key" in merged
    assert [n for n, _ in env_lines(merged) if n] == ["HTTP_PORT", "TOKEN_ALERT_DAYS", "FAL_KEY"]


async def test_create_list_restore_and_refusals(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(ENV)
    policy = tmp_path / "policy.toml"
    policy.write_text("[ladder]\nv = 1\n")
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        backup_dir=tmp_path / "backups",
        env_file_path=env,
        escalation_policy_file=policy,
        instagram_access_token="IGQVJ-secret-token",
    )
    assert "IGQVJ-secret-token" not in str(public_settings(settings))
    clock = FrozenClock(T0)
    backups = BackupService(settings, clock)
    first = await backups.create(actor="test", note="before change")
    assert first.files == ["env", "policy.toml", "settings.json"]
    for path in (tmp_path / "backups" / first.id).iterdir():
        text = path.read_text()
        for secret in ("IGQVJ-secret-token", "admin-secret", "fal-secret", "intake-test-token"):
            assert secret not in text, path.name

    env.write_text("HTTP_PORT=9999\nFAL_KEY=new-fal-key\n")
    policy.write_text("[ladder]\nv = 2\n")
    clock.advance(minutes=1)
    result = await backups.restore(first.id, actor="test")
    assert "HTTP_PORT=8002" in env.read_text()
    assert "FAL_KEY=new-fal-key" in env.read_text()  # secrets in place are kept
    assert policy.read_text() == "[ladder]\nv = 1\n"
    # The state before the restore was snapshotted first.
    assert result.snapshot.note == f"before restoring {first.id}"
    snap = tmp_path / "backups" / result.snapshot.id / "policy.toml"
    assert snap.read_text() == "[ladder]\nv = 2\n"
    assert [b.id for b in await backups.list()] == [result.snapshot.id, first.id]

    with pytest.raises(NotFound, match="no backup 20260130-000000-abcd"):
        await backups.restore("20260130-000000-abcd", actor="test")
    with pytest.raises(InvalidInput, match="not a backup id"):
        await backups.restore("../../etc", actor="test")
    (tmp_path / "backups" / first.id / "policy.toml").write_text("tampered")
    with pytest.raises(InvalidInput, match="corrupt: policy.toml fails its checksum"):
        await backups.restore(first.id, actor="test")
    assert len(await backups.list()) == 2  # a refused restore snapshots nothing
