"""The report pages over real HTTP against a real collector and PostgreSQL: signing in (API key, one-time URL,
sign-out, revocation), the pages' headers, escaping of hostile values, scopes and cross-site form protection,
the changes the forms make, and the numbers equal to the API's. tests/ui drives the same pages in a browser."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import apikeys, ingest, sessions, status
from collector.app import EDGES, create_app
from collector.config import CollectorConfig
from collector.ui.pages import CSP
from tests.clickedge.test_cli import clickedge
from tests.collector.clock import RECENT_US
from tests.collector.seed import HOSTILE_LINK, HOSTILE_NAME, HOSTILE_TAG, HOSTILE_URL, click, seed
from tests.collector.test_actions import LOOPBACK
from tests.conftest import INGEST_SECRET

Client = TestClient[Any, Any]


@pytest.fixture
async def collector(database_url: str, data_dir: Path) -> AsyncIterator[Client]:
    config = CollectorConfig(verdict_hold=0, database_url=database_url, ingest_secret=INGEST_SECRET, data_dir=data_dir)
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def sign_in(client: Client, db: asyncpg.Connection, scope: str = "write") -> str:
    """A session's form token, its cookie now in the client's jar."""
    key = await apikeys.create(db, f"pages {scope}", [scope])
    resp = await client.post("/ui/login", data={"key": key, "next": "/ui/"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"
    page = await (await client.get("/ui/")).text()
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match
    return match.group(1)


def field(html: str, name: str, within: str = "") -> str:
    """The text of the element with data-field=name (after ``within``, when given)."""
    start = html.index(within) if within else 0
    match = re.search(rf'data-field="{name}">(.*?)</', html[start:], re.S)
    assert match, name
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def num(n: int | None) -> str:
    return "\u2013" if n is None else f"{n:,}"


def pct(r: float | None) -> str:
    return "\u2013" if r is None else f"{r * 100:.1f} %"


async def test_pages_need_a_session_and_a_key_signs_in_with_a_strict_cookie(
    collector: Client, db: asyncpg.Connection
) -> None:
    resp = await collector.get("/ui/campaigns/7?x=1", allow_redirects=False)
    assert resp.status == 303
    assert parse_qs(urlsplit(resp.headers["Location"]).query) == {"next": ["/ui/campaigns/7?x=1"]}
    assert resp.headers["Content-Security-Policy"] == CSP
    resp = await collector.get("/ui", allow_redirects=False)
    assert resp.status == 301 and resp.headers["Location"] == "/ui/"
    login = await collector.get("/ui/login?next=https://evil.example/")
    assert login.status == 200 and 'name="next" value="/ui/"' in await login.text()  # never another site
    for header, value in (
        ("Content-Security-Policy", CSP),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ):
        assert login.headers[header] == value
    assert "script-src" not in CSP and "default-src 'none'" in CSP and "frame-ancestors 'none'" in CSP

    for key in ("", "ck_deadbeef_nope", "\u00e9" * 10, "x" * 500):
        bad = await collector.post("/ui/login", data={"key": key}, allow_redirects=False)
        assert bad.status == 401 and "not an active API key" in await bad.text()
    key = await apikeys.create(db, "analyst", ["read"])
    resp = await collector.post("/ui/login", data={"key": key, "next": "/ui/status"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/status"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert key not in cookie and (await collector.get("/ui/status")).status == 200

    behind_tls = await collector.post(
        "/ui/login", data={"key": key}, headers={"X-Forwarded-Proto": "https"}, allow_redirects=False
    )
    assert "Secure" in behind_tls.headers["Set-Cookie"]
    evil = await collector.post(
        "/ui/login", data={"key": key}, headers={"Origin": "https://evil.example"}, allow_redirects=False
    )
    assert evil.status == 403 and "Set-Cookie" not in evil.headers

    stored = await db.fetchval("SELECT secret_hash FROM ui_sessions ORDER BY created_at DESC LIMIT 1")
    assert cookie.split("=", 1)[1].split(";")[0].split(".")[1].encode() not in bytes(stored)  # only a hash


async def test_a_one_time_url_signs_in_once_lands_on_next_and_expires(
    collector: Client, db: asyncpg.Connection, data_dir: Path, database_url: str
) -> None:
    (data_dir / "collector.url").write_text(f"http://127.0.0.1:{collector.port}\n")
    common = ("--data-dir", str(data_dir), "--database-url", database_url)
    made = await asyncio.to_thread(clickedge, "login-url", *common, "--next", "/ui/status")
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert url.startswith(f"http://127.0.0.1:{collector.port}/ui/login?token=")
    path = url.split(str(collector.port), 1)[1]
    resp = await collector.get(path, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/status"
    assert "SameSite=Strict" in resp.headers["Set-Cookie"]
    assert (await collector.get("/ui/status", allow_redirects=False)).status == 200
    collector.session.cookie_jar.clear()
    again = await collector.get(path, allow_redirects=False)
    assert again.status == 401 and "spent or expired" in await again.text()  # spent on first use

    token, _ = await sessions.create_sign_in(db, ["read"], None)
    await db.execute("UPDATE ui_sign_in_tokens SET expires_at = now() - interval '1 second'")
    assert (await collector.get(f"/ui/login?token={token}", allow_redirects=False)).status == 401

    for bad_next in ("https://evil.example/", "//evil.example/", "/ui/../v1/blocks", "/elsewhere"):
        refused = await asyncio.to_thread(clickedge, "login-url", *common, "--next", bad_next)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
        assert "--next must be a path of the report pages" in refused.stderr
    elsewhere = await asyncio.to_thread(clickedge, "login-url", *common, "--collector-url", "https://ce.example.net/")
    assert elsewhere.stdout.startswith("https://ce.example.net/ui/login?token=")
    nowhere = await asyncio.to_thread(clickedge, "login-url", "--data-dir", str(data_dir / "none"))
    assert nowhere.returncode == 2 and "no database" in nowhere.stderr


async def test_signing_out_and_revoking_end_a_session(collector: Client, db: asyncpg.Connection) -> None:
    csrf = await sign_in(collector, db, "read")
    listed = await sessions.listing(db)
    mine = listed[0]["id"]
    assert listed[0]["name"] == "pages read" and listed[0]["scopes"] == ["read"]
    # A write key sees every session and revokes one through the API.
    writer = await apikeys.create(db, "admin", ["write"])
    headers = {"Authorization": f"Bearer {writer}"}
    api = await collector.get("/v1/ui/sessions", headers=headers)
    assert mine in [s["id"] for s in (await api.json())["sessions"]]
    reader = await apikeys.create(db, "reader", ["read"])
    assert (await collector.get("/v1/ui/sessions", headers={"Authorization": f"Bearer {reader}"})).status == 403
    assert (await collector.delete(f"/v1/ui/sessions/{mine}", headers=headers)).status == 200
    assert (await collector.delete(f"/v1/ui/sessions/{mine}", headers=headers)).status == 404
    resp = await collector.get("/ui/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/ui/login")

    csrf = await sign_in(collector, db, "read")
    resp = await collector.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/login"
    assert (await collector.get("/ui/", allow_redirects=False)).status == 303

    await sign_in(collector, db, "read")
    key_id = await db.fetchval("SELECT key_id FROM ui_sessions ORDER BY created_at DESC LIMIT 1")
    assert await apikeys.revoke(db, key_id)  # the key's sessions end with it
    assert (await collector.get("/ui/", allow_redirects=False)).status == 303


async def test_every_page_escapes_hostile_values(collector: Client, db: asyncpg.Connection, campaign_id: int) -> None:
    seeded = await seed(db, campaign_id)
    await sign_in(collector, db, "write")
    hostile_agent = await apikeys.create(db, HOSTILE_LINK, ["read"])  # a key's name is shown too
    resp = await collector.post(
        "/ui/login", data={"key": hostile_agent}, headers={"User-Agent": HOSTILE_NAME}, allow_redirects=False
    )
    assert resp.status == 303  # that session, with its hostile name and browser, is listed on /ui/sessions
    await sign_in(collector, db, "write")
    pages = [
        "/ui/",
        f"/ui/campaigns/{campaign_id}",
        f"/ui/campaigns/{campaign_id}/links/1",
        f"/ui/contacts/{seeded.people[0]}",
        "/ui/status",
        "/ui/sessions",
    ]
    for path in pages:
        resp = await collector.get(path + ("?sort=id&order=desc" if path == "/ui/" else ""))
        html = await resp.text()
        assert resp.status == 200, path
        assert resp.headers["Content-Security-Policy"] == CSP
        for hostile in (HOSTILE_NAME, HOSTILE_LINK, HOSTILE_URL, HOSTILE_TAG):
            assert hostile not in html, (path, hostile)
        assert "<script" not in html and "onerror=" not in html.replace("onerror=alert(1)&gt;", "")
    campaign = await (await collector.get(f"/ui/campaigns/{campaign_id}")).text()
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in campaign
    link = await (await collector.get(f"/ui/campaigns/{campaign_id}/links/1")).text()
    assert "&lt;/textarea&gt;&lt;script&gt;alert(4)&lt;/script&gt;" in link  # the tag, in the form's textarea
    listed = await (await collector.get("/ui/sessions")).text()
    assert "&lt;script&gt;alert(&#39;name&#39;)" in listed and "&#34;&gt;&lt;svg onload=alert(2)&gt;" in listed


async def test_the_pages_show_the_apis_numbers(collector: Client, db: asyncpg.Connection, campaign_id: int) -> None:
    seeded = await seed(db, campaign_id)
    await sign_in(collector, db, "read")
    key = await apikeys.create(db, "api", ["read"])
    headers = {"Authorization": f"Bearer {key}"}
    report = await (await collector.get(f"/v1/reports/campaigns/{campaign_id}", headers=headers)).json()
    assert report["clicks"] > 0 and sum(report["automated"].values()) > 0  # people and machines both
    html = await (await collector.get(f"/ui/campaigns/{campaign_id}")).text()
    machines = sum(report["automated"].values())
    for name, want in (
        ("recipients", num(report["recipients"])),
        ("unique_clickers", num(report["unique_clickers"])),
        ("click_through_rate", pct(report["click_through_rate"])),
        ("clicks", num(report["clicks"])),
        ("unique_clicks", num(report["unique_clicks"])),
        ("machine_clicks", num(machines)),
        ("pending", num(report["pending"])),
        ("unsubscribes", num(report["unsubscribes"])),
    ):
        assert field(html, name) == want, name
    for link in report["links"]:
        row = f'data-link="{link["id"]}"'
        assert field(html, "clicks", row) == num(link["clicks"])
        assert field(html, "unique_clicks", row) == num(link["unique_clicks"])
        assert field(html, "machine_clicks", row) == num(sum(link["automated"].values()))
    # The chart: one marker per hour per series, with the API's hourly numbers.
    markers = re.findall(r'data-at="([^"]+)" data-people="(\d+)" data-machines="(\d+)"', html)
    hourly = {datetime.fromisoformat(h["hour"]): (h["clicks"], sum(h["automated"].values())) for h in report["hourly"]}
    assert len(hourly) == seeded.hours
    assert {datetime.fromisoformat(at): (int(p), int(m)) for at, p, m in markers} == hourly

    listing = await (await collector.get("/v1/reports/campaigns?sort=id&order=desc&limit=1000", headers=headers)).json()
    mine = next(c for c in listing["campaigns"] if c["id"] == campaign_id)
    assert mine["clicks"] == report["clicks"] and mine["unique_clickers"] == report["unique_clickers"]
    assert mine["machine_clicks"] == machines and mine["click_through_rate"] == report["click_through_rate"]
    page = await (await collector.get("/ui/?sort=id&order=desc")).text()
    row = f'data-campaign="{campaign_id}"'
    if row in page:  # the first page, unless other tests' campaigns came later
        assert field(page, "clicks", row) == num(mine["clicks"])
        assert field(page, "click_through_rate", row) == pct(mine["click_through_rate"])
    for sort in ("name", "ctr", "last_click", "machines"):
        for order in ("asc", "desc"):
            assert (await collector.get(f"/ui/?sort={sort}&order={order}&page=2")).status == 200

    clickers = await (
        await collector.get(f"/v1/reports/campaigns/{campaign_id}/links/1/clickers?limit=100", headers=headers)
    ).json()
    link_page = await (await collector.get(f"/ui/campaigns/{campaign_id}/links/1")).text()
    shown_contacts = [int(c) for c in re.findall(r'<tr data-contact="(\d+)"', link_page)]
    assert shown_contacts == [c["contact_id"] for c in clickers["clickers"]]
    exported = await collector.get(f"/ui/campaigns/{campaign_id}/links/1/clickers.csv")
    assert exported.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(await exported.text())))
    assert [int(r["contact_id"]) for r in rows] == shown_contacts
    assert rows[0]["verdict"] == "human"

    timeline = await (await collector.get(f"/v1/reports/contacts/{seeded.people[0]}/timeline", headers=headers)).json()
    contact = await (await collector.get(f"/ui/contacts/{seeded.people[0]}")).text()
    assert contact.count('<tr class="event-') == len(timeline["events"])


async def test_forms_need_write_scope_and_a_token_from_the_same_origin(
    collector: Client, db: asyncpg.Connection, campaign_id: int
) -> None:
    await seed(db, campaign_id)
    base = f"/ui/campaigns/{campaign_id}"
    csrf = await sign_in(collector, db, "read")
    resp = await collector.post(f"{base}/tracking", data={"csrf": csrf, "tracking": "off"}, allow_redirects=False)
    assert resp.status == 403 and "read scope" in await resp.text()
    assert (await collector.get("/ui/sessions")).status == 403
    assert "Turn tracking" not in await (await collector.get(base)).text()  # no forms for a reader

    csrf = await sign_in(collector, db, "write")
    for data, headers in (
        ({"tracking": "off"}, {}),  # no token
        ({"tracking": "off", "csrf": "0" * 64}, {}),  # another token
        ({"tracking": "off", "csrf": csrf}, {"Origin": "https://evil.example"}),
        ({"tracking": "off", "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ):
        resp = await collector.post(f"{base}/tracking", data=data, headers=headers, allow_redirects=False)
        assert resp.status == 403 and "cross-site" in await resp.text()
    assert await db.fetchval("SELECT tracking FROM campaigns WHERE campaign_id = $1", campaign_id)

    origin = {"Origin": f"http://127.0.0.1:{collector.port}"}
    resp = await collector.post(
        f"{base}/tracking", data={"tracking": "off", "csrf": csrf}, headers=origin, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"].startswith(base)
    assert not await db.fetchval("SELECT tracking FROM campaigns WHERE campaign_id = $1", campaign_id)
    bad = await collector.post(f"{base}/tracking", data={"tracking": "maybe", "csrf": csrf})
    assert bad.status == 400 and "on or off" in await bad.text()

    link = f"{base}/links/2"
    bad = await collector.post(f"{link}/actions", data={"csrf": csrf, "actions": "[{", "on": "human"})
    assert bad.status == 400 and "not valid JSON" in await bad.text()
    bad = await collector.post(f"{link}/actions", data={"csrf": csrf, "actions": '[{"type": "explode"}]'})
    assert bad.status == 400 and "add_tag" in await bad.text()
    private = '[{"type": "webhook", "url": "http://10.0.0.1/hook"}]'
    bad = await collector.post(f"{link}/actions", data={"csrf": csrf, "actions": private})
    assert bad.status == 400
    good = '[{"type": "subscribe", "list": "pricing-fans"}]'
    resp = await collector.post(
        f"{link}/actions", data={"csrf": csrf, "actions": good, "on": "every_click"}, allow_redirects=False
    )
    assert resp.status == 303
    row = await db.fetchrow("SELECT actions, actions_on FROM links WHERE campaign_id = $1 AND link_id = 2", campaign_id)
    assert row["actions_on"] == "every_click" and "pricing-fans" in row["actions"]
    actor = await db.fetchval(
        "SELECT actor FROM link_action_audit WHERE campaign_id = $1 AND link_id = 2 ORDER BY id DESC LIMIT 1",
        campaign_id,
    )
    assert actor.startswith("ui:") and actor.endswith(":pages write")
    assert (await collector.post(f"{base}/links/99/actions", data={"csrf": csrf, "actions": "[]"})).status == 404

    assert (await collector.post(f"{link}/block", data={"csrf": csrf, "reason": " "})).status == 400
    resp = await collector.post(f"{link}/block", data={"csrf": csrf, "reason": "phishing"}, allow_redirects=False)
    assert resp.status == 303
    blocked = await db.fetchrow(
        "SELECT reason, blocked_by FROM blocks WHERE campaign_id = $1 AND link_id = 2 AND unblocked_at IS NULL",
        campaign_id,
    )
    assert blocked["reason"] == "phishing" and blocked["blocked_by"].startswith("ui:")
    assert "Lift the block on this link" in await (await collector.get(link)).text()
    resp = await collector.post(f"{link}/unblock", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303
    assert (await collector.post(f"{link}/unblock", data={"csrf": csrf})).status == 400  # nothing to lift
    resp = await collector.post(f"{base}/block", data={"csrf": csrf, "reason": "compromised"}, allow_redirects=False)
    assert resp.status == 303 and "Blocked" in await (await collector.get(base)).text()
    assert (await collector.post(f"{base}/unblock", data={"csrf": csrf}, allow_redirects=False)).status == 303


async def test_bad_addresses_get_a_page_saying_why(collector: Client, db: asyncpg.Connection) -> None:
    await sign_in(collector, db, "read")
    for path, code, words in (
        ("/ui/campaigns/x", 400, "whole number"),
        ("/ui/campaigns/99999999999", 400, "from 0 to"),
        ("/ui/campaigns/4294967295", 404, "neither a registration nor clicks"),
        ("/ui/campaigns/4294967295/links/1", 404, "has no link 1"),
        ("/ui/contacts/0", 400, "from 1 to"),
        ("/ui/contacts?id=%D9%A3", 400, "whole number"),
        ("/ui/?sort=evil", 400, "sort must be one of"),
        ("/ui/?order=sideways", 400, "asc or desc"),
        ("/ui/?page=0", 400, "from 1 to"),
        ("/ui/nowhere", 404, "Not Found"),
    ):
        resp = await collector.get(path, allow_redirects=False)
        assert resp.status == code, path
        assert words in await resp.text(), path
        assert resp.headers["Content-Security-Policy"] == CSP
    resp = await collector.get("/ui/contacts?id=42", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/contacts/42"


async def test_the_status_page_shows_each_edges_shipping_and_dead_letters(
    collector: Client, db: asyncpg.Connection, campaign_id: int
) -> None:
    ingest_headers = {"Authorization": f"Bearer {INGEST_SECRET}"}
    edge = f"edge-status-{campaign_id}"
    row = ["0" * 32, 1, "not a campaign", 1, None, 0, 1, "192.0.2.1", "u", "GET"]
    bad = await collector.post("/v1/clicks", json={"v": 1, "edge": edge, "clicks": [row]}, headers=ingest_headers)
    assert bad.status == 400
    assert collector.app is not None
    book = collector.app[EDGES]
    book.note(edge, 12, 0.25)
    await book.flush(db)
    await sign_in(collector, db, "read")
    html = await (await collector.get("/ui/status")).text()
    assert edge in html and "0.25" in html
    assert "(a batch naming no edge): " in html  # the refused batch, under dead letters
    key = await apikeys.create(db, "status", ["read"])
    state = await (await collector.get("/v1/status", headers={"Authorization": f"Bearer {key}"})).json()
    mine = next(e for e in state["edges"] if e["edge"] == edge)
    assert (mine["batches"], mine["clicks"], mine["last_lag_seconds"]) == (1, 12, 0.25)
    assert {"pending", "retrying", "failed", "failed_last_day", "failing"} <= set(state["webhooks"])


async def test_the_edge_book_is_bounded_and_keeps_what_a_failed_flush_did_not_write(
    database_url: str, db: asyncpg.Connection, campaign_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status, "MAX_EDGES", 2)
    book = status.EdgeBook()
    edge = f"edge-book-{campaign_id}"
    book.note(edge, 5, 1.5)
    book.note(edge + "-b", 1, None)
    book.note(edge + "-c", 1, None)  # a third edge: not kept, the book is full
    book.rejected(edge + "-c", "ignored")
    book.rejected(edge, "x" * 1000)
    closed = await asyncpg.connect(database_url)
    await closed.close()
    with pytest.raises(asyncpg.InterfaceError):
        await book.flush(closed)
    book.note(edge, 2, 0.5)  # after the failure, before the next flush
    assert await book.flush(db) == 2
    assert await book.flush(db) == 0
    row = await db.fetchrow("SELECT * FROM edge_status WHERE edge = $1", edge)
    assert (row["batches"], row["clicks"], row["rejected_batches"]) == (2, 7, 1)
    assert row["last_lag_seconds"] == 0.5 and len(row["last_rejection"]) == 300
    assert not await db.fetchval("SELECT count(*) FROM edge_status WHERE edge = $1", edge + "-c")


async def test_sign_in_tokens_and_cookies_that_are_not_ours(db: asyncpg.Connection) -> None:
    with pytest.raises(sessions.SignInError, match="scopes must be among"):
        await sessions.create_sign_in(db, ["admin"], None)
    for token in ("", "x" * 101, "\u00e9t\u00e9", "never-issued"):
        assert await sessions.spend_sign_in(db, token, "agent") is None
    for cookie in (None, "", "x" * 101, "nodot", "0123456789abcdef.", "0123456789ABCDEF.s", "0123456789abcdef.wrong"):
        assert await sessions.resume(db, cookie) is None
    assert sessions.safe_next("/ui/campaigns/1?sort=id") == "/ui/campaigns/1?sort=id"
    for bad in (None, "", "/ui//evil.example", "/ui/../v1", "https://evil.example/ui/", "/ui/<x>", "/ui/" + "a" * 500):
        assert sessions.safe_next(bad) == sessions.HOME


async def test_a_link_clicked_but_never_registered_has_a_page(
    collector: Client, db: asyncpg.Connection, campaign_id: int
) -> None:
    await seed(db, campaign_id)
    await ingest.ingest(db, "edge-a", [click(campaign_id, campaign_id * 10 + 1, 9, RECENT_US)])
    await sign_in(collector, db, "write")
    html = await (await collector.get(f"/ui/campaigns/{campaign_id}/links/9")).text()
    assert "Not registered" in html and field(html, "clicks") == "1"
    assert 'action="/ui/campaigns/' not in html.split("Actions</h2>")[1].split("<h2")[0]  # nothing to set
    assert (await collector.get(f"/ui/campaigns/{campaign_id}/links/10")).status == 404


async def test_a_webhook_action_set_from_a_page_makes_its_endpoint_and_stale_forms_say_why(
    database_url: str, data_dir: Path, db: asyncpg.Connection, campaign_id: int
) -> None:
    config = CollectorConfig(
        verdict_hold=0,
        database_url=database_url,
        ingest_secret=INGEST_SECRET,
        data_dir=data_dir,
        webhook_allow_networks=LOOPBACK,
    )
    async with TestClient(TestServer(create_app(config))) as client:
        await seed(db, campaign_id)
        hook = f"http://127.0.0.1:9/hooks/{campaign_id}"  # never called: no click follows
        signed_out = await client.post(f"/ui/campaigns/{campaign_id}/links/2/actions", data={"actions": "[]"})
        assert signed_out.status == 401 and "sign in again" in await signed_out.text()
        csrf = await sign_in(client, db, "write")
        resp = await client.post(
            f"/ui/campaigns/{campaign_id}/links/2/actions",
            data={"csrf": csrf, "actions": f'[{{"type": "webhook", "url": "{hook}"}}]'},
        )
        assert resp.status == 200 and "clickedge webhooks rotate" in await resp.text()
        assert await db.fetchval("SELECT count(*) FROM webhook_endpoints WHERE url = $1", hook) == 1
        unknown = await client.post("/ui/campaigns/4294967294/tracking", data={"csrf": csrf, "tracking": "off"})
        assert unknown.status == 404 and "does not exist" in await unknown.text()
