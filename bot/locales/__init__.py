"""Message catalogues, one per language (`BOT_LANGUAGE`); both hold the same keys."""

from __future__ import annotations

import re

from bot.locales import en, ko
from services.locales import Texts

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


class Catalogue(Texts):
    """`t("key", name=value)`: a chat message in one language; placeholders are format fields."""

    def __init__(self, language: str) -> None:
        super().__init__(language, CATALOGUES)

    def ladder(self, message: str) -> str:
        """A step's message: the built-in ladder's in this language, a team's as written."""
        return LADDERS[self.language].get(message, message)

    def title(self, title: str) -> str:
        """An incident's title: one our services wrote, in this language; an alert's own as
        it is."""
        for pattern, translated in TITLES[self.language]:
            match = pattern.fullmatch(title)
            if match is not None:
                return translated.format(**match.groupdict())
        return title
