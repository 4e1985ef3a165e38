"""The load harness: one command starts what it needs, measures the edge against its baselines in the
same run, verifies that every answered click reached PostgreSQL, and prints one table (and JSON).

    .venv/bin/python -m loadtests.run [--duration 10] [--connections 64] [--json loadtests/results/run.json]

Configurations, each driven by wrk (one thread, pinned to CPU 0) with distinct valid tokens, the server
pinned to CPU 1 where the machine has two or more cores:

- aiohttp bare: the low-level aiohttp server answering a fixed 302 (the ceiling for any aiohttp edge);
- nginx `return 302`, one worker, when nginx is installed (said so when it is not);
- clickedge edge, one worker, everything it does in production: token verify, durable spool append,
  group fsync, metrics, trusted-proxy client address;
- clickedge edge, N workers, when there are more cores than wrk needs;
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
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from clickedge.pgembed import EmbeddedPostgres, free_port
from collector import ingest
from collector.copy_binary import encode_stage_rows
from collector.schema import migrate_dsn
from common.events import Click, EventIds, decode_batch
from links import keys
from loadtests.make_tokens import token_paths
from loadtests.report import write_json

HERE = Path(__file__).resolve().parent
SECRET = "loadtest-ingest-secret-0123456789"  # noqa: S105 - a throwaway stack's
TOKENS = 50_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    ratios: dict[str, float] = field(default_factory=dict)
    note: str = ""


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children so far."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        for p in [pid, *_descendants(pid)]:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for p in [pid, *_descendants(pid)]:
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                continue
    return total / 1024


def _descendants(pid: int) -> list[int]:
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return kids + [d for k in kids for d in _descendants(k)]


def background(pids: list[int], cpu: int) -> None:
    """Every thread of these processes and their descendants: onto ``cpu``, at nice 19."""
    for pid in {p for root in pids for p in (root, *_descendants(root))}:
        try:
            tids = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
        except FileNotFoundError:  # a backend that exited since it was listed
            continue
        for tid in tids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.setpriority(os.PRIO_PROCESS, tid, 19)
                os.sched_setaffinity(tid, {cpu})


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


async def start(
    argv: list[str], env: dict[str, str] | None = None, cpu: int | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *pin(cpu),
        *argv,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url, allow_redirects=False) as resp:
                    if resp.status < 500:
                        return
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.05)  # polling a starting server, with a deadline
    raise RuntimeError(f"{url} did not come up")


async def wrk(
    url: str, tokens: Path, duration: float, connections: int, cpu: int | None, delay_ms: float | None = None
) -> dict[str, Any]:
    script = HERE / "clicks.lua"
    if delay_ms is not None:
        # A pause after each response, per connection: C connections then send about C * 1000 / pause
        # requests/s, for latency at a chosen load. wrk looks for delay() when it loads the script.
        paced = tokens.with_suffix(".paced.lua")
        paced.write_text(script.read_text() + f"\nfunction delay()\n  return {delay_ms:.0f}\nend\n")
        script = paced
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
        "--",
        str(tokens),
    ]
    proc = await asyncio.create_subprocess_exec(
        *pin(cpu), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    for line in out.decode().splitlines():
        if line.startswith("WRK_JSON "):
            data: dict[str, Any] = orjson.loads(line[len("WRK_JSON ") :])
            return data
    raise RuntimeError(f"wrk failed: {out.decode()[-500:]} {err.decode()[-500:]}")


async def measure(
    name: str,
    url: str,
    pids: list[int],
    tokens: Path,
    args: argparse.Namespace,
    client_cpu: int | None,
    target_rps: float | None = None,
) -> Result:
    delay_ms, connections = None, args.connections
    if target_rps:
        # Paced: each connection pauses 1 ms after each answer (wrk's delay() has whole milliseconds), so a
        # connection's cycle is that pause plus the time a request takes. A warm-up measures the cycle, and
        # the number of connections is chosen to hit the target.
        delay_ms = 1.0
        warm = await wrk(url, tokens, 2, connections, client_cpu, delay_ms)
        cycle_ms = 1000 * connections / (warm["requests"] / (warm["duration_us"] / 1e6))
        connections = max(1, round(target_rps * cycle_ms / 1000))
    await wrk(url, tokens, 1, connections, client_cpu, delay_ms)  # warm-up
    before = cpu_seconds(pids)
    data = await wrk(url, tokens, args.duration, connections, client_cpu, delay_ms)
    cpu = cpu_seconds(pids) - before
    seconds = data["duration_us"] / 1e6
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    return Result(
        name=name,
        requests_per_s=data["requests"] / seconds,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        cpu_pct=100 * cpu / seconds,
        errors=errors,
        answered=data["requests"] - data["status"],
        rss_mb=round(rss_mb(pids), 1),
        note=f"{connections} connections, each pausing {delay_ms:.0f} ms after an answer" if delay_ms else "",
    )


@dataclass
class Scratch:
    """A throwaway stack's parts: an embedded PostgreSQL with the schema, a data dir with a key, and a
    token file for one campaign."""

    root: Path
    pg: EmbeddedPostgres
    data: Path
    tokens: Path
    env: dict[str, str]


@contextlib.asynccontextmanager
async def scratch(prefix: str, campaign: int, tokens: int = TOKENS) -> AsyncIterator[Scratch]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    await pg.start()
    try:
        await migrate_dsn(pg.dsn)
        data = root / "data"
        keys.load_or_create(data / "keys.json")
        token_file = root / "tokens.txt"
        write_tokens(data, token_file, campaign, tokens)
        env = {"CLICKEDGE_INGEST_SECRET": SECRET, "CLICKEDGE_DATABASE_URL": pg.dsn, "CLICKEDGE_LOG_LEVEL": "ERROR"}
        yield Scratch(root, pg, data, token_file, env)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def collector_command(port: int, data: Path) -> list[str]:
    return [sys.executable, "-m", "clickedge", "collector", "--collector-port", str(port), "--data-dir", str(data)]


def edge_command(port: int, data: Path, collector_port: int, *options: str) -> list[str]:
    """One edge (with ``--workers``, several) shipping to the collector on ``collector_port``."""
    return [
        *[sys.executable, "-m", "clickedge", "edge", "--edge-port", str(port), "--data-dir", str(data)],
        *["--collector-url", f"http://127.0.0.1:{collector_port}", "--drain-grace", "0", *options],
    ]


def write_tokens(data_dir: Path, path: Path, campaign: int, count: int) -> None:
    codec = keys.load(data_dir / "keys.json").codec()
    with open(path, "w") as f:
        f.writelines(token_paths(codec, campaign, count))


async def rows_for(dsn: str, campaign: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = $1", campaign))
    finally:
        await conn.close()


async def count_arrived(dsn: str, campaign: int, answered: int, timeout: float = 120) -> int:
    """Rows for the campaign once the edge has shipped at least ``answered`` (or the deadline passed)."""
    deadline = time.monotonic() + timeout
    rows = await rows_for(dsn, campaign)
    while rows < answered and time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # waiting for the spool to drain, with a deadline
        rows = await rows_for(dsn, campaign)
    return rows


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


async def ingest_ratio(dsn: str, rows: int) -> dict[str, float]:
    """Collector write path vs a raw binary COPY of the same rows into a table of the same shape."""
    ids = EventIds()
    base = time.time_ns() // 1000
    batches = []
    for start in range(0, rows, 5000):
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
            for i in range(start, min(rows, start + 5000))
        ]
        batches.append(decode_batch({"v": 1, "edge": "load", "clicks": clicks})[1])
    conn = await asyncpg.connect(dsn)
    try:
        await ingest.prepare_connection(conn)
        await conn.execute("CREATE TABLE IF NOT EXISTS copy_baseline (LIKE clicks INCLUDING ALL)")
        # The baseline as most programs would write it: asyncpg's own binary COPY of Python records.
        records = [stage_records("load", batch) for batch in batches]
        await conn.execute("TRUNCATE copy_baseline")
        started = time.perf_counter()
        for batch_records in records:
            await conn.copy_records_to_table("copy_baseline", records=batch_records, columns=ingest.STAGE_COLUMNS)
        copy_rate = rows / (time.perf_counter() - started)
        # And with the collector's own COPY encoder (collector/copy_binary.py), encoding included.
        await conn.execute("TRUNCATE copy_baseline")
        started = time.perf_counter()
        for batch in batches:
            data = encode_stage_rows("load", batch)
            await conn.copy_to_table(
                "copy_baseline", source=memoryview(data), columns=ingest.STAGE_COLUMNS, format="binary"
            )
        encoded_rate = rows / (time.perf_counter() - started)
        started = time.perf_counter()
        for batch in batches:
            await ingest.ingest(conn, "load", batch)
        ingest_rate = rows / (time.perf_counter() - started)
        await conn.execute("DROP TABLE copy_baseline")
    finally:
        await conn.close()
    return {
        "copy_rows_per_s": copy_rate,
        "copy_encoded_rows_per_s": encoded_rate,
        "ingest_rows_per_s": ingest_rate,
        "ratio": ingest_rate / copy_rate,
        "ratio_same_encoder": ingest_rate / encoded_rate,
    }


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
            edge,
        )
        for c in clicks
    ]


async def token_decode(root: Path, cpu: int | None, number: int) -> dict[str, float]:
    """loadtests.bench_decode in a process of its own on the server's core, before anything else runs."""
    out = root / "decode.json"
    argv = [sys.executable, "-m", "loadtests.bench_decode", "--number", str(number), "--json", str(out)]
    proc = await asyncio.create_subprocess_exec(
        *argv, *(["--cpu", str(cpu)] if cpu is not None else []), stdout=asyncio.subprocess.DEVNULL
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"loadtests.bench_decode exited with {proc.returncode}")
    result: dict[str, float] = orjson.loads(out.read_bytes())
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    server_cpu, client_cpu = (1, 0) if cores >= 2 else (None, None)
    root = Path(tempfile.mkdtemp(prefix="clickedge-loadtest-"))
    decode_result = await token_decode(root, server_cpu, args.decode_number)
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    await pg.start()
    procs: list[asyncio.subprocess.Process] = []
    results: list[Result] = []
    notes: list[str] = []
    try:
        await migrate_dsn(pg.dsn)
        data = root / "data"
        keys.load_or_create(data / "keys.json")
        env = {"CLICKEDGE_INGEST_SECRET": SECRET, "CLICKEDGE_DATABASE_URL": pg.dsn, "CLICKEDGE_LOG_LEVEL": "WARNING"}
        cport = free_port()
        collector = await start(
            collector_command(cport, data),
            env,
        )
        procs.append(collector)
        await wait_http(f"http://127.0.0.1:{cport}/readyz")
        campaigns = {
            "edge1": 4_000_000_101,
            "edgeN": 4_000_000_102,
            "peer": 4_000_000_103,
            "edgeHalf": 4_000_000_104,
            "edgeLive": 4_000_000_105,
        }
        token_files = {}
        for name, campaign in campaigns.items():
            token_files[name] = root / f"tokens-{name}.txt"
            write_tokens(data, token_files[name], campaign, args.tokens)

        async def server(name: str, argv: list[str], port: int, health: str, cpu: int | None) -> Result:
            proc = await start(argv, env, cpu)
            procs.append(proc)
            try:
                await wait_http(f"http://127.0.0.1:{port}{health}")
                return await measure(
                    name,
                    f"http://127.0.0.1:{port}",
                    [proc.pid],
                    token_files["edge1"] if "peer" not in name else token_files["peer"],
                    args,
                    client_cpu,
                )
            finally:
                await stop(proc)

        port = free_port()
        bare = await server(
            "aiohttp bare fixed 302",
            [sys.executable, "-m", "loadtests.baselines", "bare", "--port", str(port)],
            port,
            "/",
            server_cpu,
        )
        results.append(bare)
        nginx: Result | None = None
        if shutil.which("nginx"):
            port = free_port()
            nginx = await server(
                "nginx return 302 (1 worker)",
                ["nginx", "-p", str(root), "-c", str(nginx_config(root, port))],
                port,
                "/",
                server_cpu,
            )
            results.append(nginx)
        else:
            notes.append("nginx is not installed: no nginx baseline in this run")

        async def edge(
            name: str,
            workers: int,
            campaign_key: str,
            cpu: int | None,
            half_of: float | None = None,
            *,
            collector_paused: bool = False,
        ) -> Result:
            port = free_port()
            argv = edge_command(
                port,
                data,
                cport,
                *["--workers", str(workers), "--spool-dir", str(root / f"spool-{campaign_key}")],
                *["--trusted-proxies", "10.0.0.0/8"],
            )
            proc = await start(argv, env, cpu)
            procs.append(proc)
            try:
                await wait_http(f"http://127.0.0.1:{port}/readyz")
                url = f"http://127.0.0.1:{port}"
                if collector_paused:  # as in a collector outage: clicks wait in the spool, shipped after
                    collector.send_signal(signal.SIGSTOP)
                target = half_of / 2 if half_of else None
                try:
                    result = await measure(name, url, [proc.pid], token_files[campaign_key], args, client_cpu, target)
                finally:
                    collector.send_signal(signal.SIGCONT)
            finally:
                await stop(proc)  # drains: ships what it can, the rest stays in the spool
            rows = await count_arrived(pg.dsn, campaigns[campaign_key], result.answered, 0)
            if rows < result.answered:  # whatever was left: a restart ships it, as in production
                proc = await start(argv, env, cpu)
                procs.append(proc)
                rows = await count_arrived(pg.dsn, campaigns[campaign_key], result.answered)
                await stop(proc)
            result.rows = rows
            result.clicks_lost = max(0, result.answered - rows)
            return result

        port = free_port()
        peer = await server(
            "peers' design: INSERT per click",
            [
                sys.executable,
                "-m",
                "loadtests.baselines",
                "peer",
                "--port",
                str(port),
                "--database-url",
                pg.dsn,
                "--data-dir",
                str(data),
            ],
            port,
            "/",
            server_cpu,
        )
        peer.rows = await rows_for(pg.dsn, campaigns["peer"])
        peer.clicks_lost = max(0, peer.answered - peer.rows)
        results.append(peer)
        ingest_result = await ingest_ratio(pg.dsn, args.ingest_rows)
        # The edges ship every click to the collector as they run. Collectors run on machines of their own in
        # production; here they would take CPU from wrk (or from the edge). So for the edge runs the collector
        # and PostgreSQL share wrk's core at the lowest priority: the edge keeps its core, its shipper
        # included, wrk keeps what it needs, and ingest takes what is left. Its backlog drains afterwards
        # and every click is checked.
        if client_cpu is not None:
            assert pg.process is not None
            background([collector.pid, pg.process.pid], client_cpu)
            notes.append(
                f"edge runs: the collector and PostgreSQL shared wrk's CPU {client_cpu} at nice 19; "
                "clicks they had not ingested by the end of a run drained afterwards and were counted"
            )
        # Two views of one worker. With the collector paused for the measured seconds the edge does all of its
        # request path (verify, spool, metrics, client address) and its shipper waits, as in a collector
        # outage; the clicks ship when it resumes and are counted. Shipping live, on this machine the
        # collector and PostgreSQL share the load generator's core, which costs throughput both sides show
        # as idle time (the README says what was measured).
        one = await edge("clickedge edge, 1 worker", 1, "edge1", server_cpu, collector_paused=True)
        results.append(one)
        results.append(await edge("clickedge edge, 1 worker, shipping live", 1, "edgeLive", server_cpu))
        results.append(
            await edge(
                "clickedge edge, 1 worker, at half of that",
                1,
                "edgeHalf",
                server_cpu,
                one.requests_per_s,
                collector_paused=True,
            )
        )
        if cores >= 4:
            results.append(
                await edge(f"clickedge edge, {cores - 1} workers", cores - 1, "edgeN", None, collector_paused=True)
            )
        else:
            # What a small machine allows: two workers sharing the one server core. Scaling needs idle cores;
            # this shows what the workers' machinery (supervisor, SO_REUSEPORT) costs.
            results.append(
                await edge("clickedge edge, 2 workers on that one core", 2, "edgeN", server_cpu, collector_paused=True)
            )
            notes.append(f"{cores} cores: wrk needs one, so worker scaling across cores cannot be measured here")
        for r in results:
            r.ratios["vs_bare"] = round(r.requests_per_s / bare.requests_per_s, 3)
            if nginx is not None:
                r.ratios["vs_nginx"] = round(r.requests_per_s / nginx.requests_per_s, 3)
            r.ratios["vs_peer"] = round(r.requests_per_s / peer.requests_per_s, 2)
    finally:
        for proc in procs:
            await stop(proc)
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "machine": {"cores": cores, "cpu": _cpu_model(), "python": sys.version.split()[0]},
        "settings": {"duration_s": args.duration, "connections": args.connections, "tokens": args.tokens},
        "results": [asdict(r) for r in results],
        "ingest": ingest_result,
        "token_decode": decode_result,
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
        f"{'configuration':<44} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU %':>6} {'RSS MB':>7} "
        f"{'vs bare':>8} {'vs nginx':>9} {'vs peer':>8} {'lost':>5}",
    ]
    for r in report["results"]:
        lost = "" if r["clicks_lost"] is None else str(r["clicks_lost"])
        ratios = r["ratios"]
        lines.append(
            f"{r['name']:<44} {r['requests_per_s']:>9,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['cpu_pct']:>6.0f} {r['rss_mb'] or 0:>7.1f} {ratios.get('vs_bare', 0):>8.3f} "
            f"{ratios.get('vs_nginx', 0):>9.3f} {ratios.get('vs_peer', 0):>8.2f} {lost:>5}"
        )
    ing = report["ingest"]
    lines.append(
        f"collector ingest {ing['ingest_rows_per_s']:,.0f} rows/s vs raw binary COPY {ing['copy_rows_per_s']:,.0f} "
        f"rows/s (asyncpg records): ratio {ing['ratio']:.2f}; vs {ing['copy_encoded_rows_per_s']:,.0f} rows/s "
        f"(COPY with the collector's encoder): ratio {ing['ratio_same_encoder']:.2f}"
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
