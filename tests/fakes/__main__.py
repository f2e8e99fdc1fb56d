"""`python -m tests.fakes`: run the four fakes for playing the playbook on `make run`.

Prints the settings to put in `.env`; faults are injected over HTTP on the control port:
`curl -X POST 127.0.0.1:PORT/fault/instagram/401`, `.../fault/cloudinary/500`,
`.../fault/fal/500`, `.../fault/telegram/on`, and `curl -X DELETE 127.0.0.1:PORT/fault/NAME`.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from tests.fakes.cloudinary import FakeCloudinary
from tests.fakes.fal import KEY, MODEL, FakeFal
from tests.fakes.instagram import APP_ID, APP_SECRET, USER_ID, VERSION, FakeInstagram
from tests.fakes.world import BOT_TOKEN, TOKEN, FakeTelegram


async def main() -> None:
    instagram = await FakeInstagram(token=TOKEN).start()
    cloudinary = await FakeCloudinary().start()
    fal = await FakeFal().start()
    telegram = await FakeTelegram().start()

    async def set_fault(request: web.Request) -> web.Response:
        name, mode = request.match_info["name"], request.match_info.get("mode")
        if name == "instagram":
            instagram.fault = mode
            instagram.retry_after = 3600 if mode == "429" else None
        elif name == "cloudinary":
            cloudinary.fault = mode
        elif name == "fal":
            fal.fault = mode
        elif name == "telegram":
            telegram.fault = mode is not None
        else:
            raise web.HTTPNotFound(text=f"no fake {name}")
        return web.json_response({"fake": name, "fault": mode})

    control = web.Application()
    control.router.add_post("/fault/{name}/{mode}", set_fault)
    control.router.add_delete("/fault/{name}", set_fault)
    runner = web.AppRunner(control)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    lines = [
        f"INSTAGRAM_ACCESS_TOKEN={TOKEN}",
        f"INSTAGRAM_API_BASE={instagram.base_url}",
        f"INSTAGRAM_GRAPH_VERSION={VERSION}",
        f"INSTAGRAM_USER_ID={USER_ID}",
        f"INSTAGRAM_APP_ID={APP_ID}",
        f"INSTAGRAM_APP_SECRET={APP_SECRET}",
        f"CLOUDINARY_URL={cloudinary.url()}",
        f"FAL_KEY={KEY}",
        f"FAL_API_BASE={fal.base_url}",
        f"FAL_MODEL={MODEL}",
        f"TELEGRAM_BOT_TOKEN={BOT_TOKEN}",
        f"TELEGRAM_API_BASE={telegram.base_url}",
        f"# fault control: curl -X POST http://127.0.0.1:{port}/fault/instagram/401",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
