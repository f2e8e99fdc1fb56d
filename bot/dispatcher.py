"""`create_dispatcher(services)`: routers wired once, services injected by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Dispatcher
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import BotCommand

from bot.errors import on_error
from bot.filters import COMMAND_ROLES, RolePolicy
from bot.locales import Catalogue
from bot.middlewares import RoleMiddleware
from bot.render import TelegramRenderer
from bot.routers import (
    basic,
    checklists,
    digest,
    escalation,
    health,
    heartbeats,
    incidents,
    notify,
    pipeline,
    reports,
    sse_admin,
    unknown,
)

if TYPE_CHECKING:
    from services.container import Services


def create_dispatcher(
    services: Services,
    *,
    catalogue: Catalogue | None = None,
    storage: BaseStorage | None = None,
) -> Dispatcher:
    """`storage`: aiogram's FSM storage (`fsm_storage`: Redis with REDIS_URL); memory if None."""
    catalogue = catalogue or Catalogue(services.settings.bot_language)
    dispatcher = Dispatcher(
        storage=storage,
        settings=services.settings,
        clock=services.clock,
        incidents=services.incidents,
        health=services.health,
        notify=services.notify,
        audit=services.audit,
        ops=services.ops,
        catalogue=catalogue,
        renderer=TelegramRenderer(catalogue),
        # Escalation, SSE admin, checklists, post-mortems, reports.
        escalation=services.escalation,
        oncall=services.oncall,
        sse=services.sse,
        checklists=services.checklists,
        postmortems=services.postmortems,
        reports=services.reports,
        heartbeats=services.heartbeats,
    )
    gate = RoleMiddleware(
        RolePolicy.from_settings(services.settings),
        services.audit,
        catalogue,
        grants=services.grants,
        notify=services.notify,
    )
    dispatcher.message.outer_middleware(gate)
    dispatcher.callback_query.outer_middleware(gate)
    # One error handler for every router: what was wrong, and how to write it.
    dispatcher.errors.register(on_error)
    dispatcher.include_routers(
        basic.create_router(),
        health.create_router(),
        pipeline.create_router(),
        incidents.create_router(),
        escalation.create_router(),
        sse_admin.create_router(),
        checklists.create_router(),
        reports.create_router(),
        heartbeats.create_router(),
        notify.create_router(),
        digest.create_router(),
        unknown.create_router(),
    )
    return dispatcher


def bot_commands(catalogue: Catalogue) -> list[BotCommand]:
    """The menu registered with setMyCommands at start, described in the bot's language."""
    return [
        BotCommand(command=name, description=catalogue.t(f"cmd.{name}")) for name in COMMAND_ROLES
    ]
