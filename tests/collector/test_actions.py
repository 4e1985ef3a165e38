"""Link actions applied exactly once: duplicate delivery, repeated clicks, concurrent first clicks through
two collectors; signed webhooks delivered from the outbox with retries; the contact timeline."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from collector import apikeys, campaigns
from collector.app import WEBHOOKS, create_app
from collector.config import CollectorConfig
from common import signing
from common.events import EventIds
from links.rewrite import LinkSlot
from tests.collector.clock import RECENT_MS, RECENT_S, RECENT_US
from tests.collector.derived import recount, snapshot
from tests.conftest import INGEST_SECRET, eventually

INGEST = {"Authorization": f"Bearer {INGEST_SECRET}"}
WEBHOOK_SECRET = "whsec-test-0123456789abcdef"
# The receivers here listen on loopback, which webhooks may reach only where an operator opened it.
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
async def collectors(database_url: str, data_dir: Path) -> AsyncIterator[list[TestClient[Any, Any]]]:
    config = CollectorConfig(
        verdict_hold=0,
        database_url=database_url,
        ingest_secret=INGEST_SECRET,
        data_dir=data_dir,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allow_networks=LOOPBACK,
    )
    async with TestClient(TestServer(create_app(config))) as a, TestClient(TestServer(create_app(config))) as b:
        yield [a, b]


@pytest.fixture
async def strict_collector(database_url: str, data_dir: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """A collector with the default destination policy: no internal address opened."""
    config = CollectorConfig(
        verdict_hold=0,
        database_url=database_url,
        ingest_secret=INGEST_SECRET,
        data_dir=data_dir,
        webhook_secret=WEBHOOK_SECRET,
    )
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def settle(db: asyncpg.Connection, urls: list[str]) -> None:
    """Take a test's outbox rows out of every later test's way: no other test's deliverer retries them."""
    await db.execute("UPDATE webhook_outbox SET failed_at = now() WHERE url = ANY($1) AND delivered_at IS NULL", urls)


