"""Settings: one pydantic-settings model read from the environment and `.env`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class SettingsError(Exception):
    """A setting has a bad value; the message is one line naming it."""


def _split_ids(value: object) -> list[int]:
    if value is None or value == "":
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    if isinstance(value, str):
        ids = []
        for raw in value.replace(";", ",").split(","):
            part = raw.strip()
            if not part:
                continue
            if not (part.lstrip("-").isascii() and part.lstrip("-").isdigit()):
                raise ValueError(f"{part!r} is not a numeric Telegram user id")
            ids.append(int(part))
        return ids
    raise ValueError("expected comma-separated numeric Telegram user ids")


def _split_names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _alert_days(value: str) -> tuple[int, int]:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if len(parts) != 2 or not all((p.isascii() and p.isdigit()) for p in parts):
        raise ValueError("expected two day counts, warning then critical, e.g. 14,3")
    warning, critical = int(parts[0]), int(parts[1])
    if not warning > critical >= 1:
        raise ValueError("the warning days must be more than the critical days, both >= 1")
    return warning, critical


def _retry_delays(value: str) -> list[timedelta]:
    from services.durations import parse_duration

    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not 1 <= len(parts) <= 10:
        raise ValueError("expected 1 to 10 comma-separated durations, e.g. 5m,15m,30m")
    return [parse_duration(p) for p in parts]


class Settings(BaseSettings):
    """Every setting of the process; built once in `main` and passed down."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    database_url: str = "sqlite+aiosqlite:///./data/sunflow.db"
    redis_url: str | None = None
    # Several instances (docs/scaling.md): this instance's name in the scheduler lease and
    # /api/health; unset: host:HTTP_PORT (host:pid when the port is 0).
    instance_id: str | None = Field(default=None, max_length=200)
    # How long the scheduler lease lasts; renewed every third of it. A killed leader is
    # replaced 2/3 to 1 x this later, plus about a second.
    leader_lease_seconds: float = Field(default=15, ge=3, le=300)
    # With REDIS_URL: the prefix of every key and channel (several deployments, one Redis).
    redis_key_prefix: str = Field(default="sunflow:", min_length=1, max_length=64)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8002, ge=0, le=65535)
    admin_token: SecretStr | None = None
    intake_token: SecretStr | None = None

    telegram_bot_token: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_team_chat_id: int | None = None
    telegram_team_thread_id: int | None = None
    # NoDecode-free: the validators below accept "1,2,3" as well as JSON lists.
    telegram_pd_user_ids: str = ""
    telegram_admin_user_ids: str = ""
    telegram_responder_user_ids: str = ""
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    bot_language: Literal["ko", "en"] = "ko"

    escalation_policy_file: Path | None = None
    # How often the escalation timer re-reads the database's wake-ups at the latest (a write
    # in this process, or a NOTIFY from another, wakes it at once); a step is overdue
    # (health degraded) when twice this late.
    escalation_sweep_seconds: float = Field(default=5.0, ge=0.1, le=60)
    # Test-only faults over the admin API (POST /api/admin/faults/block-loop): never in
    # production; the fault tests (tests/faults/) turn it on.
    fault_injection: bool = False

    max_sse_connections: int = Field(default=1000, ge=1)
    sse_heartbeat_seconds: float = Field(default=30, gt=0)
    sse_idle_timeout_seconds: float = Field(default=300, gt=0)
    sse_cleanup_interval_seconds: float = Field(default=30, gt=0)
    sse_history_size: int = Field(default=1000, ge=1)
    sse_history_seconds: float = Field(default=3600, gt=0)
    sse_retry_ms: int = Field(default=3000, ge=100, le=600_000)
    sse_client_buffer_bytes: int = Field(default=1024 * 1024, ge=4096)
    sse_probe_jobs: str = "test-job-id,test-job"

    smtp_url: str | None = None
    alert_email_to: str | None = None
    fallback_webhook_url: str | None = None

    instagram_access_token: SecretStr | None = None
    instagram_api_base: str = "https://graph.facebook.com"
    cloudinary_url: SecretStr | None = None
    fal_key: SecretStr | None = None
    fal_api_base: str = "https://queue.fal.run"

    # -- notifications: outbox, Telegram limits, fallback channel --------------
    # How long Telegram may keep failing before P0/P1 alerts also go to the fallback channel.
    telegram_fallback_after: str = "5m"
    # Telegram's limits, as the outbox sender obeys them (lower them for a stricter server).
    telegram_rate_global_per_second: int = Field(default=30, ge=1)
    telegram_rate_chat_per_second: int = Field(default=1, ge=1)
    telegram_rate_group_per_minute: int = Field(default=20, ge=1)
    # Longest pause between retries while Telegram is unreachable (seconds).
    telegram_retry_max_seconds: float = Field(default=30, gt=0)
    # Least time between two edits of a storm digest (seconds): a minute of a group's budget
    # then keeps room for the digest beside the cards that still go out.
    telegram_digest_edit_seconds: float = Field(default=10, gt=0)
    # The From of fallback e-mail; the To is ALERT_EMAIL_TO (comma list).
    alert_email_from: str = "sunflow-ops@localhost"

    @field_validator("telegram_fallback_after")
    @classmethod
    def _check_fallback_after(cls, value: str) -> str:
        from services.durations import parse_duration

        parse_duration(value)
        return value

    @property
    def fallback_after(self) -> timedelta:
        from services.durations import parse_duration

        return parse_duration(self.telegram_fallback_after)

    # -- end of notifications ---------------------------------------------------------------
    # -- Pipeline operations: tokens, integrations, retries, stats, backups ------
    instagram_user_id: str | None = None
    instagram_graph_version: str = "v21.0"
    instagram_app_id: str | None = None
    instagram_app_secret: SecretStr | None = None
    token_alert_days: str = "14,3"
    token_lifetime_days: int = Field(default=60, ge=1, le=365)
    fal_model: str = "fal-ai/flux-2-pro"
    fal_timeout_seconds: float = Field(default=120, gt=0)
    integration_timeout_seconds: float = Field(default=30, gt=0)
    content_dir: Path = Path("content")
    stats_file: Path = Path("config/data/instagram_stats.json")
    stats_interval_minutes: float = Field(default=360, gt=0)
    stats_stale_hours: float = Field(default=26, gt=0)
    retry_delays: str = "5m,15m,30m"
    health_interval_seconds: float = Field(default=60, gt=0)
    backup_dir: Path = Path("data/backups")
    # Rotating sunflow-ops.log (everything at LOG_LEVEL) and sunflow-ops_stderr.log (errors
    # only), and traces/SF-*.json; empty: no files (journald keeps the logs under systemd).
    log_dir: Path | None = Path("logs")
    env_file_path: Path = Path(".env")
    # The playbook's "one post a day": posts per calendar day (in PUBLISH_TIMEZONE) that
    # `publish` allows without --force; the retry jobs wait for the next day.
    publish_daily_limit: int = Field(default=1, ge=1, le=100)
    publish_timezone: str = "UTC"
    # Where a card's `runbook` link points when the alert gives a relative path
    # (docs/sse.md#...): e.g. https://github.com/ORG/sunflow-ops/blob/main/ ; unset: the
    # path is shown as text.
    runbook_base_url: str | None = None

    @field_validator("log_dir", mode="before")
    @classmethod
    def _log_dir_empty_is_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() == "":
            return None
        return value

    @field_validator("publish_timezone")
    @classmethod
    def _check_publish_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a time zone name (e.g. UTC or Asia/Seoul)") from None
        return value.strip()

    @field_validator("runbook_base_url", mode="before")
    @classmethod
    def _check_runbook_base_url(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                return None
            if not value.startswith(("http://", "https://")):
                raise ValueError("must start with http:// or https://")
        return value

    @field_validator(
        "instagram_user_id", "instagram_app_id", "instagram_app_secret", mode="before"
    )
    @classmethod
    def _pipeline_empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() == "":
            return None
        return value

    @field_validator("token_alert_days")
    @classmethod
    def _check_alert_days(cls, value: str) -> str:
        _alert_days(value)
        return value

    @field_validator("retry_delays")
    @classmethod
    def _check_retry_delays(cls, value: str) -> str:
        _retry_delays(value)
        return value

    @property
    def token_alert_thresholds(self) -> tuple[int, int]:
        """(warning days, critical days): P2 at the first, P1 at the second."""
        return _alert_days(self.token_alert_days)

    @property
    def retry_schedule(self) -> list[timedelta]:
        return _retry_delays(self.retry_delays)

    # -- end of pipeline operations ---------------------------------------------------------

    # -- the live board: when set, GET / and the board's SSE stream ask for it --
    board_token: SecretStr | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # -- intake at the HTTP edge -------------------------------------------------
    # Alertmanager sends a whole group in one body (2,000 alerts are about 1.3 MB) and never
    # retries a 413: its route takes this much, streamed into one buffer.
    alertmanager_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    # A connection that has not sent its first request's headers by then is closed; a body
    # that has not fully arrived by then is answered 408. Idle keep-alive connections close
    # after HTTP_KEEPALIVE_SECONDS (longer than nginx's 60 s upstream keep-alive).
    request_header_timeout_seconds: float = Field(default=10, gt=0, le=300)
    request_body_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    http_keepalive_seconds: float = Field(default=75, gt=0, le=3600)

    @field_validator(
        "redis_url",
        "instance_id",
        "telegram_webhook_url",
        "smtp_url",
        "alert_email_to",
        "fallback_webhook_url",
        "escalation_policy_file",
        "telegram_team_chat_id",
        "telegram_team_thread_id",
        "admin_token",
        "intake_token",
        "telegram_bot_token",
        "telegram_webhook_secret",
        "instagram_access_token",
        "cloudinary_url",
        "fal_key",
        "board_token",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() == "":
            return None
        return value

    @field_validator("bot_language", "log_level", mode="before")
    @classmethod
    def _normalise_case(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(
                "not a SQLAlchemy URL (e.g. sqlite+aiosqlite:///./data/sunflow.db)"
            ) from exc
        if url.drivername not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
            raise ValueError(
                f"driver {url.drivername!r} is not supported; "
                "use sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return value

    @field_validator(
        "telegram_pd_user_ids", "telegram_admin_user_ids", "telegram_responder_user_ids"
    )
    @classmethod
    def _check_ids(cls, value: str) -> str:
        _split_ids(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from redis.asyncio.connection import parse_url

        try:
            parse_url(value)
        except ValueError:
            raise ValueError(
                "not a Redis URL (redis://host:6379/0, rediss://... or unix:///path)"
            ) from None
        return value

    @field_validator("instance_id")
    @classmethod
    def _check_instance_id(cls, value: str | None) -> str | None:
        if value is not None and not all(c.isprintable() and not c.isspace() for c in value):
            raise ValueError("use letters, digits and punctuation, no spaces, e.g. ops-a:8081")
        return value

    @field_validator("telegram_api_base", "instagram_api_base", "fal_api_base")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("sse_probe_jobs")
    @classmethod
    def _check_probe_jobs(cls, value: str) -> str:
        from services.sse import check_job_id

        for job_id in _split_names(value):
            try:
                check_job_id(job_id)
            except Exception as exc:
                raise ValueError(f"{job_id!r}: {exc}") from None
        return value

    @property
    def probe_jobs(self) -> tuple[str, ...]:
        return tuple(_split_names(self.sse_probe_jobs))

    @property
    def pd_user_ids(self) -> list[int]:
        return _split_ids(self.telegram_pd_user_ids)

    @property
    def admin_user_ids(self) -> list[int]:
        return _split_ids(self.telegram_admin_user_ids)

    @property
    def responder_user_ids(self) -> list[int]:
        return _split_ids(self.telegram_responder_user_ids)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning a validation failure into one line naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        bad = first.get("input")
        shown = "" if name.endswith(("TOKEN", "SECRET", "KEY", "URL")) else f" (got {bad!r})"
        if isinstance(bad, dict):
            shown = ""
        raise SettingsError(f"setting {name}: {message}{shown}") from None
