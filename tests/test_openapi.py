from aiohttp import web

from services.severity import ALIASES, Severity
from services.web.openapi import WEBHOOK, build_document, load_document
from tests.conftest import Client


async def test_every_route_is_described(client: Client) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    app: web.Application = client.app
    missing = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        if route.method.lower() not in doc["paths"].get(path, {}):
            missing.append(f"{route.method} {path}")
    assert missing == []


async def test_every_described_route_exists(client: Client) -> None:
    """The document holds nothing the router does not serve (a route removed, a typo)."""
    doc = await (await client.get("/api/openapi.json")).json()
    app: web.Application = client.app
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    described = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert described - served == set()


def test_the_documented_severities_are_the_parser_s() -> None:
    alert_in = load_document()["components"]["schemas"]["AlertIn"]
    names = [*(s.value for s in Severity), *(s.value.lower() for s in Severity), *ALIASES]
    assert alert_in["properties"]["severity"]["enum"] == names


def test_the_webhook_is_described_only_in_webhook_mode() -> None:
    assert "/hook/abc" not in build_document()["paths"]
    assert "post" in build_document("/hook/abc")["paths"]["/hook/abc"]
    assert WEBHOOK not in build_document("/hook/abc")


async def test_references_resolve(client: Client) -> None:
    doc = await (await client.get("/api/openapi.json")).json()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(doc):
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert target, ref
