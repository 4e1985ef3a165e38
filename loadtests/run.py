"""The load harness: one command starts what it needs, measures the edge against its baselines in the
same run, verifies that every answered click reached PostgreSQL, and prints one table (and JSON).

    .venv/bin/python -m loadtests.run [--duration 10] [--connections 64] [--json loadtests/results/run.json]

Configurations, each driven by wrk (one thread, pinned to CPU 0) with distinct valid tokens, the server
pinned to CPU 1 where the machine has two or more cores:

- aiohttp bare: the low-level aiohttp server answering a fixed 302 (the ceiling for any aiohttp edge);
- nginx `return 302`, one worker, when nginx is installed (said so when it is not);
- clickedge edge, one worker, everything it does in production: token verify, durable spool append,
  group fsync, metrics, trusted-proxy client address: not shipping (collector paused); then shipping to a
  stand-in collector that stores nothing, and shipping live to the collector, each at full load and at
  half of the not-shipping rate;
- clickedge edge, N workers, when there are more cores than wrk needs;
- the whole stack on one core: the edge, the collector and PostgreSQL on the server's core, shipping live;
- the peers' design: decode, INSERT the click with asyncpg, then answer (listmonk, Mautic, Shlink).

Then a collector ingest measurement: the collector's exactly-once write path against a raw binary COPY
of the same rows into a table of the same shape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from clickedge.pgembed import free_port
from collector import contacts, ingest, settle
from collector.copy_binary import encode_stage_rows
from common.events import Click, EventIds, decode_batch
from loadtests.report import write_json
from loadtests.scratch import (
    TOKENS,
    Processes,
    Stack,
    background,
    collector_command,
    count_arrived,
    cpu_seconds,
    edge_command,
    local,
    place,
    rows_for,
    rss_mb,
    settled,
    stack,
    stop,
    wrk,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# One campaign per configuration that records clicks, so each one's rows are counted apart.
CAMPAIGNS = {
    "edge1": 4_000_000_101,
    "edgeN": 4_000_000_102,
    "peer": 4_000_000_103,
    "edgeHalf": 4_000_000_104,
    "edgeLive": 4_000_000_105,
    "edgeBlocks": 4_000_000_106,
    "stack1": 4_000_000_107,
    "standin": 4_000_000_108,
    "standinHalf": 4_000_000_109,
}
NOT_SHIPPING = "clickedge edge, 1 worker, not shipping (collector paused)"
SHIPPING = "clickedge edge, 1 worker, shipping live"
STANDIN = "clickedge edge, 1 worker, shipping to a stand-in collector"
WHOLE_STACK = "whole stack on one core: edge, collector, PostgreSQL"
SETTLE_TIMEOUT = 600.0  # seconds the collector may take to judge a configuration's clicks before the next one
BLOCKS = 10_000  # the kill switch's list in the blocked configuration: none of them the measured tokens


@dataclass
class Result:
    name: str
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_pct: float = 0.0
    errors: int = 0
    answered: int = 0
    rows: int | None = None
    clicks_lost: int | None = None
    rss_mb: float | None = None
    stored_pct: float | None = None  # of the measured seconds' clicks, the share in PostgreSQL when wrk stopped
    ratios: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def record_rows(self, rows: int) -> None:
        """The rows PostgreSQL holds for this configuration's campaign: every answered click must be one."""
        self.rows = rows
        self.clicks_lost = max(0, self.answered - rows)


@dataclass(frozen=True)
class Cpus:
    """Where the measured server runs, and where wrk does."""

    server: int | None
    client: int | None

    @classmethod
    def split(cls, cores: int) -> Cpus:
        # One core each where there are two; on one core nothing is pinned.
        return cls(server=1, client=0) if cores >= 2 else cls(server=None, client=None)


@dataclass
class Harness:
    """One run's shared parts: the stack, the running collector, a token file per campaign, the notes
    the table prints under it."""

    args: argparse.Namespace
    stack: Stack
    procs: Processes
    cpus: Cpus
    collector: asyncio.subprocess.Process
    collector_port: int
    tokens: dict[str, Path]
    notes: list[str] = field(default_factory=list)


