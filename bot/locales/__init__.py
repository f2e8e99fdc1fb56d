"""Message catalogues, one per language (`BOT_LANGUAGE`); both hold the same keys."""

from __future__ import annotations

from typing import Any

from bot.locales import en, ko

CATALOGUES: dict[str, dict[str, str]] = {"ko": ko.MESSAGES, "en": en.MESSAGES}


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
