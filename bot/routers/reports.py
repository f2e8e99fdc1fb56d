"""/postmortem (the Markdown as a document, and its human fields) and /report (the week)."""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, Message

from bot.errors import Usage
from bot.filters import leading_id
from bot.locales import Catalogue
from bot.render import esc, split_html
from services.postmortem import FIELDS, PostmortemService
from services.reports import ReportService, chart_png, summary_text


async def cmd_postmortem(
    message: Message,
    command: CommandObject,
    postmortems: PostmortemService,
    catalogue: Catalogue,
    actor: str,
    *,
    replied_incident: int | None = None,
) -> None:
    words = (command.args or "").split(maxsplit=2)
    named = leading_id(f"/postmortem {command.args or ''}")
    if named is not None:
        incident_id = named
    elif replied_incident is not None:
        # A reply to the incident's card: `/postmortem`, `/postmortem cause TEXT`.
        incident_id = replied_incident
        words = ["#", *(command.args or "").split(maxsplit=1)]
    else:
        raise Usage("postmortem")
    if len(words) == 1:
        postmortem = await postmortems.build(
            incident_id, language=catalogue.language, title=catalogue.title
        )
        if postmortem.missing_fields:
            caption = catalogue.t(
                "postmortem.missing", id=incident_id, fields=", ".join(postmortem.missing_fields)
            )
        else:
            caption = catalogue.t("postmortem.complete", id=incident_id)
        await message.answer_document(
            BufferedInputFile(postmortem.markdown.encode(), filename=postmortem.filename),
            caption=caption,
        )
        return
    field = words[1].lower()
    # The role gate asked for a responder when the second word names a field.
    if field not in FIELDS or len(words) < 3:
        raise Usage("postmortem")
    await postmortems.set_field(incident_id, field, words[2], actor=actor)
    await message.answer(
        catalogue.t("postmortem.set", id=incident_id, field=field, actor=esc(actor))
    )


async def cmd_report(message: Message, reports: ReportService, catalogue: Catalogue) -> None:
    report = await reports.weekly()
    for part in split_html(
        esc(summary_text(report, language=catalogue.language, title=catalogue.title))
    ):
        await message.answer(part)
    chart = await asyncio.to_thread(chart_png, report)
    await message.answer_document(
        BufferedInputFile(chart, filename=f"incidents-{report.end:%Y-%m-%d}.png"),
        caption=catalogue.t("report.caption"),
    )


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_postmortem, Command("postmortem"))
    router.message.register(cmd_report, Command("report"))
    return router
