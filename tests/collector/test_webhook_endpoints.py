"""Webhook endpoints: each destination signs with a secret of its own, shown once when made and when
rotated; a request made for one receiver does not verify at another. Real collector, real receivers on
loopback, real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from collector import apikeys, campaigns
from collector.app import create_app
from collector.config import CollectorConfig
from common import signing
from links.rewrite import LinkSlot
from tests.clickedge.test_cli import clickedge
from tests.collector.test_actions import INGEST, LOOPBACK, WEBHOOK_SECRET, Receiver, clicks, settle
from tests.conftest import INGEST_SECRET, eventually

MASTER = WEBHOOK_SECRET.encode()


@pytest.fixture
async def collector(database_url: str, data_dir: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(
        verdict_hold=0,
        database_url=database_url,
        ingest_secret=INGEST_SECRET,
        data_dir=data_dir,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allow_networks=LOOPBACK,
    )
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


@pytest.fixture
async def write(db: asyncpg.Connection) -> dict[str, str]:
    return {"Authorization": f"Bearer {await apikeys.create(db, 'crm', ['write'])}"}


def signed_by(secret: str, request: tuple[dict[str, str], bytes]) -> bool:
    headers, body = request
    return signing.verify(secret.encode(), body, headers[signing.SIGNATURE_HEADER])


async def test_each_destination_signs_with_its_own_secret_shown_once_and_rotatable(
    collector: TestClient[Any, Any], db: asyncpg.Connection, write: dict[str, str], campaign_id: int
) -> None:
    a, b = Receiver(failures=0), Receiver(failures=0)
    async with TestServer(a.app) as server_a, TestServer(b.app) as server_b:
        hook_a, hook_b = (f"http://127.0.0.1:{s.port}/hook" for s in (server_a, server_b))
        try:
            await campaigns.upsert_campaign(db, campaign_id, name="Launch")
            await campaigns.register_links(db, campaign_id, [LinkSlot(1, "https://shop.example.com/", "CTA", "html")])
            url = f"/v1/campaigns/{campaign_id}/links/1/actions"
            actions = [{"type": "webhook", "url": hook_a}, {"type": "webhook", "url": hook_b}]
            resp = await collector.put(url, json=actions, headers=write)
            assert resp.status == 200, await resp.text()
            made = {e["url"]: e for e in (await resp.json())["new_webhook_endpoints"]}
            assert made.keys() == {hook_a, hook_b}
            secret_a, secret_b = made[hook_a]["secret"], made[hook_b]["secret"]
            assert secret_a.startswith("whsec_") and secret_a != secret_b
            # Shown once: setting the same URLs again makes no endpoint and shows no secret.
            again = await (await collector.put(url, json=actions[::-1], headers=write)).json()
            assert again["new_webhook_endpoints"] == []

            async def deliver(contact: int) -> None:
                body = clicks(campaign_id, [contact])
                assert (await collector.post("/v1/clicks", data=body, headers=INGEST)).status == 200

                async def both() -> bool:
                    return len(a.requests) == len(b.requests) == contact - campaign_id * 10

                await eventually(both, timeout=10)

            await deliver(campaign_id * 10 + 1)
            # Each request verifies with its own destination's secret only: what receiver A gets cannot
            # be replayed to B, and the master secret signs nothing any more.
            assert signed_by(secret_a, a.requests[0]) and signed_by(secret_b, b.requests[0])
            assert not signed_by(secret_b, a.requests[0]) and not signed_by(secret_a, b.requests[0])
            assert not signed_by(WEBHOOK_SECRET, a.requests[0])

            # The list shows the endpoints, never a secret; a read key may see it.
            read = {"Authorization": f"Bearer {await apikeys.create(db, 'dash', ['read'])}"}
            resp = await collector.get("/v1/webhooks?limit=1000", headers=read)
            text = await resp.text()
            listed = {e["url"]: e for e in orjson.loads(text)["endpoints"]}
            assert listed[hook_a]["id"] == made[hook_a]["id"] and listed[hook_a]["generation"] == 1
            assert "secret" not in listed[hook_a] and secret_a not in text and secret_b not in text

            # Rotation (a write key) gives A a new secret, once; the old one stops verifying at once.
            assert (await collector.post(f"/v1/webhooks/{made[hook_a]['id']}/rotate", headers=read)).status == 403
            resp = await collector.post(f"/v1/webhooks/{made[hook_a]['id']}/rotate", headers=write)
            rotated = await resp.json()
            assert resp.status == 200 and rotated["generation"] == 2 and rotated["rotated_at"]
            new_a = rotated["secret"]
            assert new_a not in (secret_a, secret_b)
            await deliver(campaign_id * 10 + 2)
            assert signed_by(new_a, a.requests[1]) and not signed_by(secret_a, a.requests[1])
            assert signed_by(secret_b, b.requests[1])  # B is untouched
            assert (await collector.post("/v1/webhooks/999999999999/rotate", headers=write)).status == 404
        finally:
            await settle(db, [hook_a, hook_b])


def test_endpoint_secrets_are_derived_per_endpoint_and_generation() -> None:
    one = signing.endpoint_secret(b"master", 1, 1)
    assert one == signing.endpoint_secret(b"master", 1, 1)  # every collector with the master agrees
    others = {signing.endpoint_secret(b"master", 2, 1), signing.endpoint_secret(b"master", 1, 2)}
    others.add(signing.endpoint_secret(b"other master", 1, 1))
    assert one not in others and len(others) == 3
    assert one.startswith("whsec_") and len(one) == len("whsec_") + 64


def test_webhook_secrets_from_the_command_line(database_url: str, tmp_path: Path, campaign_id: int) -> None:
    async def link() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await campaigns.upsert_campaign(conn, campaign_id)
            await campaigns.register_links(conn, campaign_id, [LinkSlot(1, "https://shop.example.com/", "C", "html")])
        finally:
            await conn.close()

    asyncio.run(link())
    env = {"CLICKEDGE_DATABASE_URL": database_url, "CLICKEDGE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    # No click comes, so nothing is ever sent to this URL.
    hook = f"https://cli-{campaign_id}.example.com/hook"
    actions = orjson.dumps([{"type": "webhook", "url": hook}]).decode()
    args = ("actions", "--campaign", str(campaign_id), "--link", "1", "--set", actions)
    made = clickedge(*args, env=env)
    assert made.returncode == 0, made.stderr
    endpoint_id = int(made.stderr.split("webhook endpoint ", 1)[1].split(" ", 1)[0])
    assert signing.endpoint_secret(MASTER, endpoint_id, 1) in made.stderr  # shown once, on stderr
    assert "whsec_" not in clickedge(*args, env=env).stderr  # not again
    listing = clickedge("webhooks", env=env).stdout
    assert f"{endpoint_id}  gen 1" in listing and hook in listing and "whsec_" not in listing
    # Rotating needs the master secret (else nobody would ever see the new one): refused, nothing changed.
    without = {"CLICKEDGE_DATABASE_URL": database_url, "CLICKEDGE_DATA_DIR": str(tmp_path)}
    refused = clickedge("webhooks", "rotate", str(endpoint_id), env=without)
    assert refused.returncode == 2 and "webhook secret is not here" in refused.stderr
    rotated = clickedge("webhooks", "rotate", str(endpoint_id), env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip() == signing.endpoint_secret(MASTER, endpoint_id, 2)
    assert clickedge("webhooks", "rotate", "99999999999", env=env).returncode == 2


async def test_a_links_webhook_deliveries_and_the_outbox_show_in_the_api_and_the_metrics(
    collector: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    receiver = Receiver(failures=1)  # the first request fails, its retry is accepted
    async with TestServer(receiver.app) as server:
        hook = f"http://127.0.0.1:{server.port}/hook"
        # Rows of this link an older version wrote: one failed with an error quoting a password, one made
        # two hours ago and not due for a day (so the oldest waiting delivery is at least that old).
        old = f"http://olduser:0ldpassw0rd@127.0.0.1:{server.port}/old?token=0ldtoken"
        later = f"http://127.0.0.1:{server.port}/later"
        urls = [hook, old, later]
        body = orjson.dumps({"campaign": {"id": campaign_id}, "link": {"id": 1}, "contact_id": 7}).decode()
        try:
            await campaigns.upsert_campaign(db, campaign_id, name="Launch")
            await campaigns.register_links(db, campaign_id, [LinkSlot(1, "https://shop.example.com/", "C", "html")])
            await campaigns.set_actions(db, campaign_id, 1, [{"type": "webhook", "url": hook}], "test")
            await db.execute(
                "INSERT INTO webhook_outbox (idempotency_key, url, body, attempts, failed_at, last_error) "
                "VALUES (gen_random_uuid(), $1, $2, 15, now(), $3)",
                old,
                body,
                f"InvalidURL: {old}",
            )
            await db.execute(
                "INSERT INTO webhook_outbox (idempotency_key, url, body, created_at, next_attempt_at) "
                "VALUES (gen_random_uuid(), $1, $2, now() - interval '2 hours', now() + interval '1 day')",
                later,
                body,
            )
            contacts = [campaign_id * 10 + 1, campaign_id * 10 + 2]
            assert (
                await collector.post("/v1/clicks", data=clicks(campaign_id, contacts), headers=INGEST)
            ).status == 200
            read = {"Authorization": f"Bearer {await apikeys.create(db, 'dash', ['read'])}"}
            url = f"/v1/campaigns/{campaign_id}/links/1/webhooks"

            async def page(query: str = "") -> dict[str, Any]:
                resp = await collector.get(f"{url}{query}", headers=read)
                assert resp.status == 200, await resp.text()
                text = await resp.text()
                for secret in ("olduser", "0ldpassw0rd"):
                    assert secret not in text
                result: dict[str, Any] = orjson.loads(text)
                return result

            async def retrying() -> list[dict[str, Any]]:
                ours = [d for d in (await page())["deliveries"] if d["url"] == hook]
                return [d for d in ours if d["state"] == "pending" and d["last_error"] == "HTTP 500"]

            (waiting,) = await eventually(retrying, timeout=10)
            assert waiting["attempts"] == 1 and waiting["next_attempt_at"] and waiting["delivered_at"] is None

            async def delivered() -> list[dict[str, Any]]:
                ours = [d for d in (await page())["deliveries"] if d["url"] == hook]
                return ours if [d["state"] for d in ours] == ["delivered", "delivered"] else []

            done = await eventually(delivered, timeout=15)
            assert sorted(d["attempts"] for d in done) == [1, 2] and all(d["next_attempt_at"] is None for d in done)
            assert {d["contact_id"] for d in done} == set(contacts)
            endpoint = await db.fetchval("SELECT id FROM webhook_endpoints WHERE url = $1", hook)
            assert {d["endpoint"] for d in done} == {endpoint}
            everything = (await page())["deliveries"]
            by_url = {d["url"]: d for d in everything}
            failed = by_url[f"http://127.0.0.1:{server.port}/old?token=0ldtoken"]
            assert failed["state"] == "failed" and failed["attempts"] == 15 and failed["failed_at"]
            assert failed["last_error"] == f"InvalidURL: http://127.0.0.1:{server.port}/old"  # no credentials
            assert by_url[later]["state"] == "pending" and by_url[later]["next_attempt_at"]
            # Paged by delivery id, oldest first.
            first = await page("?limit=2")
            rest = await page(f"?limit=2&after={first['next_after']}")
            assert [d["id"] for d in first["deliveries"] + rest["deliveries"]] == [d["id"] for d in everything]
            assert len(everything) == 4 and rest["next_after"] is None
            assert (await collector.get(f"/v1/campaigns/{campaign_id}/links/9/webhooks", headers=read)).status == 404
            assert (await collector.get(f"{url}?after=x", headers=read)).status == 400

            scrape = await (await collector.get("/metrics")).text()
            assert metric(scrape, "clickedge_collector_webhook_deliveries_total", outcome="delivered") >= 2
            assert metric(scrape, "clickedge_collector_webhook_deliveries_total", outcome="error") >= 1
            assert metric(scrape, "clickedge_collector_webhook_outbox_pending") >= 1  # "later"
            assert metric(scrape, "clickedge_collector_webhook_oldest_pending_seconds") >= 2 * 3600
        finally:
            await settle(db, urls)


def metric(scrape: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in the scrape")
