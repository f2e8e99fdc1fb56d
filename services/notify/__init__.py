"""Outgoing notifications: the outbox, its sender (through a `Delivery`), the fallback channel."""
