"""The Telegram front end: translates between Telegram and the service layer, nothing more."""
