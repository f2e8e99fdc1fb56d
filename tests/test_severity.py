from datetime import timedelta

import pytest

from services.severity import Severity, parse_severity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P0", Severity.P0),
        ("p1", Severity.P1),
        (" P2 ", Severity.P2),
        ("P3", Severity.P3),
        ("critical", Severity.P0),
        ("HIGH", Severity.P1),
        ("warning", Severity.P2),
        ("info", Severity.P3),
    ],
)
def test_parse_severity(text: str, expected: Severity) -> None:
    assert parse_severity(text) is expected


@pytest.mark.parametrize("text", ["P4", "", "sev1", "urgent"])
def test_parse_severity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="unknown severity"):
        parse_severity(text)


@pytest.mark.parametrize(
    ("severity", "response"),
    [
        (Severity.P0, timedelta(0)),
        (Severity.P1, timedelta(hours=1)),
        (Severity.P2, timedelta(hours=4)),
        (Severity.P3, timedelta(hours=24)),
    ],
)
def test_response_times_follow_the_playbook(severity: Severity, response: timedelta) -> None:
    assert severity.response_time == response
