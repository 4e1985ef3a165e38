"""The report pages, served by the collector under /ui/ from the data the admin API reads (collector/reports.py,
collector/status.py): server-rendered HTML, an inline SVG chart, one stylesheet from the package, and no script.

Safe by construction:
- Jinja2 escapes every value (campaign and link names, URLs, user agents, tags, reasons are data, never markup);
  the chart escapes its own text (collector/ui/chart.py).
- The Content-Security-Policy allows no script at all, styles and images only from the collector, forms only
  to it, and no framing; nothing is loaded from anywhere else.
- A session cookie (HttpOnly, SameSite=Strict, Secure over TLS) stands for the API key it was signed in with;
  every form that changes something carries the session's form token and is refused from another origin.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib.resources import files
from typing import Any
from urllib.parse import quote

import jinja2
import orjson
from aiohttp import web
from markupsafe import Markup

from collector import apikeys, blocks, campaigns, reports, sessions, status
from collector.actions import ActionError
from collector.api import POOL, WEBHOOK_ALLOW
from collector.ui import chart
from common.limits import MAX_CONTACT, MAX_ID
from common.settings import whole_number

log = logging.getLogger("clickedge.collector.ui")

SESSION = web.RequestKey("ui_session", sessions.Session)
PAGE_SIZE = 50
CLICKERS_PAGE = 100
TIMELINE_PAGE = 200
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NONE = "\u2013"  # an en dash: no value (a rate of no recipients)


class PageError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("collector.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda n: NONE if n is None else f"{n:,}"
    env.filters["pct"] = lambda r: NONE if r is None else f"{r * 100:.1f} %"
    env.filters["when"] = _when
    env.filters["action"] = _action
    return env


def _when(iso: str | None, seconds: bool = False) -> str:
    if not iso:
        return ""
    at = datetime.fromisoformat(iso)
    return at.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC"


def _action(action: dict[str, Any]) -> str:
    detail = ", ".join(f"{v}" for k, v in action.items() if k != "type")
    return f"{action.get('type', '?')}: {detail}" if detail else str(action.get("type", "?"))


ENV = _environment()
STATIC = files("collector.ui") / "static"


def render(request: web.Request, template: str, code: int = 200, **context: Any) -> web.Response:
    context.setdefault("session", request.get(SESSION))
    context.setdefault("notice", request.query.get("done", "")[:200] if "done" in request.query else None)
    context.setdefault("problem", None)
    context.setdefault("nav", None)
    html = ENV.get_template(template).render(**context)
    return web.Response(status=code, text=html, content_type="text/html", charset="utf-8")


@web.middleware
async def pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The pages' headers on every answer, signing in where a page needs it, and errors as pages."""
    if request.path == "/ui":  # the sub-application's own root, which it cannot route
        raise web.HTTPMovedPermanently("/ui/", headers=HEADERS)
    try:
        response = await handler(request)
    except PageError as exc:
        response = render(request, "message.html", exc.status, title=exc.title, message=exc.message, back=None)
    except campaigns.NotFound as exc:
        response = render(request, "message.html", 404, title="Not found", message=str(exc), back=None)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(HEADERS)
            raise
        response = render(request, "message.html", exc.status, title=exc.reason, message=exc.text or "", back=None)
    except Exception:  # a request boundary: the page says so, the log has the traceback
        log.exception("report page %s %s failed", request.method, request.path)
        message = "Something went wrong; the collector's log has the details."
        response = render(request, "message.html", 500, title="Error", message=message, back=None)
    response.headers.update(HEADERS)
    return response


def _secure(request: web.Request) -> bool:
    # Behind a proxy that ends TLS the scheme arrives as X-Forwarded-Proto; believing a forged "https" only
    # makes the cookie stricter.
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _set_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    response.set_cookie(
        sessions.COOKIE,
        value,
        path="/ui",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=int(sessions.SESSION_TTL.total_seconds()),
    )


