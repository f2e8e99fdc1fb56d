"""fal.ai queue client for FLUX.2 image generation: submit, poll, fetch the images."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from services.errors import Unavailable


class FalError(Exception):
    """Generation failed or timed out; the message never holds the key. `status` is the
    HTTP status fal.ai answered with, when it answered."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GeneratedImage:
    url: str
    content: bytes
    content_type: str

    @property
    def extension(self) -> str:
        return {"image/png": ".png", "image/webp": ".webp"}.get(self.content_type, ".jpg")


class FalClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        key: str | None,
        model: str,
        timeout: float = 120,
        poll_interval: float = 1.0,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = key
        self.model = model.strip("/")
        self.timeout = timeout
        self.poll_interval = poll_interval

    @property
    def configured(self) -> bool:
        return bool(self._key)

    def _headers(self) -> dict[str, str]:
        if not self._key:
            raise Unavailable(
                "FAL_KEY is not set", detail={"reason": "not_set", "setting": "FAL_KEY"}
            )
        return {"Authorization": f"Key {self._key}"}

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=min(self.timeout, 30))
        try:
            async with self._session.request(
                method, url, headers=self._headers(), timeout=timeout, **kwargs
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status >= 400:
                    detail = body.get("detail") if isinstance(body, dict) else None
                    raise FalError(
                        f"fal.ai answered {resp.status}: {str(detail or '')[:200]}",
                        status=resp.status,
                    )
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise FalError(f"fal.ai {method} failed: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise FalError("fal.ai answered with something other than a JSON object")
        return body

    async def submit(self, arguments: dict[str, Any]) -> str:
        body = await self._json("POST", f"{self._base}/{self.model}", json=arguments)
        request_id = body.get("request_id")
        if not request_id:
            raise FalError("fal.ai accepted the request without a request_id")
        return str(request_id)

    async def status(self, request_id: str) -> str:
        url = f"{self._base}/{self.model}/requests/{request_id}/status"
        return str((await self._json("GET", url)).get("status", ""))

    async def result(self, request_id: str) -> dict[str, Any]:
        return await self._json("GET", f"{self._base}/{self.model}/requests/{request_id}")

    async def generate(self, prompt: str, *, count: int = 1) -> list[GeneratedImage]:
        """Submit, poll until COMPLETED (or the timeout), then download the images."""
        request_id = await self.submit({"prompt": prompt, "num_images": count})
        deadline = time.monotonic() + self.timeout
        while True:
            state = await self.status(request_id)
            if state == "COMPLETED":
                break
            if state in {"FAILED", "CANCELED", "CANCELLED"}:
                raise FalError(f"fal.ai request {request_id} ended {state}")
            if time.monotonic() >= deadline:
                raise FalError(f"fal.ai request {request_id} not done within {self.timeout:g} s")
            await asyncio.sleep(self.poll_interval)
        result = await self.result(request_id)
        images = [i for i in result.get("images", []) if isinstance(i, dict) and i.get("url")]
        if not images:
            raise FalError(f"fal.ai request {request_id} completed without images")
        return [await self._download(str(i["url"])) for i in images]

    async def _download(self, url: str) -> GeneratedImage:
        timeout = aiohttp.ClientTimeout(total=min(self.timeout, 60))
        try:
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise FalError(f"image download answered {resp.status}", status=resp.status)
                content = await resp.read()
                kind = resp.headers.get("Content-Type", "image/jpeg").split(";")[0].strip()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise FalError(f"image download failed: {type(exc).__name__}") from None
        if not content:
            raise FalError("image download was empty")
        return GeneratedImage(url=url, content=content, content_type=kind)

    async def reachable(self) -> int:
        """Any answer below 500 from the queue host counts as reachable; returns the status."""
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            async with self._session.get(
                f"{self._base}/{self.model}/requests/health-probe/status",
                headers=self._headers(),
                timeout=timeout,
            ) as resp:
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise FalError(f"fal.ai unreachable: {type(exc).__name__}") from None
        if status >= 500 or status in {401, 403}:
            raise FalError(f"fal.ai answered {status}", status=status)
        return status