class Receiver:
    """A webhook receiver on a real socket that fails its first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if len(self.requests) <= self.failures:
            return web.Response(status=500, text="try later")
        return web.Response(text="ok")


async def setup_link(db: asyncpg.Connection, campaign_id: int, actions: list[dict[str, str]]) -> None:
    await campaigns.upsert_campaign(db, campaign_id, name="Launch")
    await campaigns.register_links(db, campaign_id, [LinkSlot(1, "https://shop.example.com/p", "Pricing_CTA", "html")])
    await campaigns.set_actions(db, campaign_id, 1, actions, "test")


def clicks(campaign_id: int, contacts: list[int], *, ids: EventIds | None = None, at: int = 0) -> bytes:
    ids = ids or EventIds()
    base = RECENT_US + at
    rows = [
        [
            ids.next(base // 1000 + i),
            base + i * 1000,
            campaign_id,
            1,
            contact,
            RECENT_S - 10_000,
            1,
            "192.0.2.1",
            "ua",
            "GET",
        ]
        for i, contact in enumerate(contacts)
    ]
    return orjson.dumps({"v": 1, "edge": "e", "clicks": rows})


ACTIONS = [
    {"type": "add_tag", "tag": "pricing"},
    {"type": "start_automation", "automation": "trial"},
    {"type": "subscribe", "list": "offers"},
    {"type": "remove_tag", "tag": "cold"},
]


async def state(db: asyncpg.Connection, contact: int) -> dict[str, Any]:
    return {
        "tags": [r["tag"] for r in await db.fetch("SELECT tag FROM contact_tags WHERE contact_id = $1", contact)],
        "runs": await db.fetchval("SELECT count(*) FROM automation_runs WHERE contact_id = $1", contact),
        "lists": [
            tuple(r)
            for r in await db.fetch("SELECT list, subscribed FROM list_memberships WHERE contact_id = $1", contact)
        ],
        "events": await db.fetchval("SELECT count(*) FROM contact_events WHERE contact_id = $1", contact),
    }


async def test_actions_apply_once_despite_repeats_and_redelivery(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    contact = campaign_id * 10
    await setup_link(db, campaign_id, ACTIONS)
    await db.execute("INSERT INTO contact_tags (contact_id, tag) VALUES ($1, 'cold')", contact)
    body = clicks(campaign_id, [contact, contact, contact])  # three clicks of one contact in one batch
    assert (await collectors[0].post("/v1/clicks", data=body, headers=INGEST)).status == 200
    before = await snapshot(db, campaign_id)
    # The batch delivered again, to the other collector (as when the reply to the first was lost).
    resp = await collectors[1].post("/v1/clicks", data=body, headers=INGEST)
    assert await resp.json() == {"received": 3, "inserted": 0, "duplicates": 3, "refused": 0, "unsubscribes": 0}
    assert await snapshot(db, campaign_id) == before
    later = clicks(campaign_id, [contact], at=10_000_000)  # a later click: not a first click
    assert (await collectors[1].post("/v1/clicks", data=later, headers=INGEST)).status == 200
    assert await state(db, contact) == {"tags": ["pricing"], "runs": 1, "lists": [("offers", True)], "events": 4}
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 4
    # An anonymous click never triggers actions.
    assert (await collectors[0].post("/v1/clicks", data=clicks(campaign_id, [None]), headers=INGEST)).status == 200  # type: ignore[list-item]
    assert await db.fetchval("SELECT count(*) FROM applied_link_actions WHERE campaign_id = $1", campaign_id) == 1


async def test_two_contacts_clicks_sharing_an_event_id_apply_each_contacts_actions_once(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    await setup_link(db, campaign_id, [{"type": "start_automation", "automation": "a"}])
    contacts = [campaign_id * 10, campaign_id * 10 + 1]
    event_id = uuid.uuid4().hex
    rows = [
        [event_id, RECENT_US + n, campaign_id, 1, contact, RECENT_S - 100, 1, "192.0.2.1", "ua", "GET"]
        for n, contact in enumerate(contacts)
    ]
    resp = await collectors[0].post(
        "/v1/clicks", data=orjson.dumps({"v": 1, "edge": "e", "clicks": rows}), headers=INGEST
    )
    assert await resp.json() == {"received": 2, "inserted": 2, "duplicates": 0, "refused": 0, "unsubscribes": 0}
    runs = await db.fetch(
        "SELECT contact_id, started_at FROM automation_runs WHERE contact_id = ANY($1) ORDER BY 1", contacts
    )
    assert [(r["contact_id"], r["started_at"].timestamp() * 1e6) for r in runs] == [
        (contacts[0], RECENT_US),
        (contacts[1], RECENT_US + 1),
    ]


async def test_concurrent_first_clicks_through_two_collectors_apply_once(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    await setup_link(db, campaign_id, ACTIONS[:3])
    # The tests here own the contact ids campaign_id * 10 to campaign_id * 10 + 9: any more would be the
    # next test's contacts (the next campaign id's), clicked already when the tests run in another order.
    contacts = [campaign_id * 10 + i for i in range(10)]
    # Each contact clicks twice at once, each click through a different edge and collector.
    sends = []
    for n in range(2):
        body = clicks(campaign_id, contacts, ids=EventIds(), at=n)
        sends.append(collectors[n].post("/v1/clicks", data=body, headers=INGEST))
    replies = await asyncio.gather(*sends)
    assert [r.status for r in replies] == [200, 200]
    for contact in contacts:
        assert await state(db, contact) == {"tags": ["pricing"], "runs": 1, "lists": [("offers", True)], "events": 3}
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign_id) == 20
    assert await recount(db, campaign_id) == {}
    applied = await db.fetch("SELECT contact_id FROM applied_link_actions WHERE campaign_id = $1", campaign_id)
    assert sorted(r["contact_id"] for r in applied) == contacts


async def test_webhooks_are_signed_retried_and_delivered_once_per_first_click(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    receiver = Receiver(failures=1)
    async with TestServer(receiver.app) as server:
        hook = f"http://127.0.0.1:{server.port}/hook"
        await setup_link(db, campaign_id, [{"type": "webhook", "url": hook}])
        contact = campaign_id * 10
        body = clicks(campaign_id, [contact])
        assert (await collectors[0].post("/v1/clicks", data=body, headers=INGEST)).status == 200
        before = await snapshot(db, campaign_id)
        assert (await collectors[0].post("/v1/clicks", data=body, headers=INGEST)).status == 200
        assert await snapshot(db, campaign_id) == before
        rows = await db.fetch("SELECT id, idempotency_key FROM webhook_outbox WHERE url = $1", hook)
        assert len(rows) == 1  # one first click, one webhook, however often the batch came

        # The collector's delivery task (never the click path) sends it; the receiver fails the first try...
        async def failed_once() -> bool:
            row = await db.fetchrow("SELECT attempts, last_error FROM webhook_outbox WHERE id = $1", rows[0]["id"])
            return row is not None and row["attempts"] == 1 and row["last_error"] == "HTTP 500"

        await eventually(failed_once, timeout=10)

        # ...and a retry, after the backoff, is accepted.
        async def delivered() -> bool:
            return bool(
                await db.fetchval("SELECT delivered_at IS NOT NULL FROM webhook_outbox WHERE id = $1", rows[0]["id"])
            )

        await eventually(delivered, timeout=15)
    assert await db.fetchval("SELECT delivered_at IS NOT NULL FROM webhook_outbox WHERE id = $1", rows[0]["id"])
    assert len(receiver.requests) == 2
    keys = {headers[signing.IDEMPOTENCY_HEADER] for headers, _ in receiver.requests}
    assert keys == {str(rows[0]["idempotency_key"])}  # the same key on every attempt
    endpoint = await db.fetchrow("SELECT id, generation FROM webhook_endpoints WHERE url = $1", hook)
    secret = signing.endpoint_secret(WEBHOOK_SECRET.encode(), endpoint["id"], endpoint["generation"]).encode()
    for headers, raw in receiver.requests:
        assert signing.verify(secret, raw, headers[signing.SIGNATURE_HEADER])  # this destination's own secret
        assert not signing.verify(WEBHOOK_SECRET.encode(), raw, headers[signing.SIGNATURE_HEADER])  # not the master
        assert not signing.verify(b"wrong secret", raw, headers[signing.SIGNATURE_HEADER])
        assert not signing.verify(secret, raw + b" ", headers[signing.SIGNATURE_HEADER])
    payload = orjson.loads(receiver.requests[-1][1])
    assert payload["type"] == "link.first_click"
    assert (payload["contact_id"], payload["link"]["name"], payload["campaign"]["name"]) == (
        contact,
        "Pricing_CTA",
        "Launch",
    )
    assert uuid.UUID(payload["idempotency_key"]) == rows[0]["idempotency_key"]


def test_signatures_expire() -> None:
    body = b'{"a":1}'
    header = signing.sign(b"k", body, timestamp=1_000)
    assert signing.verify(b"k", body, header, now=1_100)
    assert not signing.verify(b"k", body, header, now=1_000 + signing.DEFAULT_TOLERANCE + 1)
    assert not signing.verify(b"k", body, "v1=abc")


async def test_contact_timeline_shows_clicks_and_actions_in_order(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    await setup_link(db, campaign_id, ACTIONS[:2])
    contact = campaign_id * 10
    for at in (0, 5_000_000):
        assert (
            await collectors[0].post("/v1/clicks", data=clicks(campaign_id, [contact], at=at), headers=INGEST)
        ).status == 200
    key = await apikeys.create(db, "reader", ["read"])
    resp = await collectors[1].get(
        f"/v1/reports/contacts/{contact}/timeline", headers={"Authorization": f"Bearer {key}"}
    )
    events = (await resp.json())["events"]
    assert [(e["kind"], e.get("action", {}).get("type")) for e in events] == [
        ("click", None),
        ("action", "add_tag"),
        ("action", "start_automation"),
        ("click", None),
    ]
    assert {(e["campaign"]["name"], e["link"]["name"]) for e in events} == {("Launch", "Pricing_CTA")}
    resp = await collectors[1].get(
        f"/v1/reports/contacts/{contact}/timeline?format=csv", headers={"Authorization": f"Bearer {key}"}
    )
    lines = (await resp.text()).splitlines()
    header = "at,kind,campaign_id,campaign,link_id,link,destination,detail,verdict,verdict_reasons"
    assert lines[0] == header and len(lines) == 5


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ([{"type": "unsubscribe", "list": "w"}, {"type": "subscribe", "list": "w"}], {"lists": [("w", True)]}),
        ([{"type": "subscribe", "list": "w"}, {"type": "unsubscribe", "list": "w"}], {"lists": [("w", False)]}),
        ([{"type": "remove_tag", "tag": "t"}, {"type": "add_tag", "tag": "t"}], {"tags": ["t"]}),
        ([{"type": "add_tag", "tag": "t"}, {"type": "remove_tag", "tag": "t"}], {"tags": []}),
        (
            [{"type": "start_automation", "automation": "a"}, {"type": "end_automation", "automation": "a"}],
            {"open_runs": 0, "runs": 2},  # the earlier run and this one, both ended
        ),
        (
            [{"type": "end_automation", "automation": "a"}, {"type": "start_automation", "automation": "a"}],
            {"open_runs": 1, "runs": 2},  # the earlier run ended, a new one running
        ),
    ],
)
async def test_actions_run_in_the_order_given(
    collectors: list[TestClient[Any, Any]],
    db: asyncpg.Connection,
    campaign_id: int,
    actions: list[dict[str, str]],
    expected: dict[str, Any],
) -> None:
    contact = campaign_id * 10
    await setup_link(db, campaign_id, actions)
    await db.execute(
        "INSERT INTO automation_runs (contact_id, automation, started_at) VALUES ($1, 'a', now() - interval '1 day')",
        contact,
    )
    assert (await collectors[0].post("/v1/clicks", data=clicks(campaign_id, [contact]), headers=INGEST)).status == 200
    got = await state(db, contact)
    if "lists" in expected:
        assert got["lists"] == expected["lists"]
    if "tags" in expected:
        assert got["tags"] == expected["tags"]
    if "runs" in expected:
        assert got["runs"] == expected["runs"]
        open_runs = await db.fetchval(
            "SELECT count(*) FROM automation_runs WHERE contact_id = $1 AND ended_at IS NULL", contact
        )
        assert open_runs == expected["open_runs"]


async def test_two_links_with_the_same_list_clicked_in_one_batch(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    await campaigns.upsert_campaign(db, campaign_id, name="Two")
    await campaigns.register_links(
        db,
        campaign_id,
        [LinkSlot(1, "https://a.example.com/", "A", "html"), LinkSlot(2, "https://b.example.com/", "B", "html")],
    )
    for link in (1, 2):
        await campaigns.set_actions(db, campaign_id, link, [{"type": "subscribe", "list": "offers"}], "test")
    contact = campaign_id * 10
    ids = EventIds()
    rows = [
        [
            ids.next(RECENT_MS),
            RECENT_US + link,
            campaign_id,
            link,
            contact,
            0,
            1,
            "192.0.2.1",
            "u",
            "GET",
        ]
        for link in (1, 2)
    ]
    body = orjson.dumps({"v": 1, "edge": "e", "clicks": rows})
    assert (await collectors[0].post("/v1/clicks", data=body, headers=INGEST)).status == 200
    assert (await state(db, contact))["lists"] == [("offers", True)]
    assert (await state(db, contact))["events"] == 2


async def test_one_unusable_webhook_does_not_stop_the_others(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    receiver = Receiver(failures=0)
    unusable = "http://[oops/hook"
    async with TestServer(receiver.app) as server:
        # A row no validation would let in today (an older version's, or written by hand) comes first.
        row_id = await db.fetchval(
            "INSERT INTO webhook_outbox (idempotency_key, url, body, next_attempt_at) "
            "VALUES ($1, $2, '{}', now() - interval '1 minute') RETURNING id",
            uuid.uuid4(),
            unusable,
        )
        try:
            await setup_link(db, campaign_id, [{"type": "webhook", "url": f"http://127.0.0.1:{server.port}/hook"}])
            contact = campaign_id * 10
            assert (
                await collectors[0].post("/v1/clicks", data=clicks(campaign_id, [contact]), headers=INGEST)
            ).status == 200

            async def delivered() -> bool:
                return len(receiver.requests) == 1

            await eventually(delivered, timeout=15)

            # Either collector's deliverer may hold the unusable row: its attempt may end after the delivery.
            async def attempted() -> asyncpg.Record | None:
                return await db.fetchrow(
                    "SELECT attempts, last_error, delivered_at FROM webhook_outbox WHERE id = $1 AND attempts > 0",
                    row_id,
                )

            row = await eventually(attempted, timeout=15)
        finally:
            await settle(db, [unusable])
    # Recorded against that row alone: the HTTP client's own error, without the URL it could not parse.
    assert row is not None
    assert (row["last_error"], row["delivered_at"]) == ("InvalidUrlClientError: (a URL that cannot be parsed)", None)


def test_a_garbled_signature_is_refused_not_an_error() -> None:
    assert not signing.verify(b"k", b"{}", "t=1,v1=\u00e9\u00e9")
    assert not signing.verify(b"k", b"{}", "t=soon,v1=00")


async def test_webhooks_to_internal_addresses_are_refused_at_delivery(
    strict_collector: TestClient[Any, Any], db: asyncpg.Connection, campaign_id: int
) -> None:
    receiver = Receiver(failures=0)
    async with TestServer(receiver.app) as server:  # on 127.0.0.1
        hooks = [
            # A name is checked for what it resolves to when the request is made: like a name re-pointed at
            # an internal address after it was set (DNS rebinding), "localhost" resolves to loopback.
            f"http://localhost:{server.port}/hook",
            f"http://127.0.0.1:{server.port}/hook",  # IP literals: aiohttp resolves nothing for these
            f"http://[::ffff:127.0.0.1]:{server.port}/hook",  # 127.0.0.1 written for an IPv6 socket
        ]
        try:
            # Stored as the CLI stores them (no check when set): the deliverer is what must refuse.
            await setup_link(db, campaign_id, [{"type": "webhook", "url": hook} for hook in hooks])
            body = clicks(campaign_id, [campaign_id * 10])
            assert (await strict_collector.post("/v1/clicks", data=body, headers=INGEST)).status == 200

            async def refused() -> list[asyncpg.Record]:
                rows = await db.fetch(
                    "SELECT url, attempts, last_error, delivered_at, next_attempt_at > now() AS later "
                    "FROM webhook_outbox WHERE url = ANY($1) AND last_error IS NOT NULL",
                    hooks,
                )
                return rows if len(rows) == len(hooks) else []

            errors = {}
            for row in await eventually(refused, timeout=10):
                errors[row["url"]] = row["last_error"]
                assert row["delivered_at"] is None and row["later"]  # retried later, like any failure
            unopened = " (not opened by CLICKEDGE_WEBHOOK_ALLOW_NETWORKS)"
            by_name = errors.pop(hooks[0])  # what else localhost resolves to (::1) depends on the machine
            # In the resolver's order, which puts ::1 first on a machine with IPv6 configured.
            assert by_name.startswith("refused: localhost resolves to no allowed address: ")
            assert "127.0.0.1 is loopback" in by_name
            assert by_name.endswith(" is loopback" + unopened), by_name
            assert errors == {
                hooks[1]: "refused: 127.0.0.1 is loopback" + unopened,
                hooks[2]: "refused: ::ffff:7f00:1 embeds 127.0.0.1, which is loopback" + unopened,
            }
            assert receiver.requests == []  # nothing ever reached the receiver
        finally:
            await settle(db, hooks)


async def test_an_allowed_range_opens_internal_receivers_by_name_too(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    receiver = Receiver(failures=0)
    async with TestServer(receiver.app) as server:
        hook = f"http://localhost:{server.port}/hook"
        try:
            await setup_link(db, campaign_id, [{"type": "webhook", "url": hook}])
            body = clicks(campaign_id, [campaign_id * 10])
            assert (await collectors[0].post("/v1/clicks", data=body, headers=INGEST)).status == 200

            async def delivered() -> bool:
                return len(receiver.requests) == 1

            await eventually(delivered, timeout=10)
        finally:
            await settle(db, [hook])


async def test_credentials_and_queries_in_webhook_urls_are_never_logged_or_recorded(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    receiver = Receiver(failures=1)
    async with TestServer(receiver.app) as server:
        # Rows stored before such URLs were refused (an API that refuses them now cannot make them).
        failing = f"http://hookuser:s3cretpw@127.0.0.1:{server.port}/hook?token=t0psecret"
        unusable = "http://hookuser:s3cretpw@/hook?token=t0psecret"  # the HTTP client's error quotes it
        try:
            for url in (failing, unusable):
                await db.execute(
                    "INSERT INTO webhook_outbox (idempotency_key, url, body) VALUES ($1, $2, '{}')", uuid.uuid4(), url
                )
            collectors[0].app[WEBHOOKS].wake.set()

            async def both_tried() -> bool:
                errors = await db.fetch(
                    "SELECT last_error FROM webhook_outbox WHERE url = ANY($1) AND last_error IS NOT NULL",
                    [failing, unusable],
                )
                return len(errors) == 2

            await eventually(both_tried, timeout=10)
            rows = await db.fetch("SELECT url, last_error FROM webhook_outbox WHERE url = ANY($1)", [failing, unusable])
            errors = [r["last_error"] for r in rows]
            by_url = {r["url"]: r["last_error"] for r in rows}
        finally:
            await settle(db, [failing, unusable])
    # The collector's own log lines (the test receiver's access log shows what it was sent).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("clickedge"))
    assert f"{failing.split('@')[1].split('?')[0]} failed (HTTP 500)" in logged  # logged, by host and path
    # Each row's own error; the unusable URL as the client quoted it, without its user name, password and query.
    assert by_url == {failing: "HTTP 500", unusable: "InvalidUrlClientError: http:///hook"}
    for secret in ("hookuser", "s3cretpw", "t0psecret"):
        assert secret not in logged
        assert all(secret not in error for error in errors), errors


async def apply_one_by_one(db: asyncpg.Connection, contact: int, steps: list[tuple[Any, dict[str, str]]]) -> None:
    """The reference: each action alone, as its own statement, in the order given."""
    for at, action in steps:
        kind, value = action["type"], next(v for k, v in action.items() if k != "type")
        if kind == "add_tag":
            await db.execute("INSERT INTO contact_tags VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", contact, value, at)
        elif kind == "remove_tag":
            await db.execute("DELETE FROM contact_tags WHERE contact_id = $1 AND tag = $2", contact, value)
        elif kind in ("subscribe", "unsubscribe"):
            await db.execute(
                "INSERT INTO list_memberships VALUES ($1, $2, $3, $4) ON CONFLICT (contact_id, list) "
                "DO UPDATE SET subscribed = EXCLUDED.subscribed, changed_at = EXCLUDED.changed_at",
                contact,
                value,
                kind == "subscribe",
                at,
            )
        elif kind == "start_automation":
            await db.execute(
                "INSERT INTO automation_runs VALUES ($1, $2, $3, NULL) ON CONFLICT DO NOTHING", contact, value, at
            )
        elif kind == "end_automation":
            await db.execute(
                "UPDATE automation_runs SET ended_at = $3 WHERE contact_id = $1 AND automation = $2 "
                "AND ended_at IS NULL",
                contact,
                value,
                at,
            )


async def full_state(db: asyncpg.Connection, contact: int) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "tags": [
            tuple(r)
            for r in await db.fetch("SELECT tag, added_at FROM contact_tags WHERE contact_id = $1 ORDER BY 1", contact)
        ],
        "runs": [
            tuple(r)
            for r in await db.fetch(
                "SELECT automation, started_at, ended_at FROM automation_runs WHERE contact_id = $1 ORDER BY 1, 2",
                contact,
            )
        ],
        "lists": [
            tuple(r)
            for r in await db.fetch(
                "SELECT list, subscribed, changed_at FROM list_memberships WHERE contact_id = $1 ORDER BY 1", contact
            )
        ],
    }


async def give_history(db: asyncpg.Connection, contact: int) -> None:
    """What the contact had before the click: tags, an open automation run, an unsubscribed list."""
    await db.execute("INSERT INTO contact_tags VALUES ($1, 'vip', '2020-01-01Z'), ($1, 'cold', '2020-01-01Z')", contact)
    await db.execute("INSERT INTO automation_runs VALUES ($1, 'trial', '2020-01-02Z', NULL)", contact)
    await db.execute("INSERT INTO list_memberships VALUES ($1, 'offers', false, '2020-01-03Z')", contact)


async def test_one_clicks_actions_run_and_show_in_the_order_listed(
    collectors: list[TestClient[Any, Any]], db: asyncpg.Connection, campaign_id: int
) -> None:
    receiver = Receiver(failures=0)
    async with TestServer(receiver.app) as server:
        hook = f"http://127.0.0.1:{server.port}/hook"
        first = [  # the order of the report: add_tag, remove_tag, start_automation, subscribe, webhook
            {"type": "add_tag", "tag": "pricing"},
            {"type": "remove_tag", "tag": "cold"},
            {"type": "start_automation", "automation": "trial"},
            {"type": "subscribe", "list": "offers"},
            {"type": "webhook", "url": hook},
        ]
        second = [  # where order changes the outcome
            {"type": "remove_tag", "tag": "vip"},
            {"type": "add_tag", "tag": "vip"},  # back, as of this click
            {"type": "add_tag", "tag": "pricing"},  # already there since the first click: unchanged
            {"type": "end_automation", "automation": "trial"},  # both runs
            {"type": "unsubscribe", "list": "offers"},
            {"type": "subscribe", "list": "offers"},
        ]
        await campaigns.upsert_campaign(db, campaign_id, name="Order")
        await campaigns.register_links(
            db,
            campaign_id,
            [LinkSlot(1, "https://a.example.com/", "A", "html"), LinkSlot(2, "https://b.example.com/", "B", "html")],
        )
        await campaigns.set_actions(db, campaign_id, 1, first, "test")
        await campaigns.set_actions(db, campaign_id, 2, second, "test")
        contact, twin = campaign_id * 10, campaign_id * 10 + 1
        for someone in (contact, twin):
            await give_history(db, someone)
        ids = EventIds()
        t0 = RECENT_US
        rows = [  # one batch: link 1, then link 2 a millisecond later
            [ids.next(t0 // 1000 + n), t0 + n * 1000, campaign_id, link, contact, 0, 1, "192.0.2.1", "u", "GET"]
            for n, link in enumerate((1, 2))
        ]
        body = orjson.dumps({"v": 1, "edge": "e", "clicks": rows})
        assert (await collectors[0].post("/v1/clicks", data=body, headers=INGEST)).status == 200

        key = await apikeys.create(db, "reader", ["read"])
        resp = await collectors[1].get(
            f"/v1/reports/contacts/{contact}/timeline", headers={"Authorization": f"Bearer {key}"}
        )
        events = (await resp.json())["events"]
        assert [(e["kind"], e["link"]["id"], e.get("action")) for e in events] == [
            ("click", 1, None),
            *[("action", 1, a) for a in first],
            ("click", 2, None),
            *[("action", 2, a) for a in second],
        ]
        # The state equals running the actions one by one, in order, on a contact with the same history.
        times = [datetime.fromtimestamp((t0 + n * 1000) / 1e6, UTC) for n in range(2)]
        await apply_one_by_one(db, twin, [(times[0], a) for a in first] + [(times[1], a) for a in second])
        assert await full_state(db, contact) == await full_state(db, twin)
        state = await full_state(db, contact)
        assert state["tags"] == [("pricing", times[0]), ("vip", times[1])]
        assert state["lists"] == [("offers", True, times[1])]

        async def delivered() -> bool:
            return len(receiver.requests) == 1

        try:
            await eventually(delivered, timeout=15)
        finally:
            await settle(db, [hook])
