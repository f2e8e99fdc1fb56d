import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.config import SettingsError
from services.logs import RedactingFilter, configure_logging
from tests.conftest import make_settings


def test_redacts_secrets_in_message_args_and_tracebacks() -> None:
    redactor = RedactingFilter(["s3cr3t-token-value", "abc"])
    try:
        raise RuntimeError("failed calling https://x/bots3cr3t-token-value/getMe")
    except RuntimeError:
        import sys

        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "token=%s", ("s3cr3t-token-value",), sys.exc_info()
        )
    assert redactor.filter(record)
    assert record.getMessage() == "token=***"
    assert record.exc_text is not None
    assert "s3cr3t-token-value" not in record.exc_text
    assert "abc" not in redactor._secrets  # too short to redact safely


@pytest.mark.parametrize("secrets", [[], [""]])
def test_no_secrets_is_a_no_op(secrets: list[str]) -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    assert RedactingFilter(secrets).filter(record)
    assert record.getMessage() == "hello x"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging changes the process's root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = logging.getLogger("apscheduler").level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("apscheduler").setLevel(chatty)


def test_log_dir_gets_every_line_and_the_errors_alone(
    root_logging: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings("sqlite+aiosqlite:///x.db", log_dir=tmp_path / "logs")
    configure_logging(settings, console=False)
    log = logging.getLogger("services.retry")
    log.info("job #1 retried now by cli:kim")
    log.warning("publish a failed: provider=instagram status=429 trace=SF-x incident=#1")
    log.error("publish a failed: provider=fal status=500 trace=SF-y incident=#2")
    logging.getLogger("apscheduler.executors.default").info('Job "retry-due" executed')
    for handler in logging.getLogger().handlers:
        handler.flush()
    everything = (tmp_path / "logs" / "sunflow-ops.log").read_text().splitlines()
    errors = (tmp_path / "logs" / "sunflow-ops_stderr.log").read_text().splitlines()
    assert [line.split(" ", 2)[1] for line in everything] == ["INFO", "WARNING", "ERROR"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ERROR services.retry: ", errors[0])
    assert len(errors) == 1 and "status=500" in errors[0]
    # `grep "429" logs/*.log` finds the rate limit; the scheduler's chatter is not there.
    assert [line for line in everything if "429" in line] == [everything[1]]
    assert not any("executed" in line for line in everything)
    assert capsys.readouterr().err == ""  # console=False: a CLI prints its result alone


def test_debug_shows_the_scheduler_and_secrets_stay_masked(
    root_logging: None, tmp_path: Path
) -> None:
    settings = make_settings(
        "sqlite+aiosqlite:///x.db",
        log_dir=tmp_path,
        log_level="DEBUG",
        instagram_access_token="IGQVJ-secret-token-1234",
    )
    configure_logging(settings, console=False)
    logging.getLogger("apscheduler.scheduler").debug("Looking for jobs to run")
    logging.getLogger("services.x").error("called with IGQVJ-secret-token-1234")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = (tmp_path / "sunflow-ops.log").read_text()
    assert "Looking for jobs to run" in text
    assert "called with ***" in text and "IGQVJ-secret" not in text


def test_an_unwritable_log_dir_is_a_bad_setting(root_logging: None, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = make_settings("sqlite+aiosqlite:///x.db", log_dir=blocker / "logs")
    with pytest.raises(SettingsError, match="^setting LOG_DIR: cannot write log files in"):
        configure_logging(settings)


def test_no_log_dir_means_stderr_only(root_logging: None) -> None:
    settings = make_settings("sqlite+aiosqlite:///x.db", log_dir="")
    assert settings.log_dir is None
    configure_logging(settings)
    assert [type(h) for h in logging.getLogger().handlers] == [logging.StreamHandler]
