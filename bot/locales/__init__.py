"""Message catalogues, one per language (`BOT_LANGUAGE`); both hold the same keys."""

from __future__ import annotations

from typing import Any

from bot.locales import en, ko

CATALOGUES: dict[str, dict[str, str]] = {"ko": ko.MESSAGES, "en": en.MESSAGES}
# The built-in ladder's step messages (services/policy.py) in each language; a policy file's
# own messages are the team's words and are shown as written.
LADDERS: dict[str, dict[str, str]] = {"ko": ko.LADDER, "en": {}}


class Catalogue:
    """`t("key", name=value)`: a message in one language; placeholders are format fields."""

    def __init__(self, language: str) -> None:
        if language not in CATALOGUES:
            raise ValueError(f"no catalogue for {language!r}; use ko or en")
        self.language = language
        self._messages = CATALOGUES[language]

    def t(self, key: str, **values: Any) -> str:
        return self._messages[key].format(**values)

    def get(self, key: str) -> str | None:
        """The message, or None when this catalogue has no such key."""
        return self._messages.get(key)

    def ladder(self, message: str) -> str:
        """A step's message: the built-in ladder's in this language, a team's as written."""
        return LADDERS[self.language].get(message, message)

    def actor(self, actor: str) -> str:
        """Who acted, as the chat says it: the service's own actors (`intake`, `health_check`)
        in this language; people and named systems as they are."""
        return self._messages.get(f"actor.{actor}", actor)

    def kind(self, kind: str) -> str:
        """A timeline entry's kind (`acknowledged`) in this language."""
        return self._messages.get(f"kind.{kind}", kind)
