"""/token, /retry, /traces, /backup, /stats and the Retry and Logs buttons."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, FSInputFile, Message

from bot.callbacks import IncidentAction, IncidentCallback, JobCallback
from bot.errors import Usage
from bot.keyboards import retry_keyboard
from bot.locales import Catalogue
from bot.render import TelegramRenderer, html_to_plain, split_html
from bot.routers.incidents import parse_id
from services.clock import Clock
from services.ops import PipelineOps

COMMANDS = ("token", "retry", "traces", "backup", "stats")


def words(command: CommandObject) -> list[str]:
    return (command.args or "").split()


async def answer(message: Message, text: str) -> None:
    for part in split_html(text):
        await message.answer(part)


async def cmd_token(
    message: Message,
    command: CommandObject,
    *,
    ops: PipelineOps,
    renderer: TelegramRenderer,
    catalogue: Catalogue,
    actor: str,
) -> None:
    args = words(command)
    sub = args[0].lower() if args else "status"
    if sub == "status" and len(args) <= 1:
        await answer(message, renderer.token_status(await ops.tokens.status()))
    elif sub == "guide" and len(args) == 1:
        await answer(message, renderer.pre(ops.tokens.guide(catalogue.language)))
    elif sub in {"set_expiry", "set-expiry"} and len(args) <= 2:
        days: int | None = None
        if len(args) == 2:
            if not (args[1].isascii() and args[1].isdigit()):
                raise Usage("token")
            days = int(args[1])
        status = await ops.tokens.set_expiry(days, actor=actor)
        await answer(message, renderer.token_set(status, actor))
    else:
        raise Usage("token")


async def cmd_retry(
    message: Message,
    command: CommandObject,
    *,
    ops: PipelineOps,
    renderer: TelegramRenderer,
    catalogue: Catalogue,
    clock: Clock,
    actor: str,
) -> None:
    args = words(command)
    if len(args) > 1:
        raise Usage("retry")
    if args:
        job = await ops.runner.retry_now(parse_id(args[0], "retry"), actor=actor)
        await answer(message, renderer.job_done(job, actor, clock.now()))
        return
    jobs = await ops.retry.list()
    *head, last = split_html(renderer.jobs(jobs, clock.now()))
    for part in head:
        await message.answer(part)
    await message.answer(last, reply_markup=retry_keyboard(jobs, catalogue))


async def cmd_traces(
    message: Message, command: CommandObject, ops: PipelineOps, renderer: TelegramRenderer
) -> None:
    args = words(command)
    if len(args) > 1:
        raise Usage("traces")
    if args:
        await answer(message, renderer.trace(await ops.traces.get(args[0])))
    else:
        await answer(message, renderer.traces(await ops.traces.list(limit=10)))


async def cmd_backup(
    message: Message,
    command: CommandObject,
    *,
    ops: PipelineOps,
    renderer: TelegramRenderer,
    catalogue: Catalogue,
    actor: str,
) -> None:
    parts = (command.args or "").split(maxsplit=1)
    sub = parts[0].lower() if parts else "list"
    rest = parts[1].strip() if len(parts) > 1 else ""
    if sub == "list" and not rest:
        await answer(message, renderer.backups(await ops.backups.list()))
    elif sub == "create":
        info = await ops.backups.create(actor=actor, note=rest[:200])
        await answer(message, renderer.backup_created(info))
    elif sub == "restore" and rest and len(rest.split()) == 1:
        result = await ops.backups.restore(rest, actor=actor)
        await answer(message, renderer.backup_restored(result))
    else:
        raise Usage("backup")


async def cmd_stats(
    message: Message, command: CommandObject, ops: PipelineOps, renderer: TelegramRenderer
) -> None:
    args = [a.lower() for a in words(command)]
    if args in ([], ["status"]):
        await answer(message, renderer.stats_status(await ops.stats.health()))
    elif args == ["restart"]:
        await answer(message, renderer.stats_restarted(await ops.stats.restart()))
    else:
        raise Usage("stats")


async def cb_retry(
    query: CallbackQuery,
    callback_data: JobCallback,
    *,
    ops: PipelineOps,
    renderer: TelegramRenderer,
    clock: Clock,
    actor: str,
) -> None:
    job = await ops.runner.retry_now(callback_data.job_id, actor=actor)
    text = renderer.job_done(job, actor, clock.now())
    # The popup says what happened; the error it met is in the message below.
    await query.answer(html_to_plain(text.split("\n", 1)[0])[:200])
    if query.message is not None:
        await query.bot.send_message(  # type: ignore[union-attr]
            query.message.chat.id, text, reply_to_message_id=query.message.message_id
        )


async def cb_logs(
    query: CallbackQuery,
    callback_data: IncidentCallback,
    ops: PipelineOps,
    catalogue: Catalogue,
) -> None:
    bundle = await ops.bundles.collect(callback_data.incident_id)
    await query.answer(catalogue.t("logs.sent", id=bundle.incident_id))
    if query.message is not None:
        await query.bot.send_document(  # type: ignore[union-attr]
            query.message.chat.id,
            FSInputFile(bundle.path, filename=bundle.path.name),
            caption=catalogue.t(
                "logs.caption",
                id=bundle.incident_id,
                traces=len(bundle.traces),
                lines=bundle.error_lines,
            ),
            reply_to_message_id=query.message.message_id,
        )


def create_router() -> Router:
    """A fresh router each time: a router belongs to one dispatcher."""
    router = Router(name=__name__)
    router.message.register(cmd_token, Command("token"))
    router.message.register(cmd_retry, Command("retry"))
    router.message.register(cmd_traces, Command("traces"))
    router.message.register(cmd_backup, Command("backup"))
    router.message.register(cmd_stats, Command("stats"))
    router.callback_query.register(cb_retry, JobCallback.filter())
    router.callback_query.register(
        cb_logs, IncidentCallback.filter(F.action == IncidentAction.LOGS)
    )
    return router
