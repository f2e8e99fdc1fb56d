"""SunFlow Ops service layer: every behaviour of the system, with no knowledge of Telegram."""
