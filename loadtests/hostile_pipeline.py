"""Edge memory against clients that pipeline requests deep and never read an answer.

    .venv/bin/python -m loadtests.hostile_pipeline [--connections 200] [--depth 65536] [--json out.json]

One edge worker (its own process, as in production; no collector is needed: every request is a 404).
Each client connects, sends ``--depth`` bytes of a 27-byte request pipelined back to back
(``GET /x HTTP/1.1``, ``Host: a``) and never reads. The worker's RSS is read from /proc: idle before the
clients connect, once it has stopped changing with every client connected (the edge has answered what
the clients' sockets take and parks the rest), and again after the clients close. The run fails (exit 1)
when RSS with the clients connected is more than ``--budget-mb`` (20) above idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clickedge.pgembed import free_port
from links import keys
from loadtests.report import as_json, write_json
from loadtests.scratch import SECRET, Processes, cpu_seconds, edge_command, local, rss_mb

REQUEST = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
BUDGET_MB = 20.0


async def settled(pid: int, timeout: float = 60.0) -> float:
    """RSS once the process has used no CPU for a while and its RSS holds still (or at the deadline)."""
    deadline = time.monotonic() + timeout
    cpu, rss = cpu_seconds([pid]), rss_mb([pid])
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # sampling a process's state, with a deadline
        now_cpu, now_rss = cpu_seconds([pid]), rss_mb([pid])
        if now_cpu - cpu < 0.02 and abs(now_rss - rss) < 0.2:
            return now_rss
        cpu, rss = now_cpu, now_rss
    return rss


async def hostile_client(port: int, depth: int) -> tuple[socket.socket, int]:
    """Connect, send ``depth`` bytes of pipelined requests, never read. Returns the socket and the bytes
    the kernel took (all of them, unless the edge stopped reading before)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    payload = REQUEST * (depth // len(REQUEST))
    sent = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while sent < len(payload):
                try:
                    sent += sock.send(payload[sent:])
                except BlockingIOError:
                    await _writable(loop, sock)
    return sock, sent


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_writer(sock.fileno())


async def run(connections: int, depth: int, budget_mb: float = BUDGET_MB) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="clickedge-hostile-"))
    try:
        keys.load_or_create(root / "keys.json")
        port = free_port()
        env = {"CLICKEDGE_INGEST_SECRET": SECRET, "CLICKEDGE_LOG_LEVEL": "ERROR"}
        async with Processes() as procs:
            edge = await procs.serve(edge_command(port, root, free_port()), env, local(port, "/healthz"))
            idle = await settled(edge.pid)
            rounds = []
            for _ in range(2):  # the second round shows whether memory is reused or keeps growing
                clients = await asyncio.gather(*(hostile_client(port, depth) for _ in range(connections)))
                held = await settled(edge.pid)
                for sock, _ in clients:
                    sock.close()
                rounds.append((held, await settled(edge.pid)))
            alive = edge.returncode is None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sent = sum(n for _, n in clients)
    return {
        "connections": connections,
        "depth_bytes": depth,
        "requests_sent": sent // len(REQUEST),
        "rss_idle_mb": round(idle, 1),
        "rss_with_clients_mb": [round(held, 1) for held, _ in rounds],
        "rss_after_close_mb": [round(after, 1) for _, after in rounds],
        "growth_mb": round(max(held for held, _ in rounds) - idle, 1),
        "budget_mb": budget_mb,
        "within_budget": max(held for held, _ in rounds) - idle <= budget_mb and alive,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--depth", type=int, default=65536, help="bytes of pipelined requests per client")
    parser.add_argument("--budget-mb", type=float, default=BUDGET_MB)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = asyncio.run(run(args.connections, args.depth, args.budget_mb))
    print(as_json(report))
    write_json(args.json, report)
    return 0 if report["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
