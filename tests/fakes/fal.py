"""A fake fal.ai queue: submit, status, result, and the generated image files."""

from __future__ import annotations

from aiohttp import web

from tests.fakes import FakeServer

KEY = "fal-test-key-0123456789"
MODEL = "fal-ai/flux-2-pro"
# The smallest valid PNG: one transparent pixel.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


class FakeFal(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        # Fault injection: None, "500" (submit fails) or "stuck" (never completes).
        self.fault: str | None = None
        self.submitted: list[dict[str, object]] = []
        app = web.Application()
        app.router.add_get("/files/{name}", self.file)
        app.router.add_route("*", "/{tail:.*}", self.queue)
        self.app = app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Key {KEY}"

    async def queue(self, request: web.Request) -> web.Response:
        path = request.match_info["tail"]
        self.requests.append(f"{request.method} /{path}")
        if not self._authorized(request):
            return web.json_response({"detail": "Unauthorized"}, status=401)
        if request.method == "POST" and path == MODEL:
            if self.fault == "500":
                return web.json_response({"detail": "Internal Server Error"}, status=500)
            body = await request.json()
            self.submitted.append(body)
            request_id = f"req-{len(self.submitted)}"
            return web.json_response({"request_id": request_id, "status": "IN_QUEUE"})
        prefix = f"{MODEL}/requests/"
        if request.method == "GET" and path.startswith(prefix):
            rest = path.removeprefix(prefix)
            request_id, _, tail = rest.partition("/")
            known = request_id.startswith("req-")
            if tail == "status":
                if not known:
                    return web.json_response({"detail": "Request not found"}, status=404)
                state = "IN_QUEUE" if self.fault == "stuck" else "COMPLETED"
                return web.json_response({"status": state})
            if tail == "" and known:
                return web.json_response(
                    {"images": [{"url": f"{self.base_url}/files/{request_id}.png"}]}
                )
        return web.json_response({"detail": "Not Found"}, status=404)

    async def file(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")
