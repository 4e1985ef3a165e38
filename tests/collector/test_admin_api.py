"""The admin API over real HTTP against real PostgreSQL: keys and scopes, bad input, rewriting with
registration, link actions with their audit log, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import apikeys
from collector.actions import ActionError, validate
from collector.api import ROUTES
from collector.app import create_app
from collector.config import CollectorConfig
from common.settings import whole_number
from links import keys
from links.token import LINK_PATH, UNSUBSCRIBE_PATH
from tests.collector.clock import RECENT_MS, RECENT_US
from tests.conftest import INGEST_SECRET

MESSAGE = (
    '<html><body><a href="https://shop.example.com/pricing" data-clickedge-name="Pricing_CTA">Pricing</a>'
    '<a href="https://shop.example.com/pricing">again</a><a href="mailto:hi@example.com">mail</a></body></html>'
)


@pytest.fixture
async def api(database_url: str, data_dir: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = CollectorConfig(
        verdict_hold=0,
        database_url=database_url,
        ingest_secret=INGEST_SECRET,
        data_dir=data_dir,
        public_url="https://t.example.net",
    )
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


@pytest.fixture
async def keyring(db: asyncpg.Connection) -> dict[str, str]:
    return {
        "read": await apikeys.create(db, "reporting", ["read"]),
        "write": await apikeys.create(db, "crm sync", ["write"]),
    }


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_keys_and_scopes_are_enforced(
    api: TestClient[Any, Any], db: asyncpg.Connection, keyring: dict[str, str], campaign_id: int
) -> None:
    url = f"/v1/campaigns/{campaign_id}"
    for headers in ({}, auth("ck_deadbeef_nope"), auth("not-a-key"), {"Authorization": "Basic x"}):
        resp = await api.put(url, json={"name": "x"}, headers=headers)
        assert resp.status == 401
        assert "API key" in (await resp.json())["error"]
    resp = await api.put(url, json={"name": "x"}, headers=auth(keyring["read"]))
    assert resp.status == 403 and "write" in (await resp.json())["error"]
    resp = await api.put(url, json={"name": "Black Friday"}, headers=auth(keyring["write"]))
    assert resp.status == 200 and (await resp.json())["name"] == "Black Friday"
    for key in keyring.values():  # write includes read
        assert (await api.get(url, headers=auth(key))).status == 200
    key_id = keyring["read"].split("_")[1]
    assert await apikeys.revoke(db, key_id)
    assert (await api.get(url, headers=auth(keyring["read"]))).status == 401
    stored = await db.fetchval("SELECT secret_hash FROM api_keys WHERE key_id = $1", key_id)
    assert keyring["read"].split("_", 2)[2].encode() not in bytes(stored)  # only a hash is kept


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("PUT", "/v1/campaigns/abc", {}, 400, "campaign_id must be a whole number"),
        ("PUT", "/v1/campaigns/99999999999", {}, 400, "campaign_id must be from 0 to 4294967295"),
        ("PUT", "/v1/campaigns/5", {"nmae": "x"}, 400, "unknown fields: nmae"),
        ("PUT", "/v1/campaigns/5", {"tracking": "yes"}, 400, "tracking must be true or false"),
        ("PUT", "/v1/campaigns/5", b"{not json", 400, "not valid JSON"),
        ("PUT", "/v1/campaigns/5", [], 400, "must be a JSON object"),
        ("POST", "/v1/campaigns/5/rewrite", {"text": "x"}, 400, "html must be a string"),
        ("POST", "/v1/campaigns/5/rewrite", {"html": "", "contact_id": 0}, 400, "contact_id must be"),
        ("GET", "/v1/reports/campaigns/5/links/1/clickers?limit=0", None, 400, "limit must be from 1"),
        ("GET", "/v1/reports/contacts/0/timeline", None, 400, "contact_id must be from 1"),
        ("GET", "/v1/campaigns/4000000000", None, 404, "does not exist"),
        ("GET", "/v1/nothing-here", None, 404, "Not Found"),
        ("DELETE", "/v1/campaigns/5", None, 405, "Method Not Allowed"),
    ],
)
async def test_bad_requests_get_a_4xx_naming_the_problem(
    api: TestClient[Any, Any], keyring: dict[str, str], method: str, path: str, body: Any, status: int, message: str
) -> None:
    kwargs: dict[str, Any] = {"headers": auth(keyring["write"])}
    if isinstance(body, bytes):
        kwargs["data"] = body
    elif body is not None:
        kwargs["json"] = body
    resp = await api.request(method, path, **kwargs)
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert message in (await resp.json())["error"]


async def test_rewrite_registers_links_once_and_counts_each_recipient_once(
    api: TestClient[Any, Any], db: asyncpg.Connection, data_dir: Path, keyring: dict[str, str], campaign_id: int
) -> None:
    codec = keys.load(data_dir / "keys.json").codec()
    url = f"/v1/campaigns/{campaign_id}/rewrite"
    for contact in (1, 2, 1):
        resp = await api.post(url, json={"html": MESSAGE, "contact_id": contact}, headers=auth(keyring["write"]))
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["tracking"] is True
        assert [(link["id"], link["name"]) for link in body["links"]] == [(1, "Pricing_CTA"), (2, "link_2")]
        assert 'href="mailto:hi@example.com"' in body["html"]
        token = body["html"].split("https://t.example.net" + LINK_PATH, 1)[1].split('"', 1)[0]
        assert codec.decode(token).contact_id == contact
        # The one-click unsubscribe headers (RFC 8058), for this recipient.
        assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = body["headers"]["List-Unsubscribe"]
        assert unsubscribe.startswith("<https://t.example.net" + UNSUBSCRIBE_PATH) and unsubscribe.endswith(">")
        assert codec.decode_unsubscribe(unsubscribe[1:-1].rsplit("/", 1)[1]).contact_id == contact
    anonymous = await (await api.post(url, json={"html": MESSAGE}, headers=auth(keyring["write"]))).json()
    assert anonymous["headers"] == {}  # no one to unsubscribe
    links = await db.fetch(
        "SELECT link_id, destination, name FROM links WHERE campaign_id = $1 ORDER BY link_id", campaign_id
    )
    assert [tuple(r) for r in links] == [
        (1, "https://shop.example.com/pricing", "Pricing_CTA"),
        (2, "https://shop.example.com/pricing", "link_2"),
    ]
    assert await db.fetchval("SELECT recipients FROM campaigns WHERE campaign_id = $1", campaign_id) == 2

    changed = MESSAGE.replace("/pricing", "/plans", 1)
    resp = await api.post(url, json={"html": changed, "contact_id": 3}, headers=auth(keyring["write"]))
    assert resp.status == 409 and "cannot change" in (await resp.json())["error"]

    await api.put(f"/v1/campaigns/{campaign_id}", json={"tracking": False}, headers=auth(keyring["write"]))
    resp = await api.post(url, json={"html": MESSAGE, "contact_id": 4}, headers=auth(keyring["write"]))
    untracked = await resp.json()
    assert untracked["html"] == MESSAGE  # tracking off: unchanged
    token = untracked["headers"]["List-Unsubscribe"][1:-1].rsplit("/", 1)[1]
    assert codec.decode_unsubscribe(token).contact_id == 4  # unsubscribing is not tracking


async def test_a_campaign_mints_on_its_own_tracking_domain(
    api: TestClient[Any, Any], data_dir: Path, keyring: dict[str, str], campaign_id: int
) -> None:
    write = auth(keyring["write"])
    campaign, rewrite = f"/v1/campaigns/{campaign_id}", f"/v1/campaigns/{campaign_id}/rewrite"
    resp = await api.put(campaign, json={"tracking_url": "https://click.sender.example/"}, headers=write)
    assert resp.status == 200 and (await resp.json())["tracking_url"] == "https://click.sender.example"
    resp = await api.put(campaign, json={"name": "Black Friday"}, headers=write)
    assert (await resp.json())["tracking_url"] == "https://click.sender.example"  # unchanged unless given
    body = await (await api.post(rewrite, json={"html": MESSAGE, "contact_id": 1}, headers=write)).json()
    token = body["html"].split('href="https://click.sender.example' + LINK_PATH, 1)[1].split('"', 1)[0]
    assert keys.load(data_dir / "keys.json").codec().decode(token).campaign_id == campaign_id
    assert "t.example.net" not in body["html"]
    # "" goes back to the collector's CLICKEDGE_PUBLIC_URL.
    resp = await api.put(campaign, json={"tracking_url": ""}, headers=write)
    assert (await resp.json())["tracking_url"] is None
    body = await (await api.post(rewrite, json={"html": MESSAGE, "contact_id": 2}, headers=write)).json()
    assert 'href="https://t.example.net' + LINK_PATH in body["html"]
    # Only a plain base URL: it is written into every message's href attributes.
    hostile = ['https://t.example/"><img src=x onerror=alert(1)>', "https://t.example/'x", "https://t.example/<b>"]
    odd = ["https://t.example#", "https://t.example?", "https://a.example/?q=1", "https://t.example/a\\b"]
    for bad in (*hostile, *odd, "ftp://x.example", "javascript:alert(1)", "https://", "https://u@a.example", 5):
        resp = await api.put(campaign, json={"tracking_url": bad}, headers=write)
        assert resp.status == 400 and "tracking_url must be" in (await resp.json())["error"], bad
    resp = await api.put(campaign, json={"tracking_url": "https://" + "a" * 60 + ".example" * 20}, headers=write)
    assert resp.status == 400  # over 200 characters


async def test_actions_are_validated_stored_and_audited(
    api: TestClient[Any, Any], keyring: dict[str, str], campaign_id: int
) -> None:
    write = auth(keyring["write"])
    await api.post(f"/v1/campaigns/{campaign_id}/rewrite", json={"html": MESSAGE}, headers=write)
    url = f"/v1/campaigns/{campaign_id}/links/1/actions"
    bad = [
        ([{"type": "tag", "tag": "x"}], "actions[0].type must be one of"),
        ([{"type": "add_tag"}], "actions[0].tag must be a non-empty string"),
        ([{"type": "add_tag", "tag": "x", "colour": "red"}], "unknown fields: colour"),
        ([{"type": "webhook", "url": "ftp://x"}], "absolute http(s) URL"),
        ({"type": "add_tag"}, "must be a JSON array"),
    ]
    for body, message in bad:
        resp = await api.put(url, json=body, headers=write)
        assert resp.status == 400 and message in (await resp.json())["error"]
    first = [{"type": "add_tag", "tag": "pricing"}, {"type": "subscribe", "list": "offers"}]
    second = [{"type": "start_automation", "automation": "trial"}]
    for actions in (first, second):
        resp = await api.put(url, json=actions, headers=write)
        assert resp.status == 200 and (await resp.json())["actions"] == actions
    assert (await api.put(f"/v1/campaigns/{campaign_id}/links/9/actions", json=[], headers=write)).status == 404
    audit = await (await api.get(f"{url}/audit", headers=auth(keyring["read"]))).json()
    assert [(c["before"], c["after"]) for c in audit["changes"]] == [([], first), (first, second)]
    assert all(c["actor"].startswith("api:") and "crm sync" in c["actor"] for c in audit["changes"])
    links = await (await api.get(f"/v1/campaigns/{campaign_id}/links", headers=auth(keyring["read"]))).json()
    assert links["links"][0]["actions"] == second


HOOK = "https://hooks.example.com/in/"
# An action list past each of its limits, and the one message that names that limit: every case over the
# API here and over `clickedge actions --set` in tests/clickedge/test_cli.py.
REFUSED_ACTIONS: list[tuple[str, Any, str]] = [
    ("21 actions", [{"type": "add_tag", "tag": f"t{n}"} for n in range(21)], "at most 20 actions per link"),
    ("a string", ["add_tag"], "actions[0] must be an object"),
    ("a number after an object", [{"type": "add_tag", "tag": "a"}, 5], "actions[1] must be an object"),
    ("a null", [None], "actions[0] must be an object"),
    ("a 201-character tag", [{"type": "add_tag", "tag": "x" * 201}], "actions[0].tag must be at most 200 characters"),
    (
        "a 2001-character list",
        [{"type": "subscribe", "list": "x" * 2001}],
        "actions[0].list must be at most 200 characters",
    ),
    (
        "a 2001-character URL",
        [{"type": "webhook", "url": HOOK + "a" * (2001 - len(HOOK))}],
        "actions[0].url must be at most 2000 characters",
    ),
    (
        "a blank automation",
        [{"type": "start_automation", "automation": "  "}],
        "actions[0].automation must be a non-empty string",
    ),
    ("a NUL in a tag", [{"type": "add_tag", "tag": "a\x00b"}], "actions[0].tag must not contain a NUL character"),
    (
        "a repeat",
        [{"type": "subscribe", "list": "news"}, {"type": "add_tag", "tag": "a"}, {"type": "subscribe", "list": "news"}],
        "actions[2] repeats actions[0]",
    ),
]
# Just inside each limit.
ACCEPTED_ACTIONS: list[tuple[str, Any]] = [
    ("20 actions", [{"type": "add_tag", "tag": f"t{n}"} for n in range(20)]),
    ("a 200-character tag", [{"type": "add_tag", "tag": "x" * 200}]),
    ("the same name for two kinds", [{"type": "add_tag", "tag": "vip"}, {"type": "remove_tag", "tag": "vip"}]),
]


@pytest.mark.parametrize(("case", "body", "message"), REFUSED_ACTIONS, ids=[c[0] for c in REFUSED_ACTIONS])
def test_each_limit_of_an_action_list_is_refused_with_its_own_message(case: str, body: Any, message: str) -> None:
    with pytest.raises(ActionError) as refused:
        validate(body)
    assert str(refused.value) == message


def test_an_action_list_just_inside_its_limits_is_accepted() -> None:
    for _, body in ACCEPTED_ACTIONS:
        assert validate(body) == body
    url = HOOK + "a" * (2000 - len(HOOK))
    assert validate([{"type": "webhook", "url": url}]) == [{"type": "webhook", "url": url}]


async def test_the_api_refuses_an_action_list_past_its_limits_and_keeps_the_one_stored(
    api: TestClient[Any, Any], keyring: dict[str, str], campaign_id: int
) -> None:
    write = auth(keyring["write"])
    await api.post(f"/v1/campaigns/{campaign_id}/rewrite", json={"html": MESSAGE}, headers=write)
    url = f"/v1/campaigns/{campaign_id}/links/1/actions"
    stored = [{"type": "add_tag", "tag": "kept"}]
    assert (await api.put(url, json=stored, headers=write)).status == 200
    for case, body, message in REFUSED_ACTIONS:
        resp = await api.put(url, json=body, headers=write)
        assert resp.status == 400, case
        assert await resp.json() == {"error": message}, case
    links = await (await api.get(f"/v1/campaigns/{campaign_id}/links", headers=write)).json()
    assert links["links"][0]["actions"] == stored  # nothing of a refused list is kept...
    audit = await (await api.get(f"{url}/audit", headers=write)).json()
    assert [c["after"] for c in audit["changes"]] == [stored]  # ...nor recorded as a change
    for case, body in ACCEPTED_ACTIONS:
        resp = await api.put(url, json=body, headers=write)
        assert resp.status == 200 and (await resp.json())["actions"] == body, case


async def test_openapi_describes_every_route(api: TestClient[Any, Any]) -> None:
    resp = await api.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    for route in ROUTES:
        if route.path == "/openapi.json":
            continue
        operation = doc["paths"][route.path][route.method.lower()]
        assert operation["x-scope"] == route.scope
        assert {"400", "401", "403"} <= set(operation["responses"])


async def test_hostile_input_gets_a_4xx_not_a_500(
    api: TestClient[Any, Any], keyring: dict[str, str], campaign_id: int
) -> None:
    write = auth(keyring["write"])
    url = f"/v1/campaigns/{campaign_id}"
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", f"{url}/rewrite", {"html": "<a href='https://x.example.com/'>x</a><![x]>"}, 400),
        ("POST", f"{url}/rewrite", {"html": "x" * (1 << 20) + "y"}, 400),
        ("POST", f"{url}/rewrite", {"html": "<p>\x00</p>"}, 400),
        ("PUT", url, {"name": "a\x00b"}, 400),
    ]
    for method, path, body, status in cases:
        resp = await api.request(method, path, data=io.BytesIO(orjson.dumps(body)), headers=write)
        assert resp.status == status, (path, await resp.text())
        assert "error" in await resp.json()
    # A key with bytes that are not UTF-8 is simply not a key.
    resp = await api.put(url, json={"name": "x"}, headers={"Authorization": "Bearer ck_\xff\xfe_x"})
    assert resp.status == 401
    await api.post(f"{url}/rewrite", json={"html": "<a href='https://x.example.com/'>x</a>"}, headers=write)
    for action in (
        {"type": "webhook", "url": "http://a..b/"},
        {"type": "webhook", "url": "http://[::1"},
        {"type": "add_tag", "tag": "a\x00"},
    ):
        resp = await api.put(f"{url}/links/1/actions", json=[action], headers=write)
        assert resp.status == 400, action


async def test_csv_exports_neutralise_formulas(
    api: TestClient[Any, Any], db: asyncpg.Connection, keyring: dict[str, str], campaign_id: int
) -> None:
    from common.events import EventIds

    write = auth(keyring["write"])
    html = '<a href="https://x.example.com/" data-clickedge-name="=HYPERLINK(&quot;http://evil&quot;)">x</a>'
    await api.put(f"/v1/campaigns/{campaign_id}", json={"name": "+cmd|calc"}, headers=write)
    await api.post(f"/v1/campaigns/{campaign_id}/rewrite", json={"html": html}, headers=write)
    contact = campaign_id
    ids = EventIds()
    click = [ids.next(RECENT_MS), RECENT_US, campaign_id, 1, contact, 0, 1, "192.0.2.1", "u", "GET"]
    body = orjson.dumps({"v": 1, "edge": "e", "clicks": [click]})
    assert (await api.post("/v1/clicks", data=body, headers={"Authorization": f"Bearer {INGEST_SECRET}"})).status == 200
    resp = await api.get(f"/v1/reports/contacts/{contact}/timeline?format=csv", headers=write)
    row = next(csv.DictReader(io.StringIO(await resp.text())))
    assert row["campaign"] == "'+cmd|calc"
    assert row["link"] == '\'=HYPERLINK("http://evil")'
    assert (row["kind"], row["verdict"], row["verdict_reasons"]) == ("click", "human", "")


async def raw_request(client: TestClient[Any, Any], request: bytes) -> tuple[int, bytes]:
    """Send ``request`` byte for byte over a real socket (no client library to clean it up) to the test
    server and return the answer's status and body."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def digits_in(script_zero: int, number: int) -> str:
    """``number`` written with another script's digits (0x0660: Arabic-Indic, 0xFF10: full-width)."""
    return "".join(chr(script_zero + int(d)) for d in str(number))


