"""Baseline servers the harness measures the edge against, in the same run on the same machine.

- ``bare``: aiohttp's low-level ``web.Server`` on uvloop answering a fixed 302: the ceiling for any
  aiohttp edge.
- ``peer``: the design of listmonk, Mautic and Shlink: decode the link (here: our token, so the work
  compares like with like), INSERT the click into PostgreSQL with asyncpg, then answer.
- ``standin``: not a baseline but a stand-in for the collector, for an edge that ships: it checks each batch's
  records (frames and CRCs, as the collector does first; a JSON batch, parsed) and answers 200 at once,
  storing nothing. An edge
  shipping to it does all of its shipping while nothing else competes for the machine: on a 2-core machine
  the real collector and PostgreSQL can only share wrk's core or the edge's.

    python -m loadtests.baselines bare --port 9001
    python -m loadtests.baselines peer --port 9002 --database-url postgresql://... --data-dir .clickedge
    python -m loadtests.baselines standin --port 9003
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import orjson
import uvloop
from aiohttp import web
from aiohttp.web_request import BaseRequest

from common.events import EDGE_BLOCKLIST_PATH, MAX_BATCH_CLICKS, SPOOL_CONTENT_TYPE
from common.frames import FrameError, decode
from links import keys
from links.token import LINK_PATH, TokenError

FIXED = "https://example.com/"
INSERT = """INSERT INTO clicks (contact_id, clicked_at, event_id, campaign_id, link_id, sent_at, key_id, client_ip,
                                user_agent, method, edge, verdict, verdict_reasons)
            VALUES ($1, now(), $2, $3, $4, to_timestamp($5), $6, $7, $8, $9, 'peer', 'human', '{}')"""


async def serve(handler: web.Server, port: int) -> None:
    runner = web.ServerRunner(handler, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    print(f"listening on {port}", flush=True)
    await asyncio.Event().wait()


async def bare(port: int) -> None:
    async def handle(request: BaseRequest) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": FIXED})

    await serve(web.Server(handle, access_log=None), port)


async def peer(port: int, dsn: str, data_dir: Path) -> None:
    codec = keys.load(data_dir / "keys.json").codec()
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)

    async def handle(request: BaseRequest) -> web.StreamResponse:
        try:
            link = codec.decode(request.raw_path[len(LINK_PATH) :])
        except TokenError:
            return web.Response(status=404)
        await pool.execute(
            INSERT,
            link.contact_id or 0,
            uuid.uuid4(),
            link.campaign_id,
            link.link_id,
            link.sent_at,
            link.key_id,
            request.remote,
            request.headers.get("User-Agent", "")[:512],
            request.method,
        )
        return web.Response(status=302, headers={"Location": link.destination, "Cache-Control": "no-store"})

    await serve(web.Server(handle, access_log=None), port)


async def standin(port: int) -> None:
    async def clicks(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            if request.content_type == SPOOL_CONTENT_TYPE:
                count = len(decode(body, MAX_BATCH_CLICKS))
            else:  # the JSON form (older edges): parsed, as the collector does first
                count = len(orjson.loads(body)["clicks"])
        except (FrameError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"received": count, "inserted": count, "duplicates": 0})

    async def blocklist(request: web.Request) -> web.Response:
        return web.json_response({"campaigns": [], "links": [], "hosts": []})

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/clicks", clicks)
    app.router.add_get(EDGE_BLOCKLIST_PATH, blocklist)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    print(f"listening on {port}", flush=True)
    await asyncio.Event().wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bare", "peer", "standin"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--data-dir", type=Path, default=Path(".clickedge"))
    args = parser.parse_args()
    started = time.perf_counter()
    if args.kind == "bare":
        coro = bare(args.port)
    elif args.kind == "standin":
        coro = standin(args.port)
    else:
        coro = peer(args.port, args.database_url, args.data_dir)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(coro)
    return 0 if time.perf_counter() > started else 1


if __name__ == "__main__":
    sys.exit(main())
