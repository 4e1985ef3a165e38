"""The OpenAPI document against the running collector: every route the router serves is in the document
(but the edges' ingest, the probes, the metrics and the document itself) and every documented operation is
served, with the parameters its path names and behind the API key scope the document states."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import apikeys
from collector.app import create_app
from collector.config import CollectorConfig
from tests.conftest import INGEST_SECRET

# Served, and not the admin API's: the edges' batches and block list (ingest secret), probes and metrics,
# the document.
NOT_DOCUMENTED = {
    ("POST", "/v1/clicks"),
    *((method, "/v1/edge/blocklist") for method in ("GET", "HEAD")),
    *((method, path) for path in ("/healthz", "/readyz", "/metrics") for method in ("GET", "HEAD")),
    ("GET", "/openapi.json"),
}


@pytest.fixture
async def api(database_url: str, data_dir: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET, data_dir=data_dir)
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def document(api: TestClient[Any, Any]) -> dict[str, Any]:
    resp = await api.get("/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def test_every_route_served_is_documented_and_every_documented_one_served(api: TestClient[Any, Any]) -> None:
    doc = await document(api)
    assert api.app is not None
    # The report pages under /ui/ are pages, not API (tests/collector/test_pages.py).
    served = {
        (route.method, route.resource.canonical)
        for route in api.app.router.routes()
        if route.resource and not route.resource.canonical.startswith("/ui/")
    }
    documented = {(method.upper(), path) for path, operations in doc["paths"].items() for method in operations}
    assert served - NOT_DOCUMENTED == documented
    assert served >= NOT_DOCUMENTED  # a route listed here that is gone: take it out of the list
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            in_path = [p["name"] for p in operation["parameters"] if p["in"] == "path"]
            assert in_path == re.findall(r"{(\w+)}", path)
            assert all(p["required"] for p in operation["parameters"] if p["in"] == "path")


async def test_each_operation_needs_the_scope_the_document_states(
    api: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    doc = await document(api)
    read_key = await apikeys.create(db, "openapi-reader", ["read"])
    scopes = set()
    for path, operations in doc["paths"].items():
        url = re.sub(r"{\w+}", str(campaign_id), path)
        for method, operation in operations.items():
            scope = operation["x-scope"]
            scopes.add(scope)
            assert operation["security"] == [{"apiKey": []}]
            assert (await api.request(method, url)).status == 401, (method, path)
            # A read key: refused where the document says write; let in (whatever the answer) where read.
            # Write operations are never let in here, so this test changes nothing.
            status = (await api.request(method, url, headers={"Authorization": f"Bearer {read_key}"})).status
            if scope == "write":
                assert status == 403, (method, path)
            else:
                assert scope == "read" and status not in (401, 403), (method, path, status)
    assert scopes == {"read", "write"}
