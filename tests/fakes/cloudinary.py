"""A fake Cloudinary upload and admin API, reached by the real SDK through `upload_prefix`."""

from __future__ import annotations

import asyncio
import base64

from aiohttp import web

from tests.fakes import FakeServer

CLOUD = "sunflow-test"
API_KEY = "123456789012345"
API_SECRET = "fake-cloudinary-secret-xyz"


class FakeCloudinary(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        # Fault injection: None, "500" (server error) or "401" (bad credentials).
        self.fault: str | None = None
        self.uploads: dict[str, bytes] = {}
        # Uploads that arrived while held wait (inside the request) for the release.
        self.held = 0
        self._release: asyncio.Event | None = None
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_post("/v1_1/{cloud}/image/upload", self.upload)
        app.router.add_get("/v1_1/{cloud}/ping", self.ping)
        self.app = app

    def url(self) -> str:
        return f"cloudinary://{API_KEY}:{API_SECRET}@{CLOUD}?upload_prefix={self.base_url}"

    def hold(self) -> asyncio.Event:
        """Uploads arrive (counted in `held`) but get no answer until the event is set."""
        self._release = asyncio.Event()
        return self._release

    def _fault(self) -> web.Response | None:
        if self.fault == "500":
            return web.json_response({"error": {"message": "Server error"}}, status=500)
        if self.fault == "401":
            return web.json_response({"error": {"message": "Invalid api_key"}}, status=401)
        return None

    async def upload(self, request: web.Request) -> web.Response:
        self.requests.append(f"POST {request.path}")
        if self._release is not None:
            self.held += 1
            await self._release.wait()
        if (error := self._fault()) is not None:
            return error
        form = await request.post()
        if form.get("api_key") != API_KEY or not form.get("signature"):
            return web.json_response({"error": {"message": "Invalid Signature"}}, status=401)
        file = form.get("file")
        if not isinstance(file, web.FileField):
            return web.json_response({"error": {"message": "Missing file"}}, status=400)
        data = file.file.read()
        public_id = f"{form.get('folder', '')}/{form.get('public_id', 'upload')}".strip("/")
        self.uploads[public_id] = data
        return web.json_response(
            {
                "public_id": public_id,
                "secure_url": f"https://res.cloudinary.com/{CLOUD}/image/upload/{public_id}.jpg",
                "bytes": len(data),
            }
        )

    async def ping(self, request: web.Request) -> web.Response:
        self.requests.append(f"GET {request.path}")
        if (error := self._fault()) is not None:
            return error
        expected = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": {"message": "Invalid credentials"}}, status=401)
        return web.json_response({"status": "ok"})
