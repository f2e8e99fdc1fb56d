"""Fault tests with real processes: kill -9, a failing Bot API, a locked database."""