@pytest.mark.parametrize(
    "spell",
    [
        lambda n: quote(digits_in(0x0660, n)),  # Arabic-Indic digits: int() reads them
        lambda n: quote(digits_in(0xFF10, n)),  # full-width digits
        lambda n: f"{str(n)[0]}_{str(n)[1:]}",  # an underscore between digits
        lambda n: f"%20{n}",  # leading space
        lambda n: f"{n}%20",  # trailing space
        lambda n: f"+{n}",
    ],
    ids=["arabic-indic", "full-width", "underscore", "leading-space", "trailing-space", "plus"],
)
async def test_path_ids_take_ascii_digits_only(
    api: TestClient[Any, Any], keyring: dict[str, str], campaign_id: int, spell: Callable[[int], str]
) -> None:
    write = auth(keyring["write"])
    assert (await api.put(f"/v1/campaigns/{campaign_id}", json={"name": "x"}, headers=write)).status == 200
    path = f"/v1/campaigns/{spell(campaign_id)}"
    request = f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {write['Authorization']}\r\n"
    status, body = await raw_request(api, (request + "Connection: close\r\n\r\n").encode())
    assert status == 400, (path, body)  # today: 200, campaign_id itself
    assert "campaign_id must be a whole number" in orjson.loads(body)["error"]


