import logging

import pytest

from services.logs import RedactingFilter


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
