"""The admin and report API: API-key authentication with read and write scopes, JSON (and CSV for long
lists), and a 4xx with a JSON body naming the problem for any bad request."""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from collector import apikeys, blocks, campaigns, contacts, endpoints, openapi, reports, sessions, status
from collector.actions import MAX_NAME, ActionError, validate
from collector.destinations import Network
from collector.openapi import FORMAT, Operation, document, integer
from collector.rewriter import RewriteBusy, Rewriter
from common.limits import MAX_CONTACT, MAX_ID
from common.settings import whole_number
from links.rewrite import RewriteError, base_url_problem

# The collector's one connection pool (ingest, probes, the admin API, webhooks); collector/app.py opens it.
POOL = web.AppKey("pool", asyncpg.Pool)
REWRITER = web.AppKey("rewriter", Rewriter)
WEBHOOK_ALLOW = web.AppKey("webhook_allow_networks", tuple[Network, ...])
WEBHOOK_MASTER = web.AppKey("webhook_master_secret", bytes)
PRINCIPAL = web.RequestKey("principal", apikeys.Principal)
MAX_PAGE = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("clickedge.collector.api")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def requiring(required: str, handler: Handler) -> Handler:
    """``handler`` behind an API key with ``required`` scope (``write`` includes ``read``)."""

    async def checked(request: web.Request) -> web.StreamResponse:
        token = apikeys.bearer(request.headers.get("Authorization", ""))
        principal = None
        if token is not None:
            async with request.app[POOL].acquire() as conn:
                principal = await apikeys.authenticate(conn, token)
        if principal is None:
            raise ApiError(401, "missing or unknown API key (Authorization: Bearer ck_...)")
        if not principal.allows(required):
            raise ApiError(403, f"this API key lacks the '{required}' scope")
        request[PRINCIPAL] = principal
        return await handler(request)

    return checked


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response({"error": exc.message}, exc.status)
    except ActionError as exc:
        return json_response({"error": str(exc)}, 400)
    except (campaigns.NotFound, endpoints.NotFound) as exc:
        return json_response({"error": str(exc)}, 404)
    except campaigns.Conflict as exc:
        return json_response({"error": str(exc)}, 409)
    except RewriteError as exc:
        return json_response({"error": str(exc)}, 400)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/v1/") and request.path != "/v1/clicks":
            return json_response({"error": exc.reason}, exc.status)
        raise
    except Exception:  # a request boundary: the client gets JSON, the log gets the traceback
        if not request.path.startswith("/v1/") or request.path == "/v1/clicks":
            raise
        log.exception("admin API request %s %s failed", request.method, request.path)
        return json_response({"error": "internal error; see the collector's log"}, 500)