@dataclass
class Baselines:
    bare: Result
    nginx: Result | None  # when nginx is installed
    peer: Result

    @property
    def results(self) -> list[Result]:
        return [self.bare, *([self.nginx] if self.nginx is not None else []), self.peer]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    cpus = Cpus.split(cores)
    decode = await token_decode(cpus.server, args.decode_number)
    async with stack("clickedge-loadtest-", log_level="WARNING") as parts, Processes() as procs:
        harness = await start_harness(args, parts, procs, cpus)
        baselines = await measure_baselines(harness)
        ingest_result = await ingest_ratio(parts.pg.dsn, args.ingest_rows)
        give_way_to_edges(harness)
        edges = await measure_edges(harness, cores)
    results = [*baselines.results, *edges]
    add_ratios(results, baselines)
    return assemble_report(cores, args, results, ingest_result, decode, harness.notes)


async def start_harness(args: argparse.Namespace, parts: Stack, procs: Processes, cpus: Cpus) -> Harness:
    """The collector every edge ships to, and a token file per campaign."""
    port = free_port()
    collector = await procs.serve(collector_command(port, parts.data), parts.env, local(port, "/readyz"))
    tokens = {name: parts.token_file(campaign, args.tokens, f"tokens-{name}") for name, campaign in CAMPAIGNS.items()}
    return Harness(args, parts, procs, cpus, collector, port, tokens)


# Each configuration's measurement.


async def measure(
    harness: Harness,
    name: str,
    port: int,
    pid: int,
    campaign: str,
    target_rps: float | None = None,
    *,
    stored: bool = False,
) -> Result:
    """wrk against the server on ``port`` with ``campaign``'s links, and the CPU and memory of process ``pid``
    (and its children) meanwhile. With ``target_rps``, paced to about that rate, for latency. With ``stored``,
    how many of the measured seconds' clicks were in PostgreSQL when wrk stopped: what shipping kept up with."""
    url, tokens, client = local(port), harness.tokens[campaign], harness.cpus.client
    delay_ms, connections = None, harness.args.connections
    if target_rps:
        delay_ms = 1.0
        connections = await paced_connections(url, tokens, connections, client, delay_ms, target_rps)
    await wrk(url, tokens, 1, connections, client, delay_ms)  # warm-up
    dsn, campaign_id = harness.stack.pg.dsn, CAMPAIGNS.get(campaign)
    rows_before = await rows_for(dsn, campaign_id) if stored and campaign_id else 0
    before = cpu_seconds([pid])
    load = await wrk(url, tokens, harness.args.duration, connections, client, delay_ms)
    cpu = cpu_seconds([pid]) - before
    stored_pct = None
    if stored and campaign_id and load.answered:
        stored_pct = round(100 * (await rows_for(dsn, campaign_id) - rows_before) / load.answered, 1)
    return Result(
        name=name,
        requests_per_s=load.requests_per_s,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        cpu_pct=100 * cpu / load.seconds,
        errors=load.errors,
        answered=load.answered,
        rss_mb=round(rss_mb([pid]), 1),
        stored_pct=stored_pct,
        note=f"{connections} connections, each pausing {delay_ms:.0f} ms after an answer" if delay_ms else "",
    )


async def paced_connections(
    url: str, tokens: Path, connections: int, client_cpu: int | None, delay_ms: float, target_rps: float
) -> int:
    """The number of connections that sends about ``target_rps``, each pausing ``delay_ms`` after an answer.

    wrk's delay() has whole milliseconds, so a connection's cycle is that pause plus the time a request
    takes: a warm-up measures the cycle."""
    warm = await wrk(url, tokens, 2, connections, client_cpu, delay_ms)
    cycle_ms = 1000 * connections / warm.requests_per_s
    return max(1, round(target_rps * cycle_ms / 1000))


async def measure_server(harness: Harness, name: str, argv: list[str], port: int, campaign: str) -> Result:
    """A baseline server, started, measured with ``campaign``'s links, and stopped."""
    proc = await harness.procs.serve(argv, harness.stack.env, local(port, "/"), harness.cpus.server)
    try:
        return await measure(harness, name, port, proc.pid, campaign)
    finally:
        await stop(proc)


async def measure_baselines(harness: Harness) -> Baselines:
    bare = await measure_bare(harness)
    nginx = await measure_nginx(harness)
    peer = await measure_peer(harness)
    return Baselines(bare, nginx, peer)


