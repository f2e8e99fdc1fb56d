"""The texts services write themselves (post-mortems, checklists, the token guide, the weekly
report), one table per language (`BOT_LANGUAGE`); both hold the same keys. The chat's own
messages are the bot's catalogue (bot/locales): it is built on `Texts` and takes the words
both share (severity meanings, timeline entries, our own actors: `SHARED`) from here."""

from __future__ import annotations

from typing import Any

from services.locales import en, ko

TEXTS: dict[str, dict[str, str]] = {"ko": ko.TEXTS, "en": en.TEXTS}
LANGUAGES = tuple(TEXTS)
# The words the chat's catalogue takes from here: one table for both.
SHARED = ("severity.meaning.", "kind.", "actor.")


class Texts:
    """`t("key", name=value)`: a text in one language; placeholders are format fields."""

    def __init__(self, language: str, tables: dict[str, dict[str, str]] = TEXTS) -> None:
        if language not in tables:
            raise ValueError(f"no catalogue for {language!r}; use ko or en")
        self.language = language
        self._messages = tables[language]

    def t(self, key: str, **values: Any) -> str:
        return self._messages[key].format(**values)

    def get(self, key: str) -> str | None:
        """The text, or None when this catalogue has no such key."""
        return self._messages.get(key)

    def actor(self, actor: str) -> str:
        """Who acted: the service's own actors (`intake`, `health_check`) in this language;
        people and named systems as they are."""
        return self._messages.get(f"actor.{actor}", actor)

    def kind(self, kind: str) -> str:
        """A timeline entry's kind (`acknowledged`) in this language."""
        return self._messages.get(f"kind.{kind}", kind)
