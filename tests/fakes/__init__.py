"""Fakes of the external APIs: real aiohttp applications on a free 127.0.0.1 port."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class FakeServer:
    """Starts `self.app` on 127.0.0.1 (port chosen by the system); `base_url` once started."""

    app: web.Application

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        for address in self._runner.addresses:
            self.port = int(address[1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
