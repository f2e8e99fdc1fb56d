from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from services.errors import InvalidInput
from services.integrations.cloudinary import (
    CloudinaryAccount,
    CloudinaryClient,
    CloudinaryError,
    parse_cloudinary_url,
)
from services.integrations.fal import FalClient, FalError
from services.integrations.instagram import (
    InstagramClient,
    InstagramRateLimited,
    InstagramUnauthorized,
    parse_retry_after,
)
from tests.fakes.cloudinary import API_KEY, API_SECRET, CLOUD, FakeCloudinary
from tests.fakes.fal import KEY, MODEL, FakeFal
from tests.fakes.instagram import USER_ID, VERSION, FakeInstagram

TOKEN = "IGQVJ-integration-token"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("cloudinary://k:s@cloud", CloudinaryAccount("cloud", "k", "s")),
        (
            "cloudinary://k:s%40x@cloud?upload_prefix=http://127.0.0.1:9/",
            CloudinaryAccount("cloud", "k", "s@x", "http://127.0.0.1:9"),
        ),
    ],
)
def test_parse_cloudinary_url(url: str, expected: CloudinaryAccount) -> None:
    assert parse_cloudinary_url(url) == expected


@pytest.mark.parametrize("url", ["https://k:s@cloud", "cloudinary://cloud", "cloudinary://k@c"])
def test_parse_cloudinary_url_refuses_without_echoing(url: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_cloudinary_url(url)
    assert url not in info.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("120", timedelta(seconds=120)), ("soon", None), ("", None)],
)
def test_parse_retry_after(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value) == expected


async def test_cloudinary_sdk_reaches_the_fake_and_hides_secrets(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG-bytes")
    async with FakeCloudinary() as fake:
        client = CloudinaryClient(
            CloudinaryAccount(CLOUD, API_KEY, API_SECRET, fake.base_url), timeout=5
        )
        await client.ping()
        uploaded = await client.upload(image, folder="sunflow/t")
        assert uploaded.public_id == "sunflow/t/a"
        assert fake.uploads["sunflow/t/a"] == b"\x89PNG-bytes"
        fake.fault = "401"
        with pytest.raises(CloudinaryError) as info:
            await client.upload(image, folder="sunflow/t")
        assert API_SECRET not in str(info.value) and API_KEY not in str(info.value)


async def test_instagram_errors_are_classified() -> None:
    async with FakeInstagram(token=TOKEN) as fake, aiohttp.ClientSession() as session:
        client = InstagramClient(
            session, base_url=fake.base_url, version=VERSION, token=TOKEN, user_id=USER_ID
        )
        assert (await client.account())["username"] == "sunflow"
        fake.fault, fake.retry_after = "429", 90
        with pytest.raises(InstagramRateLimited) as limited:
            await client.publish("1")
        assert limited.value.retry_after == timedelta(seconds=90)
        fake.fault = "401"
        with pytest.raises(InstagramUnauthorized) as refused:
            await client.account()
        assert TOKEN not in str(refused.value)


async def test_fal_submit_poll_fetch_and_failures() -> None:
    async with FakeFal() as fake, aiohttp.ClientSession() as session:
        client = FalClient(
            session, base_url=fake.base_url, key=KEY, model=MODEL, timeout=0.3, poll_interval=0.01
        )
        [image] = await client.generate("sunflowers")
        assert image.extension == ".png" and image.content.startswith(b"\x89PNG")
        assert await client.reachable() == 404
        fake.fault = "500"
        with pytest.raises(FalError, match="answered 500"):
            await client.generate("sunflowers")
        wrong = FalClient(session, base_url=fake.base_url, key="wrong-key", model=MODEL)
        with pytest.raises(FalError) as info:
            await wrong.reachable()
        assert "wrong-key" not in str(info.value)
