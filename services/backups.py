"""Configuration backups: settings without secrets, `.env` without secrets, the policy file."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.clock import Clock
from services.config import Settings
from services.errors import InvalidInput, NotFound

BACKUP_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
_SECRET_NAME = re.compile(r"TOKEN$|SECRET|PASSWORD|PASSWD|(^|_)KEY$|CLOUDINARY_URL")
_CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def new_backup_id(*, now: datetime, suffix: str) -> str:
    return f"{now.strftime('%Y%m%d-%H%M%S')}-{suffix}"


def is_secret(name: str, value: str) -> bool:
    """A setting kept out of backups: its name says secret, or its value holds credentials."""
    return bool(_SECRET_NAME.search(name.upper()) or _CREDENTIALS_IN_URL.search(value))


def public_settings(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) or value is None:
            continue
        text = str(value)
        if is_secret(name, text):
            continue
        out[name.upper()] = value if isinstance(value, int | float | bool) else text
    return out


def env_lines(text: str) -> list[tuple[str | None, str]]:
    """(name or None for comments and blanks, the line) for each line of a `.env` file."""
    out: list[tuple[str | None, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            out.append((None, line))
            continue
        name = stripped.removeprefix("export ").split("=", 1)[0].strip()
        out.append((name, line))
    return out


def without_secrets(text: str) -> str:
    kept = []
    for name, line in env_lines(text):
        value = line.split("=", 1)[1] if name else ""
        if name and is_secret(name, value):
            continue
        kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def merge_env(current: str, restored: str) -> str:
    """The restored public lines, with the current file's secret lines kept as they are."""
    secret_lines = [
        line
        for name, line in env_lines(current)
        if name and is_secret(name, line.split("=", 1)[1])
    ]
    body = restored.rstrip("\n")
    if secret_lines:
        body += "\n# Secrets kept from the file in place at restore time.\n" + "\n".join(
            secret_lines
        )
    return body + "\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BackupInfo:
    id: str
    created_at: datetime
    actor: str
    note: str
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "actor": self.actor,
            "note": self.note,
            "files": self.files,
        }

    def line(self) -> str:
        note = f"  {self.note}" if self.note else ""
        when = f"{self.created_at:%Y-%m-%d %H:%M} UTC"
        return f"{self.id}  {when}  {self.actor}  {','.join(self.files)}{note}"


@dataclass(frozen=True)
class RestoreResult:
    restored: BackupInfo
    snapshot: BackupInfo
    written: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "restored": self.restored.to_json(),
            "snapshot": self.snapshot.to_json(),
            "written": self.written,
        }

    def text(self) -> str:
        return (
            f"restored {self.restored.id} ({', '.join(self.written) or 'nothing to write'}); "
            f"the state before is backup {self.snapshot.id}. Restart sunflow-ops serve to apply."
        )


