"""Logging set-up: stderr, LOG_DIR's rotating files, every configured secret masked.

The playbook greps `config/logs/*.log` and tails `config/logs/*_stderr.log`; with LOG_DIR
(default `./logs`) the same lines work with the path changed: `sunflow-ops.log` has every
line at LOG_LEVEL, `sunflow-ops_stderr.log` the errors only. Times are UTC.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path

from pydantic import SecretStr

from services.config import Settings, SettingsError

MASK = "***"
LOG_FILE = "sunflow-ops.log"
ERROR_FILE = "sunflow-ops_stderr.log"
# Rotation: 10 MiB a file, five old ones kept (about 60 MiB per directory at most).
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Libraries whose routine lines would bury ours: shown only with LOG_LEVEL=DEBUG (APScheduler
# says "Running job"/"executed successfully" for every tick of every job).
CHATTY = ("apscheduler", "alembic")


class RedactingFilter(logging.Filter):
    """Replaces secret values anywhere in a formatted record (message and arguments)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = self.redact(message)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        record.msg, record.args = redacted, None
        return True

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def secret_values(settings: Settings) -> list[str]:
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
    return values


def formatter() -> logging.Formatter:
    utc = logging.Formatter(FORMAT, DATE_FORMAT)
    utc.converter = time.gmtime
    return utc


def file_handlers(log_dir: Path, level: str, *, rotate: bool) -> list[logging.Handler]:
    """`sunflow-ops.log` at `level` and `sunflow-ops_stderr.log` at ERROR. Only the service
    rotates; a CLI command appends (two processes rotating one file would lose lines)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = []
    for name, at in ((LOG_FILE, level), (ERROR_FILE, "ERROR")):
        path = log_dir / name
        handler: logging.Handler
        if rotate:
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
            )
        else:
            handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(at)
        handlers.append(handler)
    return handlers


def configure_logging(
    settings: Settings, *, console: bool = True, rotate: bool = True
) -> RedactingFilter:
    """The root logger for `serve` (stderr and LOG_DIR's files) or a CLI command (`console`
    False: only the files, its result is what it prints)."""
    redactor = RedactingFilter(secret_values(settings))
    handlers: list[logging.Handler] = []
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    if settings.log_dir is not None:
        try:
            handlers += file_handlers(settings.log_dir, settings.log_level, rotate=rotate)
        except OSError as exc:
            raise SettingsError(
                f"setting LOG_DIR: cannot write log files in {settings.log_dir} "
                f"({exc.strerror or exc}); fix it, or set LOG_DIR= to log to stderr only"
            ) from None
    if not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].setLevel(logging.WARNING)
    shared = formatter()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(shared)
        handler.addFilter(redactor)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    chatty = logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
    for name in CHATTY:
        logging.getLogger(name).setLevel(chatty)
    return redactor
