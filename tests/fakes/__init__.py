"""Fakes of third-party services: real servers on 127.0.0.1 that our real clients talk to."""