def _same_origin(request: web.Request) -> bool:
    """A POST from the pages themselves. Browsers say where a request came from in Sec-Fetch-Site; one that
    does not send it is judged by Origin (absent from clients that are not browsers). The pages' no-referrer
    policy makes a browser send ``Origin: null`` on their own forms, so Sec-Fetch-Site comes first."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is None or origin in (f"{request.scheme}://{request.host}", f"https://{request.host}")


def signed_in(required: str, handler: Handler) -> Handler:
    """``handler`` behind a session with ``required`` scope; a POST also needs the session's form token."""

    async def checked(request: web.Request) -> web.StreamResponse:
        async with request.config_dict[POOL].acquire() as conn:
            session = await sessions.resume(conn, request.cookies.get(sessions.COOKIE))
        if session is None:
            if request.method != "GET":
                raise PageError(401, "Signed out", "Your session has ended: sign in again, then repeat the change.")
            raise web.HTTPSeeOther(f"/ui/login?next={quote(request.path_qs, safe='/')}")
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            if not _same_origin(request) or not sessions.form_token_ok(session, _field(form, "csrf")):
                raise PageError(403, "Refused", "This form did not come from these pages (a cross-site request).")
        if not session.allows(required):
            raise PageError(403, "Read only", f"Signed in with read scope: changing things needs a key with {required}")
        return await handler(request)

    return checked


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _id(request: web.Request, name: str, high: int, low: int = 0) -> int:
    raw = request.match_info.get(name) or request.query.get(name) or ""
    try:
        value = whole_number(raw)
    except ValueError:
        raise PageError(400, "Bad address", f"{name} must be a whole number, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise PageError(400, "Bad address", f"{name} must be from {low} to {high}")
    return value


def _query_id(request: web.Request, name: str, high: int) -> int:
    return _id(request, name, high) if request.query.get(name) else 0


def _actor(request: web.Request) -> str:
    session = request[SESSION]
    return f"ui:{session.session_id}:{session.name}"


def _back(path: str, done: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?done={quote(done)}")


# Signing in and out.


async def login_page(request: web.Request) -> web.StreamResponse:
    token = request.query.get("token")
    if token is not None:
        async with request.config_dict[POOL].acquire() as conn:
            spent = await sessions.spend_sign_in(conn, token, request.headers.get("User-Agent", ""))
        if spent is None:
            problem = "That sign-in URL is spent or expired: run clickedge login-url for a new one, or use a key."
            return render(request, "login.html", 401, title="Sign in", next=sessions.HOME, problem=problem)
        cookie, landing = spent
        response = web.HTTPSeeOther(landing)
        _set_cookie(request, response, cookie)
        raise response
    landing = sessions.safe_next(request.query.get("next"))
    return render(request, "login.html", title="Sign in", next=landing)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    landing = sessions.safe_next(_field(form, "next"))
    if not _same_origin(request):
        raise PageError(403, "Refused", "Sign in from these pages (the request came from another site).")
    key = (_field(form, "key") or "").strip().encode("utf-8", "surrogateescape")
    async with request.config_dict[POOL].acquire() as conn:
        principal = await apikeys.authenticate(conn, key)
        if principal is None:
            problem = "That is not an active API key (ck_...)."
            return render(request, "login.html", 401, title="Sign in", next=landing, problem=problem)
        cookie = await sessions.sign_in_with_key(
            conn, principal.key_id, principal.name, principal.scopes, request.headers.get("User-Agent", "")
        )
    log.info("report pages: signed in with API key %s (%s)", principal.key_id, principal.name)
    response = web.HTTPSeeOther(landing)
    _set_cookie(request, response, cookie)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    async with request.config_dict[POOL].acquire() as conn:
        await sessions.revoke(conn, request[SESSION].session_id, "signed out")
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie(sessions.COOKIE, path="/ui")
    raise response


# Pages.


async def campaign_list(request: web.Request) -> web.Response:
    sort = request.query.get("sort", "id")
    if sort not in reports.CAMPAIGN_SORTS:
        raise PageError(400, "Bad address", f"sort must be one of {', '.join(reports.CAMPAIGN_SORTS)}")
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise PageError(400, "Bad address", "order must be asc or desc")
    page = _id(request, "page", 1_000_000, 1) if request.query.get("page") else 1
    async with request.config_dict[POOL].acquire() as conn:
        listing = await reports.campaigns(
            conn, sort=sort, descending=order == "desc", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
    pages = max(1, math.ceil(listing["total"] / PAGE_SIZE))
    return render(
        request,
        "campaigns.html",
        title="Campaigns",
        nav="campaigns",
        listing=listing,
        sort=sort,
        descending=order == "desc",
        page=page,
        pages=pages,
    )


async def campaign_page(request: web.Request) -> web.Response:
    campaign_id = _id(request, "campaign_id", MAX_ID)
    async with request.config_dict[POOL].acquire() as conn:
        try:
            report = await reports.campaign(conn, campaign_id)
        except campaigns.NotFound as exc:
            raise PageError(404, "No such campaign", str(exc)) from None
        links = await campaigns.list_links(conn, campaign_id)
        unsubscribed = await reports.unsubscribes(conn, campaign_id, limit=20)
        active = await blocks.campaign_blocks(conn, campaign_id)
    series = chart.bucket(chart.from_report(report["hourly"]))
    name = report["campaign"]["name"] or f"campaign {campaign_id}"
    recipients = report["recipients"]
    return render(
        request,
        "campaign.html",
        title=name,
        nav="campaigns",
        report=report,
        actions={link["id"]: link["actions"] for link in links},
        unsubscribes=unsubscribed,
        campaign_block=next((b for b in active if b["link_id"] is None), None),
        blocked_links={b["link_id"] for b in active if b["link_id"] is not None},
        chart_svg=Markup(chart.render(series, id_prefix="clicks", title=f"Clicks over time: {name}")),  # noqa: S704 - escaped by chart
        chart_description=chart.describe(series),
        chart_rows=chart.table(series),
        chart_unit=series.unit,
        rate=lambda unique: round(unique / recipients, 6) if recipients else None,
    )


async def link_page(request: web.Request) -> web.Response:
    campaign_id, link_id = _id(request, "campaign_id", MAX_ID), _id(request, "link_id", MAX_ID)
    after = _query_id(request, "after", MAX_CONTACT)
    async with request.config_dict[POOL].acquire() as conn:
        context = await _link(conn, campaign_id, link_id)
        clickers = await reports.link_clickers(conn, campaign_id, link_id, after=after, limit=CLICKERS_PAGE)
        audit = await campaigns.action_audit(conn, campaign_id, link_id)
    link = context["link"]
    return render(
        request,
        "link.html",
        title=f"{link['name'] or 'link ' + str(link_id)} · {context['campaign']['name'] or campaign_id}",
        nav="campaigns",
        clickers=clickers,
        after=after,
        audit=audit[-10:][::-1],
        actions_json=orjson.dumps(link["actions"], option=orjson.OPT_INDENT_2).decode(),
        **context,
    )


async def _link(conn: Any, campaign_id: int, link_id: int) -> dict[str, Any]:
    """The link with its campaign, counters and block, or a 404 page."""
    try:
        report = await reports.campaign(conn, campaign_id)
    except campaigns.NotFound:
        report = None
    link = next((x for x in await campaigns.list_links(conn, campaign_id) if x["id"] == link_id), None)
    counts = next((x for x in (report or {"links": []})["links"] if x["id"] == link_id), None)
    if report is None or (link is None and counts is None):
        raise PageError(404, "No such link", f"campaign {campaign_id} has no link {link_id}")
    if link is None:  # clicked, never registered (a link minted by hand): its counts, and no actions to set
        link = {"id": link_id, "name": "", "destination": None, "actions": [], "actions_on": "human"}
    counts = counts or {"clicks": 0, "unique_clicks": 0, "automated": {"scanner": 0, "preview": 0, "script": 0}}
    active = await blocks.campaign_blocks(conn, campaign_id)
    return {
        "campaign": report["campaign"],
        "link": link,
        "registered": link["destination"] is not None,
        "counts": counts,
        "link_block": next((b for b in active if b["link_id"] == link_id), None),
    }


async def clickers_csv(request: web.Request) -> web.Response:
    """Exactly the rows the link page shows for the same ``after``."""
    campaign_id, link_id = _id(request, "campaign_id", MAX_ID), _id(request, "link_id", MAX_ID)
    after = _query_id(request, "after", MAX_CONTACT)
    async with request.config_dict[POOL].acquire() as conn:
        page = await reports.link_clickers(conn, campaign_id, link_id, after=after, limit=CLICKERS_PAGE)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["contact_id", "first_click", "last_click", "clicks", "verdict", "verdict_reasons"])
    for c in page["clickers"]:
        writer.writerow(
            [
                c["contact_id"],
                c["first_click"],
                c["last_click"],
                c["clicks"],
                c["verdict"],
                " ".join(c["verdict_reasons"]),
            ]
        )
    name = f"campaign-{campaign_id}-link-{link_id}-clickers" + (f"-after-{after}" if after else "") + ".csv"
    return web.Response(
        text=buffer.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def contact_page(request: web.Request) -> web.Response:
    contact_id = _id(request, "contact_id", MAX_CONTACT, 1)
    offset = _query_id(request, "offset", MAX_CONTACT)
    async with request.config_dict[POOL].acquire() as conn:
        events = await reports.contact_timeline(conn, contact_id, limit=TIMELINE_PAGE, offset=offset)
    return render(
        request,
        "contact.html",
        title=f"Contact {contact_id}",
        contact_id=contact_id,
        events=events,
        offset=offset,
        limit=TIMELINE_PAGE,
        next_offset=offset + TIMELINE_PAGE if len(events) == TIMELINE_PAGE else None,
    )


async def find_contact(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"/ui/contacts/{_id(request, 'id', MAX_CONTACT, 1)}")


async def status_page(request: web.Request) -> web.Response:
    async with request.config_dict[POOL].acquire() as conn:
        state = await status.status(conn)
    return render(
        request,
        "status.html",
        title="Status",
        nav="status",
        state=state,
        dead_edges=[e for e in state["edges"] if e["rejected_batches"]],
    )


async def sessions_page(request: web.Request) -> web.Response:
    async with request.config_dict[POOL].acquire() as conn:
        live = await sessions.listing(conn)
    return render(request, "sessions.html", title="Sessions", nav="sessions", sessions=live)


# Changes (write scope, form token checked by signed_in).


async def revoke_session(request: web.Request) -> web.StreamResponse:
    session_id = request.match_info["session_id"]
    async with request.config_dict[POOL].acquire() as conn:
        revoked = await sessions.revoke(conn, session_id, _actor(request))
    if not revoked:
        raise PageError(404, "No such session", f"session {session_id[:16]} is not signed in")
    log.warning("report pages: session %s revoked by %s", session_id, _actor(request))
    raise _back("/ui/sessions", f"Session {session_id} revoked.")


async def set_tracking(request: web.Request) -> web.StreamResponse:
    campaign_id = _id(request, "campaign_id", MAX_ID)
    value = _field(await request.post(), "tracking")
    if value not in ("on", "off"):
        raise PageError(400, "Bad form", "tracking must be on or off")
    async with request.config_dict[POOL].acquire() as conn:
        await campaigns.get_campaign(conn, campaign_id)  # 404 for a campaign never registered
        await campaigns.upsert_campaign(conn, campaign_id, tracking=value == "on")
    log.info("campaign %d tracking %s by %s", campaign_id, value, _actor(request))
    raise _back(f"/ui/campaigns/{campaign_id}", f"Tracking is {value}.")


async def set_actions(request: web.Request) -> web.StreamResponse:
    campaign_id, link_id = _id(request, "campaign_id", MAX_ID), _id(request, "link_id", MAX_ID)
    form = await request.post()
    raw, on = _field(form, "actions") or "", _field(form, "on")
    path = f"/ui/campaigns/{campaign_id}/links/{link_id}"
    try:
        wanted = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PageError(400, "Actions not saved", f"the actions are not valid JSON: {exc}") from None
    try:
        async with request.config_dict[POOL].acquire() as conn:
            _, made = await campaigns.set_actions(
                conn,
                campaign_id,
                link_id,
                wanted,
                _actor(request),
                allow_networks=request.config_dict[WEBHOOK_ALLOW],
                on=on,
            )
    except ActionError as exc:
        raise PageError(400, "Actions not saved", str(exc)) from None
    except campaigns.NotFound as exc:
        raise PageError(404, "No such link", str(exc)) from None
    for endpoint in made:
        log.info("webhook endpoint %d made by %s", endpoint.id, _actor(request))
    done = "Actions saved."
    if made:
        done += " New webhook endpoints get their signing secrets from clickedge webhooks rotate ID."
    raise _back(path, done)


async def block_target(request: web.Request) -> web.StreamResponse:
    campaign_id = _id(request, "campaign_id", MAX_ID)
    link_id = _id(request, "link_id", MAX_ID) if "link_id" in request.match_info else None
    path = f"/ui/campaigns/{campaign_id}" + (f"/links/{link_id}" if link_id is not None else "")
    target = blocks.Target(campaign_id, link_id)
    form = await request.post()
    try:
        async with request.config_dict[POOL].acquire() as conn:
            if request.path.endswith("/unblock"):
                await blocks.unblock(conn, target, _actor(request))
                log.warning("%s unblocked by %s", target.describe(), _actor(request))
                raise _back(path, "Block lifted: edges answer again within seconds.")
            made, _ = await blocks.block(conn, target, _field(form, "reason"), _actor(request))
    except blocks.BlockError as exc:
        raise PageError(400, "Not changed", str(exc)) from None
    log.warning("%s blocked by %s: %s", target.describe(), _actor(request), made["reason"])
    raise _back(path, "Blocked: every edge answers 410 within seconds.")


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=(STATIC / "ui.css").read_bytes(),
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "max-age=3600"},
    )


def create_app() -> web.Application:
    """The pages as a sub-application, mounted at /ui (collector/app.py)."""
    app = web.Application(middlewares=[pages])

    def read(handler: Handler) -> Handler:
        return signed_in("read", handler)

    def write(handler: Handler) -> Handler:
        return signed_in("write", handler)

    campaign = "/campaigns/{campaign_id}"
    link = campaign + "/links/{link_id}"
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", read(logout))
    app.router.add_get("/static/ui.css", stylesheet)
    app.router.add_get("/", read(campaign_list))
    app.router.add_get(campaign, read(campaign_page))
    app.router.add_get(link, read(link_page))
    app.router.add_get(link + "/clickers.csv", read(clickers_csv))
    app.router.add_get("/contacts", read(find_contact))
    app.router.add_get("/contacts/{contact_id}", read(contact_page))
    app.router.add_get("/status", read(status_page))
    app.router.add_get("/sessions", write(sessions_page))
    app.router.add_post("/sessions/{session_id}/revoke", write(revoke_session))
    app.router.add_post(campaign + "/tracking", write(set_tracking))
    app.router.add_post(campaign + "/block", write(block_target))
    app.router.add_post(campaign + "/unblock", write(block_target))
    app.router.add_post(link + "/actions", write(set_actions))
    app.router.add_post(link + "/block", write(block_target))
    app.router.add_post(link + "/unblock", write(block_target))
    return app


def add_pages(app: web.Application) -> None:
    app.add_subapp("/ui", create_app())
