"""All of Telegram: the chat front end, rendering, and the Bot API client and limits the
outbox delivers through; it translates between Telegram and the service layer, nothing more."""