def _int(request: web.Request, name: str, high: int, low: int = 0) -> int:
    """A path id or query integer: ASCII digits only, so each number has one spelling."""
    raw = request.match_info.get(name) or request.query.get(name) or ""
    try:
        value = whole_number(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number (digits 0-9 only), not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be from {low} to {high}")
    return value


def _query_int(request: web.Request, name: str, default: int, high: int, low: int = 0) -> int:
    return _int(request, name, high, low) if name in request.query else default


async def _body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def _object(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown fields: {', '.join(unknown)}")
    return body


async def put_campaign(request: web.Request) -> web.Response:
    campaign_id = _int(request, "campaign_id", MAX_ID)
    body = _object(
        await _body(request),
        {
            "name",
            "tracking",
            "recipients",
            "tracking_url",
            "count_everything",
            "decoy_link",
            "anonymous",
            "full_client_ips",
            "unsubscribe_list",
            "unsubscribe_webhook",
        },
    )
    name, tracking, recipients = body.get("name"), body.get("tracking"), body.get("recipients")
    tracking_url = body.get("tracking_url")
    if tracking_url is not None:
        tracking_url = _tracking_url(tracking_url)
    if name is not None and (not isinstance(name, str) or len(name) > 200 or "\x00" in name):
        raise ApiError(400, "name must be a string of at most 200 characters, without NUL")
    if tracking is not None and not isinstance(tracking, bool):
        raise ApiError(400, "tracking must be true or false")
    switches = ("count_everything", "decoy_link", "anonymous", "full_client_ips")
    for field in switches:
        if body.get(field) is not None and not isinstance(body[field], bool):
            raise ApiError(400, f"{field} must be true or false")
    if recipients is not None and (type(recipients) is not int or not 0 <= recipients <= MAX_CONTACT):
        raise ApiError(400, "recipients must be a whole number of at least 0")
    unsubscribe_list = body.get("unsubscribe_list")
    if unsubscribe_list is not None and (
        not isinstance(unsubscribe_list, str)
        or len(unsubscribe_list) > MAX_NAME
        or "\x00" in unsubscribe_list
        or (unsubscribe_list and not unsubscribe_list.strip())
    ):
        raise ApiError(400, f'unsubscribe_list must be a list name of at most {MAX_NAME} characters, or "" for none')
    unsubscribe_webhook = body.get("unsubscribe_webhook")
    if unsubscribe_webhook not in (None, ""):
        # The same checks as a webhook action's URL, the destination policy included.
        unsubscribe_webhook = _unsubscribe_webhook(unsubscribe_webhook, request.app[WEBHOOK_ALLOW])
    principal: apikeys.Principal = request[PRINCIPAL]
    async with request.app[POOL].acquire() as conn:
        campaign, made = await campaigns.upsert_campaign(
            conn,
            campaign_id,
            name=name,
            tracking=tracking,
            recipients=recipients,
            tracking_url=tracking_url,
            unsubscribe_list=unsubscribe_list,
            unsubscribe_webhook=unsubscribe_webhook,
            **{field: body.get(field) for field in switches},
        )
    for endpoint in made:
        log.info("webhook endpoint %d made by api:%s:%s", endpoint.id, principal.key_id, principal.name)
    if made:  # its signing secret, shown this once (GET /v1/webhooks lists endpoints without)
        campaign["new_webhook_endpoints"] = [e.with_secret(request.app[WEBHOOK_MASTER]) for e in made]
    return json_response(campaign)


def _unsubscribe_webhook(value: object, allow: tuple[Network, ...]) -> str:
    try:
        [checked] = validate([{"type": "webhook", "url": value}], allow)
    except ActionError as exc:
        raise ApiError(400, "unsubscribe_webhook" + str(exc).removeprefix("actions[0].url")) from None
    return checked["url"]


def _tracking_url(value: object) -> str:
    """A campaign's link base URL (a sender's tracking domain); "" goes back to CLICKEDGE_PUBLIC_URL."""
    if value == "":
        return ""
    problem = base_url_problem(value)
    if problem is not None:
        raise ApiError(400, f"tracking_url {problem}")
    assert isinstance(value, str)
    return value.rstrip("/")


async def get_campaign(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return json_response(await campaigns.get_campaign(conn, _int(request, "campaign_id", MAX_ID)))


async def rewrite(request: web.Request) -> web.Response:
    campaign_id = _int(request, "campaign_id", MAX_ID)
    body = _object(await _body(request), {"html", "text", "contact_id", "sent_at"})
    html, text, contact, sent_at = body.get("html"), body.get("text"), body.get("contact_id"), body.get("sent_at")
    if not isinstance(html, str):
        raise ApiError(400, "html must be a string (the message's HTML part)")
    if "\x00" in html or (isinstance(text, str) and "\x00" in text):
        raise ApiError(400, "the message must not contain NUL characters")
    if text is not None and not isinstance(text, str):
        raise ApiError(400, "text must be a string (the message's plain-text part) or absent")
    if contact is not None and (type(contact) is not int or not 1 <= contact <= MAX_CONTACT):
        raise ApiError(400, f"contact_id must be a whole number from 1 to {MAX_CONTACT}, or absent (anonymous)")
    if sent_at is None:
        sent_at = int(time.time())
    elif type(sent_at) is not int or not 0 <= sent_at <= MAX_ID:
        raise ApiError(400, "sent_at must be Unix seconds")
    try:
        result = await request.app[REWRITER].rewrite(request.app[POOL], campaign_id, html, text, contact, sent_at)
    except RewriteBusy as exc:
        raise ApiError(503, str(exc)) from None
    return json_response(result)


async def get_links(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return json_response({"links": await campaigns.list_links(conn, _int(request, "campaign_id", MAX_ID))})


async def put_actions(request: web.Request) -> web.Response:
    campaign_id, link_id = _int(request, "campaign_id", MAX_ID), _int(request, "link_id", MAX_ID)
    body = await _body(request)
    principal: apikeys.Principal = request[PRINCIPAL]
    actor = f"api:{principal.key_id}:{principal.name}"
    async with request.app[POOL].acquire() as conn:
        stored, made = await campaigns.set_actions(
            conn,
            campaign_id,
            link_id,
            body,
            actor,
            allow_networks=request.app[WEBHOOK_ALLOW],
            on=request.query.get("on"),
        )
        on = await campaigns.actions_on(conn, campaign_id, link_id)
    for endpoint in made:
        log.info("webhook endpoint %d made by %s", endpoint.id, actor)
    # The secrets of endpoints made now, shown this once (GET /v1/webhooks lists endpoints without).
    master = request.app[WEBHOOK_MASTER]
    return json_response({"actions": stored, "on": on, "new_webhook_endpoints": [e.with_secret(master) for e in made]})


async def link_webhooks(request: web.Request) -> web.Response:
    campaign_id, link_id = _int(request, "campaign_id", MAX_ID), _int(request, "link_id", MAX_ID)
    after, limit = _query_int(request, "after", 0, MAX_CONTACT), _query_int(request, "limit", 100, MAX_PAGE, 1)
    async with request.app[POOL].acquire() as conn:
        page, next_after = await endpoints.deliveries(conn, campaign_id, link_id, after=after, limit=limit)
    return json_response({"deliveries": page, "next_after": next_after})


async def list_webhooks(request: web.Request) -> web.Response:
    after, limit = _query_int(request, "after", 0, MAX_CONTACT), _query_int(request, "limit", 100, MAX_PAGE, 1)
    async with request.app[POOL].acquire() as conn:
        page, next_after = await endpoints.listing(conn, after=after, limit=limit)
    return json_response({"endpoints": [e.public() for e in page], "next_after": next_after})


async def rotate_webhook(request: web.Request) -> web.Response:
    endpoint_id = _int(request, "endpoint_id", MAX_CONTACT, 1)
    principal: apikeys.Principal = request[PRINCIPAL]
    async with request.app[POOL].acquire() as conn:
        endpoint = await endpoints.rotate(conn, endpoint_id)
    log.info(
        "webhook endpoint %d rotated to generation %d by api:%s", endpoint.id, endpoint.generation, principal.key_id
    )
    return json_response(endpoint.with_secret(request.app[WEBHOOK_MASTER]))


async def get_audit(request: web.Request) -> web.Response:
    campaign_id, link_id = _int(request, "campaign_id", MAX_ID), _int(request, "link_id", MAX_ID)
    async with request.app[POOL].acquire() as conn:
        return json_response({"changes": await campaigns.action_audit(conn, campaign_id, link_id)})


async def campaign_report(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return json_response(await reports.campaign(conn, _int(request, "campaign_id", MAX_ID)))


async def campaign_list(request: web.Request) -> web.Response:
    sort = request.query.get("sort", "id")
    if sort not in reports.CAMPAIGN_SORTS:
        raise ApiError(400, f"sort must be one of {', '.join(reports.CAMPAIGN_SORTS)}")
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be asc or desc")
    limit, offset = _query_int(request, "limit", 50, MAX_PAGE, 1), _query_int(request, "offset", 0, MAX_CONTACT)
    async with request.app[POOL].acquire() as conn:
        return json_response(
            await reports.campaigns(conn, sort=sort, descending=order == "desc", limit=limit, offset=offset)
        )


async def status_report(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return json_response(await status.status(conn))


async def list_sessions(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return json_response({"sessions": await sessions.listing(conn)})


async def revoke_session(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    async with request.app[POOL].acquire() as conn:
        if not await sessions.revoke(conn, session_id, _actor(request)):
            raise ApiError(404, f"session {session_id[:16]!r} is not signed in")
    log.warning("report pages: session %s revoked by %s", session_id, _actor(request))
    return json_response({"revoked": session_id})


async def link_clickers(request: web.Request) -> web.StreamResponse:
    campaign_id, link_id = _int(request, "campaign_id", MAX_ID), _int(request, "link_id", MAX_ID)
    after = _query_int(request, "after", 0, MAX_CONTACT)
    if _wants_csv(request):
        return await _stream_csv(
            request,
            ["contact_id", "first_click", "last_click", "clicks", "verdict", "verdict_reasons"],
            _all_clickers(request.app[POOL], campaign_id, link_id, after),
            f"campaign-{campaign_id}-link-{link_id}-clickers.csv",
        )
    limit = _query_int(request, "limit", 100, MAX_PAGE, 1)
    async with request.app[POOL].acquire() as conn:
        return json_response(await reports.link_clickers(conn, campaign_id, link_id, after=after, limit=limit))


async def campaign_unsubscribes(request: web.Request) -> web.Response:
    campaign_id = _int(request, "campaign_id", MAX_ID)
    after = _query_int(request, "after", 0, MAX_CONTACT)
    limit = _query_int(request, "limit", 100, MAX_PAGE, 1)
    async with request.app[POOL].acquire() as conn:
        return json_response(await reports.unsubscribes(conn, campaign_id, after=after, limit=limit))


async def _all_clickers(pool: asyncpg.Pool, campaign_id: int, link_id: int, after: int) -> Any:
    while True:
        async with pool.acquire() as conn:
            page = await reports.link_clickers(conn, campaign_id, link_id, after=after, limit=MAX_PAGE)
        for item in page["clickers"]:
            yield [
                item["contact_id"],
                item["first_click"],
                item["last_click"],
                item["clicks"],
                item["verdict"],
                " ".join(item["verdict_reasons"]),
            ]
        if page["next_after"] is None:
            return
        after = page["next_after"]


async def list_blocks(request: web.Request) -> web.Response:
    lifted = request.query.get("lifted", "false")
    if lifted not in ("true", "false"):
        raise ApiError(400, "lifted must be true or false")
    async with request.app[POOL].acquire() as conn:
        return json_response({"blocks": await blocks.list_blocks(conn, lifted=lifted == "true")})


async def make_block(request: web.Request) -> web.Response:
    body = _object(await _body(request), {"campaign_id", "link_id", "destination_host", "reason"})
    actor = _actor(request)
    try:
        target = blocks.Target.parse(body.get("campaign_id"), body.get("link_id"), body.get("destination_host"))
        async with request.app[POOL].acquire() as conn:
            made, new = await blocks.block(conn, target, body.get("reason"), actor)
    except blocks.BlockError as exc:
        raise ApiError(400, str(exc)) from None
    if new:
        log.warning("%s blocked by %s: %s", target.describe(), actor, made["reason"])
    return json_response(made, 201 if new else 200)


async def lift_block(request: web.Request) -> web.Response:
    block_id = _int(request, "block_id", MAX_CONTACT, 1)
    actor = _actor(request)
    async with request.app[POOL].acquire() as conn:
        lifted = await blocks.lift(conn, block_id, actor)
    if lifted is None:
        raise ApiError(404, f"block {block_id} does not exist or is lifted already")
    log.warning("block %d lifted by %s", block_id, actor)
    return json_response(lifted)


def _actor(request: web.Request) -> str:
    principal: apikeys.Principal = request[PRINCIPAL]
    return f"api:{principal.key_id}:{principal.name}"


async def export_contact(request: web.Request) -> web.Response:
    contact_id = _int(request, "contact_id", MAX_CONTACT, 1)
    key = contacts.tombstone_key(request.app[WEBHOOK_MASTER])
    async with request.app[POOL].acquire() as conn:
        return json_response(await contacts.export(conn, key, contact_id))


async def erase_contact(request: web.Request) -> web.Response:
    contact_id = _int(request, "contact_id", MAX_CONTACT, 1)
    principal: apikeys.Principal = request[PRINCIPAL]
    actor = f"api:{principal.key_id}:{principal.name}"
    key = contacts.tombstone_key(request.app[WEBHOOK_MASTER])
    async with request.app[POOL].acquire() as conn:
        erased = await contacts.erase(conn, key, contact_id, actor)
    # The id stays out of the log as it does out of the audit row.
    log.info("a contact was erased by %s: %s", actor, erased.removed)
    return json_response(erased.as_json())


_NO_LINK = {"id": "", "name": "", "destination": ""}


async def timeline(request: web.Request) -> web.StreamResponse:
    contact_id = _int(request, "contact_id", MAX_CONTACT, 1)
    pool = request.app[POOL]
    if _wants_csv(request):

        async def rows() -> Any:
            offset = 0
            while True:
                async with pool.acquire() as conn:
                    events = await reports.contact_timeline(conn, contact_id, limit=MAX_PAGE, offset=offset)
                for e in events:
                    detail = e.get("method") or orjson.dumps(e.get("action")).decode()
                    link = e["link"] or _NO_LINK  # an unsubscribe has none
                    yield [
                        e["at"],
                        e["kind"],
                        e["campaign"]["id"],
                        e["campaign"]["name"],
                        link["id"],
                        link["name"],
                        link["destination"] or "",
                        detail,
                        e.get("verdict") or "",
                        " ".join(e.get("verdict_reasons") or ()),
                    ]
                if len(events) < MAX_PAGE:
                    return
                offset += MAX_PAGE

        header = [
            "at",
            "kind",
            "campaign_id",
            "campaign",
            "link_id",
            "link",
            "destination",
            "detail",
            "verdict",
            "verdict_reasons",
        ]
        return await _stream_csv(request, header, rows(), f"contact-{contact_id}-timeline.csv")
    limit = _query_int(request, "limit", MAX_PAGE, MAX_PAGE, 1)
    offset = _query_int(request, "offset", 0, MAX_CONTACT)
    async with pool.acquire() as conn:
        events = await reports.contact_timeline(conn, contact_id, limit=limit, offset=offset)
    next_offset = offset + limit if len(events) == limit else None
    return json_response({"contact_id": contact_id, "events": events, "next_offset": next_offset})


def _wants_csv(request: web.Request) -> bool:
    return request.query.get("format") == "csv" or "text/csv" in request.headers.get("Accept", "")


async def _stream_csv(request: web.Request, header: list[str], rows: Any, filename: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv; charset=utf-8", "Content-Disposition": f'attachment; filename="{filename}"'}
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    async for row in rows:
        writer.writerow([_csv_cell(cell) for cell in row])
        if buffer.tell() > 64 * 1024:
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
    await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


def _csv_cell(cell: Any) -> Any:
    """Neutralise spreadsheet formulas (CSV injection): names and URLs come from senders' messages."""
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + cell
    return cell


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document(ROUTES, PATH_IDS))


@dataclass(frozen=True, slots=True)
class Route:
    """One route of the API, declared once: the router serves it, behind ``scope`` (an API key scope, or
    None for no key), and the OpenAPI document describes it from ``doc`` (None: left out of it)."""

    method: str
    path: str
    handler: Handler
    scope: str | None
    doc: Operation | None = None


# The largest value of each id in a path, as the OpenAPI document states it.
PATH_IDS = {
    "campaign_id": MAX_ID,
    "link_id": MAX_ID,
    "contact_id": MAX_CONTACT,
    "endpoint_id": MAX_CONTACT,
    "block_id": MAX_CONTACT,
}
AFTER, LIMIT, OFFSET = integer("after", MAX_CONTACT), integer("limit", MAX_PAGE), integer("offset", MAX_CONTACT)
SORT = {"name": "sort", "in": "query", "schema": {"enum": list(reports.CAMPAIGN_SORTS)}}
CAMPAIGN_PATH = "/v1/campaigns/{campaign_id}"
LINK_PATH = CAMPAIGN_PATH + "/links/{link_id}"

ROUTES: tuple[Route, ...] = (
    Route(
        "PUT",
        CAMPAIGN_PATH,
        put_campaign,
        "write",
        Operation("Create or change a campaign", body=openapi.CAMPAIGN),
    ),
    Route("GET", CAMPAIGN_PATH, get_campaign, "read", Operation("A campaign")),
    Route(
        "POST",
        CAMPAIGN_PATH + "/rewrite",
        rewrite,
        "write",
        Operation(
            "Rewrite one recipient's message; registers the campaign's links and the recipient",
            body=openapi.MESSAGE,
            busy=True,
        ),
    ),
    Route("GET", CAMPAIGN_PATH + "/links", get_links, "read", Operation("The campaign's link placements")),
    Route(
        "PUT",
        LINK_PATH + "/actions",
        put_actions,
        "write",
        Operation(
            "Replace a link's actions (audited). A webhook URL named for the first time becomes a "
            "webhook endpoint; new_webhook_endpoints carries their signing secrets, shown this once",
            response=openapi.ACTIONS_SET,
            body=openapi.ACTIONS,
            query=(openapi.ACTIONS_ON,),
        ),
    ),
    Route(
        "GET",
        LINK_PATH + "/actions/audit",
        get_audit,
        "read",
        Operation("Every change of a link's actions: who, when, before, after"),
    ),
    Route(
        "GET",
        LINK_PATH + "/webhooks",
        link_webhooks,
        "read",
        Operation(
            "The link's webhook deliveries, oldest first: state (pending, delivered, failed), attempts, "
            "last error, next attempt; paged by delivery id",
            query=(AFTER, LIMIT),
            response=openapi.DELIVERIES,
        ),
    ),
    Route(
        "GET",
        "/v1/webhooks",
        list_webhooks,
        "read",
        Operation(
            "Webhook endpoints (every URL webhooks go to), without their secrets; paged by id",
            query=(AFTER, LIMIT),
            response=openapi.ENDPOINTS,
        ),
    ),
    Route(
        "POST",
        "/v1/webhooks/{endpoint_id}/rotate",
        rotate_webhook,
        "write",
        Operation(
            "Give a webhook endpoint a new signing secret, shown this once; the old one stops at once",
            response=openapi.ENDPOINT_WITH_SECRET,
        ),
    ),
    Route(
        "GET",
        "/v1/reports/campaigns/{campaign_id}",
        campaign_report,
        "read",
        Operation(
            "Campaign report: recipients, clicks, unique clicks and clickers, click-through rate, "
            "per link, per URL, hourly; one-click unsubscribes"
        ),
    ),
    Route(
        "GET",
        "/v1/reports/campaigns",
        campaign_list,
        "read",
        Operation(
            "Every campaign: recipients, people who clicked, click-through rate, people's and machines' clicks, "
            "last click by a person; sorted (sort: id, name, recipients, clickers, ctr, clicks, machines, "
            "last_click; order: asc, desc) and paged",
            query=(SORT, openapi.ORDER, LIMIT, OFFSET),
        ),
    ),
    Route(
        "GET",
        "/v1/status",
        status_report,
        "read",
        Operation(
            "Each edge's shipping (last batch, ingest lag, batches refused), clicks refused for their time, "
            "webhook deliveries pending and failing"
        ),
    ),
    Route(
        "GET",
        "/v1/ui/sessions",
        list_sessions,
        "write",
        Operation("The report pages' live sessions: who signed in, with which key and scope, from which browser"),
    ),
    Route(
        "DELETE",
        "/v1/ui/sessions/{session_id}",
        revoke_session,
        "write",
        Operation("Sign a report pages' session out"),
    ),
    Route(
        "GET",
        "/v1/reports/campaigns/{campaign_id}/unsubscribes",
        campaign_unsubscribes,
        "read",
        Operation(
            "Who unsubscribed with the campaign's messages (one-click): contact, when, list; paged by contact id",
            query=(AFTER, LIMIT),
        ),
    ),
    Route(
        "GET",
        "/v1/reports/campaigns/{campaign_id}/links/{link_id}/clickers",
        link_clickers,
        "read",
        Operation(
            "Who clicked a link: contact, first and last click, count; paged by contact id",
            query=(AFTER, LIMIT, FORMAT),
            csv=True,
        ),
    ),
    Route(
        "GET",
        "/v1/reports/contacts/{contact_id}/timeline",
        timeline,
        "read",
        Operation(
            "A contact's clicks, applied actions and one-click unsubscribes, in order",
            query=(LIMIT, OFFSET, FORMAT),
            csv=True,
        ),
    ),
    Route(
        "GET",
        "/v1/contacts/{contact_id}/export",
        export_contact,
        "read",
        Operation("Everything stored about a contact, table by table, and whether they were erased"),
    ),
    Route(
        "DELETE",
        "/v1/contacts/{contact_id}",
        erase_contact,
        "write",
        Operation(
            "Erase everything stored about a contact and keep their later clicks anonymous (docs/privacy.md); audited"
        ),
    ),
    Route("GET", "/v1/blocks", list_blocks, "read", Operation("The active blocks (?lifted=true: lifted ones too)")),
    Route(
        "POST",
        "/v1/blocks",
        make_block,
        "write",
        Operation(
            "Block a campaign, a campaign's link or a destination host on every edge within seconds "
            "(the kill switch): its links answer 410; audited",
            body=openapi.BLOCK,
        ),
    ),
    Route("DELETE", "/v1/blocks/{block_id}", lift_block, "write", Operation("Lift a block; audited (who and when)")),
    Route("GET", "/openapi.json", openapi_json, None),  # the document does not describe itself
)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        handler = route.handler if route.scope is None else requiring(route.scope, route.handler)
        app.router.add_route(route.method, route.path, handler)