async def measure_bare(harness: Harness) -> Result:
    port = free_port()
    argv = [sys.executable, "-m", "loadtests.baselines", "bare", "--port", str(port)]
    return await measure_server(harness, "aiohttp bare fixed 302", argv, port, "edge1")


async def measure_nginx(harness: Harness) -> Result | None:
    if not shutil.which("nginx"):
        harness.notes.append("nginx is not installed: no nginx baseline in this run")
        return None
    port = free_port()
    root = harness.stack.root
    argv = ["nginx", "-p", str(root), "-c", str(nginx_config(root, port))]
    return await measure_server(harness, "nginx return 302 (1 worker)", argv, port, "edge1")


async def measure_peer(harness: Harness) -> Result:
    port = free_port()
    argv = [
        *[sys.executable, "-m", "loadtests.baselines", "peer", "--port", str(port)],
        *["--database-url", harness.stack.pg.dsn, "--data-dir", str(harness.stack.data)],
    ]
    peer = await measure_server(harness, "peers' design: INSERT per click", argv, port, "peer")
    peer.record_rows(await rows_for(harness.stack.pg.dsn, CAMPAIGNS["peer"]))
    return peer


def nginx_config(root: Path, port: int) -> Path:
    conf = root / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/nginx-body;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=2048;
        location / {{ return 302 https://example.com/; }}
    }}
}}
""")
    return conf


def give_way_to_edges(harness: Harness) -> None:
    """The edges ship every click to the collector as they run. Collectors run on machines of their own in
    production; here they would take CPU from wrk (or from the edge). So for the edge runs the collector
    and PostgreSQL share wrk's core at the lowest priority: the edge keeps its core, its shipper
    included, wrk keeps what it needs, and ingest takes what is left. Its backlog drains afterwards and
    every click is checked."""
    client = harness.cpus.client
    if client is None:
        return
    background(ingest_pids(harness), client)
    harness.notes.append(
        f"edge runs: the collector and PostgreSQL shared wrk's CPU {client} at nice 19 (but in the whole-stack "
        "row); clicks they had not ingested by the end of a run drained afterwards and were counted"
    )


def ingest_pids(harness: Harness) -> list[int]:
    pg = harness.stack.pg.process
    assert pg is not None
    return [harness.collector.pid, pg.pid]


async def collector_idle(harness: Harness) -> None:
    """Before configurations that ship: the collector has judged every click of the ones before, so that its
    settling takes nothing from them (and, when they ship to it, it ingests only theirs). Meanwhile it may use
    every core at nice 0; then it goes back where it was."""
    pids, client = ingest_pids(harness), harness.cpus.client
    place(pids, set(range(os.cpu_count() or 1)), 0)
    try:
        if not await settled(harness.stack.pg.dsn, SETTLE_TIMEOUT):
            harness.notes.append(f"the collector had not judged every earlier click within {SETTLE_TIMEOUT:.0f} s")
    finally:
        if client is not None:
            background(pids, client)


async def measure_edges(harness: Harness, cores: int) -> list[Result]:
    """One worker, not shipping and shipping. With the collector paused for the measured seconds the edge does
    all of its request path (verify, spool, metrics, client address) and its shipper waits, as in a collector
    outage; the clicks ship when it resumes and are counted. Shipping, it needs a collector somewhere: on
    this machine the collector and PostgreSQL share the load generator's core, which delays wrk and so costs
    throughput the edge shows as idle time; a stand-in collector that checks each batch and stores nothing
    shows what shipping costs the edge itself (what was measured: loadtests/README.md, "Results: the
    harness"). Before the rows that ship, the collector finishes judging the clicks of the rows before them."""
    server = harness.cpus.server
    one = await measure_edge(harness, NOT_SHIPPING, 1, "edge1", server, collector_paused=True)
    with_blocks = await measure_with_blocks(harness)
    share = with_blocks.requests_per_s / one.requests_per_s
    with_blocks.ratios["vs_no_blocks"] = round(share, 3)
    harness.notes.append(
        f"the kill switch holding {BLOCKS:,} blocks: {share:.3f} of the same edge's requests/s without"
    )
    half_rate = one.requests_per_s / 2
    await collector_idle(harness)
    port = await start_standin(harness)
    standin = await measure_edge(harness, STANDIN, 1, "standin", server, collector_port=port)
    name = f"{STANDIN}, at half of the not-shipping rate"
    standin_half = await measure_edge(harness, name, 1, "standinHalf", server, half_rate, collector_port=port)
    live = await measure_edge(harness, SHIPPING, 1, "edgeLive", server)
    await collector_idle(harness)
    name = f"{SHIPPING}, at half of the not-shipping rate"
    half = await measure_edge(harness, name, 1, "edgeHalf", server, half_rate)
    for shipping in (standin, live):
        shipping.ratios["vs_not_shipping"] = round(shipping.requests_per_s / one.requests_per_s, 3)
        harness.notes.append(
            f"{shipping.name}: {shipping.ratios['vs_not_shipping']:.3f} of the same edge's requests/s not shipping"
        )
    workers = await measure_workers(harness, cores)
    await collector_idle(harness)
    stack = await measure_whole_stack(harness)
    return [one, with_blocks, standin, standin_half, live, half, workers, stack]


async def start_standin(harness: Harness) -> int:
    """The stand-in collector (loadtests/baselines.py), where the collector is: on wrk's core at nice 19."""
    port = free_port()
    argv = [sys.executable, "-m", "loadtests.baselines", "standin", "--port", str(port)]
    proc = await harness.procs.serve(argv, harness.stack.env, local(port, "/readyz"), harness.cpus.client)
    if harness.cpus.client is not None:
        background([proc.pid], harness.cpus.client)
    harness.notes.append(
        "stand-in collector: checks every batch's records and answers 200 at once, storing nothing; the edge "
        "ships as it would to the collector, and nothing else competes with wrk on its core"
    )
    return port


async def measure_whole_stack(harness: Harness) -> Result:
    """A small deployment on one small machine: the edge, the collector and PostgreSQL all on the server's
    core at the same priority, the edge shipping live; wrk keeps its own core."""
    server, client = harness.cpus.server, harness.cpus.client
    if server is None or client is None:
        harness.notes.append("one core: the whole-stack row is the shipping-live row here")
        return await measure_edge(harness, WHOLE_STACK, 1, "stack1", None)
    pids = ingest_pids(harness)
    place(pids, {server}, 0)
    try:
        return await measure_edge(harness, WHOLE_STACK, 1, "stack1", server)
    finally:
        background(pids, client)


async def measure_with_blocks(harness: Harness) -> Result:
    """The first configuration with the kill switch holding BLOCKS entries (a third campaigns, a third links,
    a third destination hosts), none of them the measured links': every request checks all three kinds,
    the host's labels one by one."""
    conn = await asyncpg.connect(harness.stack.pg.dsn)
    try:
        await conn.copy_records_to_table(
            "blocks",
            records=[
                (
                    3_000_000_000 + i if i % 3 == 0 else (3_500_000_000 + i if i % 3 == 1 else None),
                    i if i % 3 == 1 else None,
                    f"blocked-{i}.phish.example" if i % 3 == 2 else None,
                    "load test",
                    "loadtests",
                )
                for i in range(BLOCKS)
            ],
            columns=("campaign_id", "link_id", "destination_host", "reason", "blocked_by"),
        )
        name = f"clickedge edge, 1 worker, {BLOCKS:,} blocks"
        return await measure_edge(
            harness, name, 1, "edgeBlocks", harness.cpus.server, collector_paused=True, blocks=BLOCKS
        )
    finally:
        await conn.execute("DELETE FROM blocks WHERE blocked_by = 'loadtests'")
        await conn.close()


async def measure_workers(harness: Harness, cores: int) -> Result:
    if cores >= 4:
        name = f"clickedge edge, {cores - 1} workers"
        return await measure_edge(harness, name, cores - 1, "edgeN", None, collector_paused=True)
    # What a small machine allows: two workers sharing the one server core. Scaling needs idle cores;
    # this shows what the workers' machinery (supervisor, SO_REUSEPORT) costs.
    name = "clickedge edge, 2 workers on that one core"
    result = await measure_edge(harness, name, 2, "edgeN", harness.cpus.server, collector_paused=True)
    harness.notes.append(f"{cores} cores: wrk needs one, so worker scaling across cores cannot be measured here")
    return result


async def measure_edge(
    harness: Harness,
    name: str,
    workers: int,
    campaign: str,
    cpu: int | None,
    target_rps: float | None = None,
    *,
    collector_paused: bool = False,
    blocks: int = 0,
    collector_port: int | None = None,
) -> Result:
    """One edge configuration, measured, stopped, and its clicks verified. With ``blocks``, measured once
    its worker enforces that many (fetched from the collector before it is paused). With ``collector_port``,
    shipping to the stand-in collector there: its clicks are checked and dropped, not counted."""
    port = free_port()
    argv = edge_command(
        port,
        harness.stack.data,
        collector_port or harness.collector_port,
        *["--workers", str(workers), "--spool-dir", str(harness.stack.root / f"spool-{campaign}")],
        *["--trusted-proxies", "10.0.0.0/8"],
    )
    proc = await harness.procs.serve(argv, harness.stack.env, local(port, "/readyz"), cpu)
    try:
        if blocks:
            await enforcing(port, blocks)
        with paused(harness.collector) if collector_paused else contextlib.nullcontext():
            live = not collector_paused and collector_port is None
            result = await measure(harness, name, port, proc.pid, campaign, target_rps, stored=live)
    finally:
        await stop(proc)  # drains: ships what it can, the rest stays in the spool
    if collector_port is None:
        await verify_clicks(harness, result, argv, campaign, cpu)
    return result


async def enforcing(port: int, blocks: int, timeout: float = 30.0) -> None:
    """Wait until the edge on ``port`` says it enforces ``blocks`` entries (its first fetch, within seconds)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                for line in (await resp.text()).splitlines():
                    if line.startswith("clickedge_edge_blocklist_entries") and float(line.split()[-1]) >= blocks:
                        return
            await asyncio.sleep(0.1)  # polling a starting worker, with a deadline
    raise RuntimeError(f"the edge on :{port} did not load its {blocks} blocks within {timeout:.0f}s")


@contextlib.contextmanager
def paused(collector: asyncio.subprocess.Process) -> Iterator[None]:
    """As in a collector outage: clicks wait in the spool, shipped after."""
    collector.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        collector.send_signal(signal.SIGCONT)


# The verification of clicks.


async def verify_clicks(harness: Harness, result: Result, argv: list[str], campaign: str, cpu: int | None) -> None:
    """Every answered click must be a row. Whatever the edge's drain left in its spool, a restart ships,
    as in production."""
    dsn, campaign_id = harness.stack.pg.dsn, CAMPAIGNS[campaign]
    rows = await count_arrived(dsn, campaign_id, result.answered, 0)
    if rows < result.answered:
        proc = await harness.procs.start(argv, harness.stack.env, cpu)
        rows = await count_arrived(dsn, campaign_id, result.answered)
        await stop(proc)
    result.record_rows(rows)


# The ingest measurement.


async def ingest_ratio(dsn: str, rows: int) -> dict[str, float]:
    """Collector write path vs a raw binary COPY of the same rows into a table of the same shape."""
    batches = ingest_batches(rows)
    conn = await asyncpg.connect(dsn)
    try:
        await ingest.prepare_connection(conn)
        # The shape of clicks, its indexes included; the verdict columns may stay empty (a raw COPY has none).
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS copy_baseline (LIKE clicks INCLUDING ALL);"
            "ALTER TABLE copy_baseline ALTER verdict DROP NOT NULL, ALTER verdict_reasons DROP NOT NULL"
        )
        copy_rate = rows / await copy_records_seconds(conn, batches)
        encoded_rate = rows / await copy_encoded_seconds(conn, batches)
        ingest_rate = rows / await ingest_seconds(conn, batches)
        # The collector's default: a batch waits for its verdicts (the hold), and settling judges it later.
        held = ingest_batches(rows)
        held_rate = rows / await ingest_seconds(conn, held, HELD)
        settle_rate = rows / await settle_seconds(conn)
        await conn.execute("DROP TABLE copy_baseline")
    finally:
        await conn.close()
    return {
        "copy_rows_per_s": copy_rate,
        "copy_encoded_rows_per_s": encoded_rate,
        "ingest_rows_per_s": ingest_rate,
        "ratio": ingest_rate / copy_rate,
        "ratio_same_encoder": ingest_rate / encoded_rate,
        "ingest_held_rows_per_s": held_rate,
        "ratio_held": held_rate / copy_rate,
        "settle_rows_per_s": settle_rate,
        "ratio_held_and_settled": rows / (rows / held_rate + rows / settle_rate) / copy_rate,
    }


# As a collector runs: batches checked against erased contacts' tombstones (collector/contacts.py).
AT_ONCE = settle.Judge(erasure_key=contacts.tombstone_key(b"loadtest"))
HELD = replace(AT_ONCE, hold=15.0)


async def settle_seconds(conn: asyncpg.Connection) -> float:
    """Settling everything the held ingest left, 2,000 clicks a transaction as a collector does."""
    later = datetime.now(UTC) + timedelta(seconds=60)
    started = time.perf_counter()
    while (await settle.settle(conn, HELD, until=later, limit=2000)).claimed:
        pass
    return time.perf_counter() - started


def ingest_batches(rows: int, size: int = 5000) -> list[list[Click]]:
    """``rows`` distinct clicks in batches as an edge ships them, checked as the collector checks them."""
    ids = EventIds()
    base = time.time_ns() // 1000
    batches = []
    for start in range(0, rows, size):
        clicks = [
            [
                ids.next(base // 1000 + i),
                base + i,
                4_100_000_000,
                i % 20,
                1 + i % 50_000,
                0,
                1,
                "192.0.2.1",
                "Mozilla/5.0 (load)",
                "GET",
            ]
            for i in range(start, min(rows, start + size))
        ]
        batches.append(decode_batch({"v": 1, "edge": "load", "clicks": clicks})[1])
    return batches


async def copy_records_seconds(conn: asyncpg.Connection, batches: list[list[Click]]) -> float:
    """The baseline as most programs would write it: asyncpg's own binary COPY of Python records."""
    records = [stage_records("load", batch) for batch in batches]
    await conn.execute("TRUNCATE copy_baseline")
    started = time.perf_counter()
    for batch_records in records:
        await conn.copy_records_to_table("copy_baseline", records=batch_records, columns=ingest.STAGE_COLUMNS)
    return time.perf_counter() - started


async def copy_encoded_seconds(conn: asyncpg.Connection, batches: list[list[Click]]) -> float:
    """And with the collector's own COPY encoder (collector/copy_binary.py), encoding included."""
    await conn.execute("TRUNCATE copy_baseline")
    started = time.perf_counter()
    for batch in batches:
        data = encode_stage_rows("load", batch)
        await conn.copy_to_table(
            "copy_baseline", source=memoryview(data), columns=ingest.STAGE_COLUMNS, format="binary"
        )
    return time.perf_counter() - started


async def ingest_seconds(conn: asyncpg.Connection, batches: list[list[Click]], judge: settle.Judge = AT_ONCE) -> float:
    """The collector's exactly-once write path; by default each batch judged at once (a hold of 0)."""
    started = time.perf_counter()
    for batch in batches:
        await ingest.ingest(conn, "load", batch, judge=judge)
    return time.perf_counter() - started


def stage_records(edge: str, clicks: list[Click]) -> list[tuple[Any, ...]]:
    """The staging rows as the Python objects asyncpg's copy_records_to_table takes, in
    ingest.STAGE_COLUMNS order."""
    return [
        (
            c.contact_id or 0,
            _EPOCH + timedelta(microseconds=c.clicked_at_us),
            uuid.UUID(bytes=c.event_id),
            c.campaign_id,
            c.link_id,
            _EPOCH + timedelta(seconds=c.sent_at),
            c.key_id,
            None if c.client_ip is None else ipaddress.ip_address(c.client_ip),
            c.user_agent,
            c.method,
            c.signals,
            edge,
        )
        for c in clicks
    ]


async def token_decode(cpu: int | None, number: int) -> dict[str, float]:
    """loadtests.bench_decode in a process of its own on the server's core, before anything else runs."""
    with tempfile.TemporaryDirectory(prefix="clickedge-loadtest-decode-") as tmp:
        out = Path(tmp) / "decode.json"
        argv = [sys.executable, "-m", "loadtests.bench_decode", "--number", str(number), "--json", str(out)]
        proc = await asyncio.create_subprocess_exec(
            *argv, *(["--cpu", str(cpu)] if cpu is not None else []), stdout=asyncio.subprocess.DEVNULL
        )
        if await proc.wait() != 0:
            raise RuntimeError(f"loadtests.bench_decode exited with {proc.returncode}")
        result: dict[str, float] = orjson.loads(out.read_bytes())
    return result


# The report's assembly.


def add_ratios(results: list[Result], baselines: Baselines) -> None:
    """Each configuration against each baseline of the same run."""
    for r in results:
        r.ratios["vs_bare"] = round(r.requests_per_s / baselines.bare.requests_per_s, 3)
        if baselines.nginx is not None:
            r.ratios["vs_nginx"] = round(r.requests_per_s / baselines.nginx.requests_per_s, 3)
        r.ratios["vs_peer"] = round(r.requests_per_s / baselines.peer.requests_per_s, 2)


def assemble_report(
    cores: int,
    args: argparse.Namespace,
    results: list[Result],
    ingest_result: dict[str, float],
    decode: dict[str, float],
    notes: list[str],
) -> dict[str, Any]:
    return {
        "machine": {"cores": cores, "cpu": _cpu_model(), "python": sys.version.split()[0]},
        "settings": {"duration_s": args.duration, "connections": args.connections, "tokens": args.tokens},
        "results": [asdict(r) for r in results],
        "ingest": ingest_result,
        "token_decode": decode,
        "notes": notes,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'configuration':<72} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU %':>6} {'RSS MB':>7} "
        f"{'vs bare':>8} {'vs nginx':>9} {'vs peer':>8} {'stored':>7} {'lost':>5}",
    ]
    for r in report["results"]:
        lost = "" if r["clicks_lost"] is None else str(r["clicks_lost"])
        stored = "" if r["stored_pct"] is None else f"{r['stored_pct']:.0f}%"
        ratios = r["ratios"]
        lines.append(
            f"{r['name']:<72} {r['requests_per_s']:>9,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['cpu_pct']:>6.0f} {r['rss_mb'] or 0:>7.1f} {ratios.get('vs_bare', 0):>8.3f} "
            f"{ratios.get('vs_nginx', 0):>9.3f} {ratios.get('vs_peer', 0):>8.2f} {stored:>7} {lost:>5}"
        )
    lines.append(
        "stored: of the clicks answered in the measured seconds, the share in PostgreSQL when wrk stopped (clicks "
        "of the warm-up second still shipping count in); CPU %: the measured server process's"
    )
    ing = report["ingest"]
    lines.append(
        f"collector ingest, each batch judged at once {ing['ingest_rows_per_s']:,.0f} rows/s vs raw binary COPY "
        f"{ing['copy_rows_per_s']:,.0f} rows/s (asyncpg records): ratio {ing['ratio']:.2f}; vs "
        f"{ing['copy_encoded_rows_per_s']:,.0f} rows/s (COPY with the collector's encoder): ratio "
        f"{ing['ratio_same_encoder']:.2f}"
    )
    lines.append(
        f"collector ingest with the default hold {ing['ingest_held_rows_per_s']:,.0f} rows/s (ratio "
        f"{ing['ratio_held']:.2f}), then settling {ing['settle_rows_per_s']:,.0f} rows/s; both in turn: ratio "
        f"{ing['ratio_held_and_settled']:.2f}"
    )
    dec = report["token_decode"]
    lines.append(
        f"token decode + verify, {dec['url_chars']}-character URL: median {dec['decode_median_us']:.2f} µs "
        f"(format version 1: {dec['decode_version_1_median_us']:.2f} µs; AES-SIV open alone: "
        f"{dec['aes_siv_open_median_us']:.2f} µs)"
    )
    lines += [f"note: {r['name']}: {r['note']}" for r in report["results"] if r["note"]]
    lines += [f"note: {n}" for n in report["notes"]]
    m = report["machine"]
    lines.append(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per configuration")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=TOKENS, help="distinct tokens cycled per configuration")
    parser.add_argument("--ingest-rows", type=int, default=200_000)
    parser.add_argument("--decode-number", type=int, default=20_000, help="token decodes per timing sample")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    report = asyncio.run(run(args))
    print(table(report))
    write_json(args.json, report)
    lost = sum(r["clicks_lost"] or 0 for r in report["results"])
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
