"""Outgoing notifications: the outbox, the Telegram sender, and the fallback channel."""
