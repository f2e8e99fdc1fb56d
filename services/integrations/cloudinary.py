"""Cloudinary uploads through the official SDK; `CLOUDINARY_URL` may name another API host.

The SDK reads `upload_prefix` (its API base) from the URL's query string, as in
`cloudinary://KEY:SECRET@CLOUD?upload_prefix=http://127.0.0.1:9000`; we pass it, and the
credentials, with every call rather than through the SDK's global configuration.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from services.errors import InvalidInput, Unavailable


class CloudinaryError(Exception):
    """An upload or ping failed; the message never holds the key or secret. `status` is the
    HTTP status Cloudinary answered with, when the SDK tells it."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _status_of(exc: Exception) -> int | None:
    """The SDK raises one exception class per HTTP status (its EXCEPTION_CODES)."""
    from cloudinary.api_client.execute_request import EXCEPTION_CODES

    for status, kind in sorted(EXCEPTION_CODES.items()):
        if type(exc) is kind:
            return int(status)
    return None


@dataclass(frozen=True)
class CloudinaryAccount:
    cloud_name: str
    api_key: str
    api_secret: str
    upload_prefix: str = "https://api.cloudinary.com"

    def options(self) -> dict[str, Any]:
        return {
            "cloud_name": self.cloud_name,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "upload_prefix": self.upload_prefix,
        }

    @property
    def secrets(self) -> list[str]:
        return [self.api_key, self.api_secret]


def parse_cloudinary_url(url: str) -> CloudinaryAccount:
    """`cloudinary://KEY:SECRET@CLOUD[?upload_prefix=URL]`; errors never repeat the URL."""
    parts = urlsplit(url.strip())
    if parts.scheme != "cloudinary":
        raise InvalidInput("CLOUDINARY_URL must start with cloudinary://")
    if not parts.username or not parts.password or not parts.hostname:
        raise InvalidInput("CLOUDINARY_URL must look like cloudinary://KEY:SECRET@CLOUD_NAME")
    prefix = parse_qs(parts.query).get("upload_prefix", ["https://api.cloudinary.com"])[0]
    return CloudinaryAccount(
        cloud_name=parts.hostname,
        api_key=unquote(parts.username),
        api_secret=unquote(parts.password),
        upload_prefix=prefix.rstrip("/"),
    )


@dataclass(frozen=True)
class Uploaded:
    public_id: str
    secure_url: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"public_id": self.public_id, "secure_url": self.secure_url, "bytes": self.bytes}


class CloudinaryClient:
    def __init__(self, account: CloudinaryAccount | None, *, timeout: float = 30) -> None:
        self._account = account
        self._timeout = timeout

    @property
    def configured(self) -> bool:
        return self._account is not None

    def _require(self) -> CloudinaryAccount:
        if self._account is None:
            raise Unavailable(
                "CLOUDINARY_URL is not set",
                detail={"reason": "not_set", "setting": "CLOUDINARY_URL"},
            )
        return self._account

    def _clean(self, text: str) -> str:
        account = self._require()
        for secret in account.secrets:
            text = text.replace(secret, "***")
        return text[:300]

    async def upload(self, path: Path, *, folder: str) -> Uploaded:
        account = self._require()
        import cloudinary.uploader

        def call() -> dict[str, Any]:
            result: dict[str, Any] = cloudinary.uploader.upload(
                str(path),
                folder=folder,
                public_id=path.stem,
                overwrite=True,
                resource_type="image",
                timeout=self._timeout,
                **account.options(),
            )
            return result

        try:
            result = await asyncio.to_thread(call)
        except Exception as exc:
            raise CloudinaryError(
                self._clean(f"upload of {path.name} failed: {type(exc).__name__}: {exc}"),
                status=_status_of(exc),
            ) from None
        return Uploaded(
            public_id=str(result.get("public_id", "")),
            secure_url=str(result.get("secure_url") or result.get("url") or ""),
            bytes=int(result.get("bytes", 0) or 0),
        )

    async def ping(self) -> None:
        account = self._require()
        import cloudinary.api

        def call() -> Any:
            return cloudinary.api.ping(timeout=self._timeout, **account.options())

        try:
            result = await asyncio.to_thread(call)
        except Exception as exc:
            raise CloudinaryError(
                self._clean(f"ping failed: {type(exc).__name__}: {exc}"), status=_status_of(exc)
            ) from None
        if str(dict(result).get("status")) != "ok":
            raise CloudinaryError("ping answered without status ok")
