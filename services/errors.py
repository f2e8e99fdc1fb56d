"""Domain errors raised by the services; each edge translates them for its audience."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a user can cause; `code` is stable, the message is for people."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class InvalidTransition(DomainError):
    code = "invalid_transition"
    http_status = 409


class InvalidInput(DomainError):
    code = "invalid_input"
    http_status = 400


class Unavailable(DomainError):
    """The capability exists but is not configured or not reachable right now."""

    code = "unavailable"
    http_status = 503