@pytest.mark.parametrize("query", ["limit=1_0", f"limit={quote(digits_in(0x0660, 10))}", "after=%205", "after=-0"])
async def test_query_integers_take_ascii_digits_only(
    api: TestClient[Any, Any], keyring: dict[str, str], campaign_id: int, query: str
) -> None:
    path = f"/v1/reports/campaigns/{campaign_id}/links/1/clickers?{query}"
    request = f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {keyring['read']}\r\nConnection: close\r\n\r\n"
    status, body = await raw_request(api, request.encode())
    assert status == 400, (query, body)
    assert "must be a whole number" in orjson.loads(body)["error"]


def test_whole_number_takes_ascii_digits_only() -> None:
    assert whole_number("0") == 0 and whole_number("0042") == 42 and whole_number("18446744073709551615") == 2**64 - 1
    for bad in ("", " 5", "5 ", "+5", "-5", "0_5", "\u0665", "\uff15", "5.0", "1e3", "\u00b2", "1" * 21, "5\n"):
        with pytest.raises(ValueError, match="digits 0-9"):
            whole_number(bad)


@pytest.mark.parametrize(
    "credentials",
    [b"ck_KEYID_\xff\xfe", b"ck_KEYID_ok\xc3\x28", b"ck_KEYID_\xed\xa0\x80", b"ck_\xff\xfe_x", b"\x80"],
    ids=["secret", "secret-bad-utf8", "secret-surrogate", "key-id", "lone-continuation"],
)
async def test_an_authorization_header_that_is_not_utf8_gets_401(
    api: TestClient[Any, Any], keyring: dict[str, str], campaign_id: int, credentials: bytes
) -> None:
    # A real key's id with a secret that is not UTF-8: the lookup finds the key, then compares secrets.
    credentials = credentials.replace(b"KEYID", keyring["write"].split("_")[1].encode())
    for method, path in (("GET", f"/v1/campaigns/{campaign_id}"), ("POST", "/v1/clicks")):
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n".encode()
            + b"Authorization: Bearer "
            + credentials
            + b"\r\n\r\n"
        )
        status, body = await raw_request(api, request)
        assert status == 401, (path, body)
        assert "error" in orjson.loads(body)


