"""Message catalogues, one per language (`BOT_LANGUAGE`); both hold the same keys."""

from __future__ import annotations

import re
from typing import Any

from bot.locales import en, ko

CATALOGUES: dict[str, dict[str, str]] = {"ko": ko.MESSAGES, "en": en.MESSAGES}
# The built-in ladder's step messages (services/policy.py) in each language; a policy file's
# own messages are the team's words and are shown as written.
LADDERS: dict[str, dict[str, str]] = {"ko": ko.LADDER, "en": {}}
# A retried job's kind (services/ops.py registers these): "{work} failing" names only them.
_FIELDS = {"work": "publish|generate_images|upload|collect_stats"}


def _title_patterns(titles: dict[str, str]) -> list[tuple[re.Pattern[str], str]]:
    """Each English title format as a pattern whose groups are its {fields}."""
    patterns = []
    for english, translated in titles.items():
        parts = re.split(r"\{(\w+)\}", english)
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_FIELDS.get(part, '.+?')})"
            for i, part in enumerate(parts)
        )
        patterns.append((re.compile(regex), translated))
    return patterns


TITLES: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "ko": _title_patterns(ko.TITLES),
    "en": [],
}


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

    def title(self, title: str) -> str:
        """An incident's title: one our services wrote, in this language; an alert's own as
        it is."""
        for pattern, translated in TITLES[self.language]:
            match = pattern.fullmatch(title)
            if match is not None:
                return translated.format(**match.groupdict())
        return title

    def kind(self, kind: str) -> str:
        """A timeline entry's kind (`acknowledged`) in this language."""
        return self._messages.get(f"kind.{kind}", kind)