class BackupService:
    """`backup list|create|restore ID`; a restore snapshots the current state first."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self.directory = settings.backup_dir
        self.env_file = settings.env_file_path
        self.policy_file = settings.escalation_policy_file

    def _targets(self) -> dict[str, Path]:
        targets = {"env": self.env_file}
        if self.policy_file is not None:
            targets["policy.toml"] = self.policy_file
        return targets

    async def create(self, *, actor: str, note: str = "") -> BackupInfo:
        now = self._clock.now()
        backup_id = new_backup_id(now=now, suffix=secrets.token_hex(2))
        folder = self.directory / backup_id
        folder.mkdir(parents=True, exist_ok=False)
        contents: dict[str, bytes] = {
            "settings.json": json.dumps(
                public_settings(self._settings), ensure_ascii=False, indent=2, default=str
            ).encode()
        }
        if self.env_file.is_file():
            contents["env"] = without_secrets(self.env_file.read_text("utf-8")).encode()
        if self.policy_file is not None and self.policy_file.is_file():
            contents["policy.toml"] = self.policy_file.read_bytes()
        targets = self._targets()
        files: dict[str, Any] = {}
        for name, data in contents.items():
            (folder / name).write_bytes(data)
            files[name] = {"sha256": _sha256(data), "target": str(targets.get(name, ""))}
        manifest = {
            "id": backup_id,
            "created_at": now.isoformat(),
            "actor": actor,
            "note": note[:200],
            "files": files,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), "utf-8")
        return self._info(manifest)

    @staticmethod
    def _info(manifest: dict[str, Any]) -> BackupInfo:
        return BackupInfo(
            id=str(manifest["id"]),
            created_at=datetime.fromisoformat(str(manifest["created_at"])),
            actor=str(manifest.get("actor", "")),
            note=str(manifest.get("note", "")),
            files=sorted(manifest.get("files", {})),
        )

    def _manifest(self, backup_id: str) -> dict[str, Any]:
        if not BACKUP_ID.fullmatch(backup_id):
            raise InvalidInput(
                f"{backup_id!r} is not a backup id (like 20260130-091500-a1b2)",
                detail={"reason": "not_backup_id", "value": backup_id},
            )
        path = self.directory / backup_id / "manifest.json"
        if not path.is_file():
            raise NotFound(
                f"no backup {backup_id}; see `sunflow-ops backup list`",
                detail={"reason": "no_backup", "value": backup_id},
            )
        try:
            manifest = json.loads(path.read_text("utf-8"))
            if not isinstance(manifest, dict) or manifest.get("id") != backup_id:
                raise ValueError("manifest id mismatch")
            self._info(manifest)
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(
                f"backup {backup_id} is corrupt: unreadable manifest",
                detail={"reason": "backup_corrupt", "value": backup_id, "file": "manifest.json"},
            ) from None
        return manifest

    async def list(self) -> list[BackupInfo]:
        if not self.directory.is_dir():
            return []
        found = []
        for folder in self.directory.iterdir():
            if folder.is_dir() and BACKUP_ID.fullmatch(folder.name):
                try:
                    found.append(self._info(self._manifest(folder.name)))
                except (InvalidInput, NotFound):
                    continue
        return sorted(found, key=lambda b: (b.created_at, b.id), reverse=True)

    def verify(self, backup_id: str) -> dict[str, bytes]:
        """Every file present and matching its checksum, or InvalidInput naming the problem."""
        manifest = self._manifest(backup_id)
        contents = {}
        for name, meta in dict(manifest.get("files", {})).items():
            path = self.directory / backup_id / name
            if not path.is_file():
                raise InvalidInput(
                    f"backup {backup_id} is corrupt: {name} is missing",
                    detail={"reason": "backup_corrupt", "value": backup_id, "file": name},
                )
            data = path.read_bytes()
            if _sha256(data) != meta.get("sha256"):
                raise InvalidInput(
                    f"backup {backup_id} is corrupt: {name} fails its checksum",
                    detail={"reason": "backup_corrupt", "value": backup_id, "file": name},
                )
            contents[name] = data
        return contents

    async def restore(self, backup_id: str, *, actor: str) -> RestoreResult:
        backup_id = backup_id.strip()
        contents = self.verify(backup_id)
        restored = self._info(self._manifest(backup_id))
        snapshot = await self.create(actor=actor, note=f"before restoring {backup_id}")
        written = []
        if "env" in contents:
            current = self.env_file.read_text("utf-8") if self.env_file.is_file() else ""
            self.env_file.parent.mkdir(parents=True, exist_ok=True)
            self.env_file.write_text(merge_env(current, contents["env"].decode()), "utf-8")
            written.append(str(self.env_file))
        if "policy.toml" in contents and self.policy_file is not None:
            self.policy_file.parent.mkdir(parents=True, exist_ok=True)
            self.policy_file.write_bytes(contents["policy.toml"])
            written.append(str(self.policy_file))
        return RestoreResult(restored, snapshot, written)
