"""What the harness and the benchmarks that drive real processes share: a throwaway stack (an embedded
PostgreSQL with the schema, a data dir with a key, token files), the processes started for a run and
stopped with it, the commands that start an edge and a collector, wrk and its summary, the CPU and
memory of processes as /proc counts them, and the check that every answered click reached PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import asyncpg
import orjson

from clickedge.pgembed import EmbeddedPostgres, free_port
from collector.schema import migrate_dsn
from links import keys
from loadtests.make_tokens import token_paths

HERE = Path(__file__).resolve().parent
SECRET = "loadtest-ingest-secret-0123456789"  # noqa: S105 - a throwaway stack's
TOKENS = 50_000


def local(port: int, path: str = "") -> str:
    """The URL of a server of this run: every one listens on loopback."""
    return f"http://127.0.0.1:{port}{path}"


# Processes: CPU, memory, placement.


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
    place(pids, {cpu}, 19)


def place(pids: list[int], cpus: set[int], nice: int) -> None:
    """Every thread of these processes and their descendants (those started later inherit it): onto ``cpus``,
    at ``nice``. Lowering a nice value needs root (or CAP_SYS_NICE); without it the value stays."""
    for pid in {p for root in pids for p in (root, *_descendants(root))}:
        try:
            tids = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
        except FileNotFoundError:  # a backend that exited since it was listed
            continue
        for tid in tids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(tid, cpus)
                os.setpriority(os.PRIO_PROCESS, tid, nice)


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


# Processes: starting and stopping.


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


class Processes:
    """The processes one run starts: however the run ends, each is stopped, in the order they started."""

    def __init__(self) -> None:
        self._procs: list[asyncio.subprocess.Process] = []

    async def start(
        self, argv: list[str], env: dict[str, str] | None = None, cpu: int | None = None
    ) -> asyncio.subprocess.Process:
        proc = await start(argv, env, cpu)
        self._procs.append(proc)
        return proc

    async def serve(
        self, argv: list[str], env: dict[str, str] | None, ready_url: str, cpu: int | None = None
    ) -> asyncio.subprocess.Process:
        """Start a server and return once ``ready_url`` answers."""
        proc = await self.start(argv, env, cpu)
        await wait_http(ready_url)
        return proc

    async def __aenter__(self) -> Processes:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self._procs:
            await stop(proc)


def collector_command(port: int, data: Path) -> list[str]:
    return [sys.executable, "-m", "clickedge", "collector", "--collector-port", str(port), "--data-dir", str(data)]


def edge_command(port: int, data: Path, collector_port: int, *options: str) -> list[str]:
    """One edge (with ``--workers``, several) shipping to the collector on ``collector_port``."""
    return [
        *[sys.executable, "-m", "clickedge", "edge", "--edge-port", str(port), "--data-dir", str(data)],
        *["--collector-url", f"http://127.0.0.1:{collector_port}", "--drain-grace", "0", *options],
    ]


# wrk.


@dataclass(frozen=True)
class WrkRun:
    """wrk's summary, as clicks.lua prints it."""

    requests: int
    seconds: float
    errors: int  # connect, read, write and timeout errors, and answers with an error status
    answered: int  # requests answered without an error status: each should be a click in PostgreSQL
    p50_ms: float
    p99_ms: float

    @classmethod
    def parse(cls, summary: dict[str, Any]) -> WrkRun:
        errors = summary["connect"] + summary["read"] + summary["write"] + summary["status"] + summary["timeout"]
        return cls(
            requests=summary["requests"],
            seconds=summary["duration_us"] / 1e6,
            errors=errors,
            answered=summary["requests"] - summary["status"],
            p50_ms=summary["p50_us"] / 1000,
            p99_ms=summary["p99_us"] / 1000,
        )

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def checked(self, rows: int) -> dict[str, int]:
        """The answered clicks against the rows PostgreSQL holds for them: none may be lost."""
        return {
            "answered": self.answered,
            "rows": rows,
            "clicks_lost": max(0, self.answered - rows),
            "errors": self.errors,
        }


async def wrk(
    url: str, tokens: Path, duration: float, connections: int, cpu: int | None, delay_ms: float | None = None
) -> WrkRun:
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
            return WrkRun.parse(orjson.loads(line[len("WRK_JSON ") :]))
    raise RuntimeError(f"wrk failed: {out.decode()[-500:]} {err.decode()[-500:]}")


# The stack: PostgreSQL, a data dir, tokens.


@dataclass
class Stack:
    """A throwaway stack's parts: an embedded PostgreSQL with the schema, a data dir with a key, and the
    environment every process of the run gets."""

    root: Path
    pg: EmbeddedPostgres
    data: Path
    env: dict[str, str]

    def token_file(self, campaign: int, count: int = TOKENS, name: str = "tokens") -> Path:
        """A file of ``count`` distinct valid tracked-link paths for ``campaign``, for clicks.lua."""
        path = self.root / f"{name}.txt"
        write_tokens(self.data, path, campaign, count)
        return path


@contextlib.asynccontextmanager
async def stack(prefix: str, *, log_level: str = "ERROR") -> AsyncIterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(root / "pg", free_port())
    pg.init()
    await pg.start()
    try:
        await migrate_dsn(pg.dsn)
        data = root / "data"
        keys.load_or_create(data / "keys.json")
        env = {"CLICKEDGE_INGEST_SECRET": SECRET, "CLICKEDGE_DATABASE_URL": pg.dsn, "CLICKEDGE_LOG_LEVEL": log_level}
        yield Stack(root, pg, data, env)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def write_tokens(data_dir: Path, path: Path, campaign: int, count: int) -> None:
    codec = keys.load(data_dir / "keys.json").codec()
    with open(path, "w") as f:
        f.writelines(token_paths(codec, campaign, count))


# Every answered click must be a row.


async def rows_for(dsn: str, campaign: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        # Stored: settled, or waiting for its verdict (the collector's hold); a click is counted once.
        return int(
            await conn.fetchval(
                """SELECT count(*) FROM (SELECT event_id FROM clicks WHERE campaign_id = $1
                                         UNION SELECT event_id FROM pending_clicks WHERE campaign_id = $1) stored""",
                campaign,
            )
        )
    finally:
        await conn.close()


async def settled(dsn: str, timeout: float) -> bool:
    """Wait until the collector has judged every click it holds (``pending_clicks`` empty), or the deadline."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(dsn)
    try:
        while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pending_clicks)"):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)  # polling the collector's settling, with a deadline
        return True
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


async def drain(dsn: str, campaign: int, answered: int, timeout: float) -> tuple[int, float]:
    """``count_arrived``, and the seconds the backlog took to arrive."""
    started = time.monotonic()
    rows = await count_arrived(dsn, campaign, answered, timeout)
    return rows, time.monotonic() - started