def test_one_bearer_parser() -> None:
    assert apikeys.bearer("Bearer abc") == b"abc"
    assert apikeys.bearer("bearer  abc ") == b"abc"
    assert apikeys.bearer("Bearer ck_\udcff") == b"ck_\xff"  # as the bytes were sent
    for header in ("", "Bearer", "Bearer ", "Basic abc", "Bearerabc", "abc"):
        assert apikeys.bearer(header) is None, header


async def test_webhook_urls_to_internal_addresses_or_with_credentials_are_refused_when_set(
    api: TestClient[Any, Any], keyring: dict[str, str], campaign_id: int
) -> None:
    write = auth(keyring["write"])
    await api.post(f"/v1/campaigns/{campaign_id}/rewrite", json={"html": MESSAGE}, headers=write)
    url = f"/v1/campaigns/{campaign_id}/links/1/actions"
    refused = {
        "http://127.0.0.1:8081/v1/clicks": "is loopback",
        "http://[::1]/": "is loopback",
        "http://169.254.169.254/latest/meta-data/": "is link-local",
        "http://10.0.0.5/hook": "is private",
        "http://[::ffff:192.168.0.1]/": "is private",
        "http://0.0.0.0:8081/": "is unspecified",
        "http://224.0.0.1/": "is multicast",
        "https://user:secret@hooks.example.com/in": "must not contain a user name or password",
        "https://token@hooks.example.com/in": "must not contain a user name or password",
    }
    for hook, problem in refused.items():
        resp = await api.put(url, json=[{"type": "webhook", "url": hook}], headers=write)
        assert resp.status == 400, hook
        error = (await resp.json())["error"]
        assert error.startswith("actions[0].url") and problem in error, error
        assert "secret" not in error
    # A name passes here: what it resolves to is checked each time a webhook is delivered.
    for hook in ("https://hooks.example.com/in", "http://localhost:9/hook"):
        resp = await api.put(url, json=[{"type": "webhook", "url": hook}], headers=write)
        assert resp.status == 200, hook
