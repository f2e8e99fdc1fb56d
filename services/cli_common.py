"""What every `sunflow-ops` command module shares: who acts, bad usage, and running a
command against the services (one process, its own event loop)."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from services.config import Settings

if TYPE_CHECKING:
    from services.container import Services


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit status 2."""


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def run_with_services(settings: Settings, work: Callable[[Services], Awaitable[int]]) -> int:
    from services.logs import configure_logging
    from services.main import migrate, open_services

    # What a command does (a publish failing with 429...) lands in LOG_DIR's files beside the
    # service's own lines, where the playbook's greps look; its result is what it prints.
    configure_logging(settings, console=False, rotate=False)
    migrate(settings)

    async def main() -> int:
        async with open_services(settings) as services:
            return await work(services)

    return asyncio.run(main())
