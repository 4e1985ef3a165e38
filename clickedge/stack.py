"""`clickedge up`: the whole stack on one machine, started in order and stopped in reverse."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from clickedge.pgembed import EmbeddedPostgres, free_port
from clickedge.supervise import Child, Supervisor, check_port_free
from collector import apikeys, sessions
from collector.database import connect
from collector.schema import migrate_dsn
from common import settings as s
from common.files import write_private
from common.process import install_stop_handlers
from edge.config import EdgeConfig
from links import keys
from links.token import LINK_PATH

log = logging.getLogger("clickedge.up")
PUBLIC_URL_FILE = "public.url"  # the base URL of the links `up` serves: `mint` and `rewrite` use it
COLLECTOR_URL_FILE = "collector.url"  # where `up` serves the collector: `login-url` prints sign-in URLs on it
DATABASE_URL_FILE = "database.url"  # the DSN of the database `up` runs, password included (mode 0600)
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"  # where links point when nothing says otherwise


@dataclass(frozen=True)
class UpConfig:
    data_dir: Path = s.data_dir_setting("directory for keys, secrets and the embedded database")
    edge_port: int = s.setting(8080, flag="--edge-port", env="CLICKEDGE_EDGE_PORT", parse=s.port, help="edge HTTP port")
    collector_port: int = s.setting(
        8081,
        flag="--collector-port",
        env="CLICKEDGE_COLLECTOR_PORT",
        parse=s.port,
        help="collector HTTP port",
    )
    workers: int = s.setting(
        1, flag="--workers", env="CLICKEDGE_WORKERS", parse=s.positive_int, help="edge worker processes"
    )
    database_url: str = s.database_url_setting(
        "use this PostgreSQL instead of the embedded one", "none: an embedded PostgreSQL in DATA_DIR/pg"
    )
    pg_port: int = s.setting(
        0,
        flag="--pg-port",
        env="CLICKEDGE_PG_PORT",
        parse=s.port,
        help="port of the embedded PostgreSQL (0: any free port)",
    )
    public_url: str = s.public_url_setting("base URL of tracked links", default_text="http://127.0.0.1:EDGE_PORT")
    watchdog_timeout: float = s.watchdog_setting()
    log_level: str = s.log_level_setting()
    log_format: str = s.log_format_setting("text")


def ensure_ingest_secret(data_dir: Path) -> str:
    path = data_dir / "ingest.secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    write_private(path, secret + "\n")
    return secret


async def wait_ready(url: str, child: Child, *, processes: int = 1, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200 from ``processes`` distinct processes (edge workers say which pid
    answered on /healthz), failing at once if the child exits."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        if child.restarts or (child.process and child.process.returncode is not None):
            raise s.ConfigError(f"{child.name} exited during start-up; see its messages above")
        try:
            # A new connection each time, so SO_REUSEPORT can hand it to any of the workers.
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url) as resp,
            ):
                if resp.status == 200:
                    seen.add((await resp.text()).strip())
                    if len(seen) >= processes:
                        return
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        await asyncio.sleep(0.05)  # polling a starting service, with a deadline
    raise s.ConfigError(f"{child.name} did not become ready at {url} within {timeout:.0f}s")


@contextmanager
def terminal_foreground() -> Iterator[None]:
    """Take the terminal's foreground for the stack while it runs, then hand it back.

    Run by `make up`, we share make's process group, so a Ctrl-C would interrupt make as well, and make
    always reports an interrupted recipe as a failure. Leading our own foreground group (as a shell does
    for a job) lets Ctrl-C reach only us: we stop the stack in order and `make up` exits with our 0.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        yield  # no controlling terminal: signals come from a supervisor, not a keyboard
        return
    try:
        original = os.tcgetpgrp(fd)
        if original != os.getpgrp() or os.getpgrp() == os.getpid():
            yield  # in the background, or already leading our own group
            return
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # changing the foreground from a new group
        try:
            os.setpgid(0, 0)
            os.tcsetpgrp(fd, os.getpgrp())
            try:
                yield
            finally:
                os.tcsetpgrp(fd, original)
        finally:
            signal.signal(signal.SIGTTOU, previous)
    finally:
        os.close(fd)


async def up(config: UpConfig, config_file: s.ConfigFile | None = None) -> int:
    """Run the stack; ``config_file`` (read by its absolute path) is passed on to the edge and the collector."""
    with terminal_foreground():
        return await _up(config, config_file)


@dataclass(frozen=True)
class _Local:
    """What `up` keeps in its data dir: the directory, the link keys, the ingest secret, the public URL."""

    data_dir: Path
    ring: keys.KeyRing
    secret: str
    public_url: str


async def _up(config: UpConfig, config_file: s.ConfigFile | None) -> int:
    stop = asyncio.Event()
    supervisor = Supervisor(watchdog_timeout=config.watchdog_timeout)
    pg: list[EmbeddedPostgres] = []  # the embedded database, once started

    def force() -> None:  # a second Ctrl-C: nothing we started may outlive us
        supervisor.kill_all()
        for db in pg:
            db.kill_now()

    install_stop_handlers(stop, on_force=force)
    for port in (config.edge_port, config.collector_port, config.pg_port):
        if port:
            check_port_free("127.0.0.1", port)
    local = _prepare_data_dir(config)
    dsn = config.database_url
    if dsn:
        s.check_dsn(dsn)
    else:
        pg.append(await _start_embedded(config, local.data_dir))
        dsn = pg[0].dsn
    try:
        await migrate_dsn(dsn)
        admin_key = await ensure_admin_key(dsn, local.data_dir)
        env = _service_env(config, config_file, dsn, local.secret)
        collector = Child("collector", _collector_argv(config, local), env)
        await supervisor.start(collector)
        await wait_ready(f"http://127.0.0.1:{config.collector_port}/readyz", collector)
        edge = Child("edge", _edge_argv(config, config_file, local), env)
        await supervisor.start(edge)
        await wait_ready(f"http://127.0.0.1:{config.edge_port}/healthz", edge, processes=config.workers)
        await wait_ready(f"http://127.0.0.1:{config.edge_port}/readyz", edge)
        sample = local.ring.codec().mint(
            "https://example.com/?utm_source=clickedge#welcome",
            campaign_id=1,
            link_id=1,
            contact_id=1,
            sent_at=int(time.time()),
        )
        where = f"   (with password: {local.data_dir / DATABASE_URL_FILE})" if pg else ""
        link = f"{local.public_url}{LINK_PATH}{sample}"
        sign_in = await sign_in_url(dsn, f"http://127.0.0.1:{config.collector_port}")
        print(_banner(s.redact_dsn(dsn) + where, config, local.public_url, link, admin_key, sign_in), flush=True)
        return await _until_stopped(supervisor, stop)
    finally:
        log.info("stopping: edge, then collector, then database")
        await supervisor.stop_all(timeout=30)
        for db in pg:
            await asyncio.to_thread(db.stop)
        log.info("stopped")


def _prepare_data_dir(config: UpConfig) -> _Local:
    """The data dir, made if needed, with its keys and ingest secret; the public URL recorded in it."""
    data_dir = config.data_dir.resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise s.ConfigError(f"--data-dir {data_dir} is a file, not a directory")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ring = keys.load_or_create(data_dir / "keys.json")
    secret = ensure_ingest_secret(data_dir)
    public_url = config.public_url or f"http://127.0.0.1:{config.edge_port}"
    write_private(data_dir / PUBLIC_URL_FILE, public_url + "\n")  # so `mint` and `rewrite` make links to it
    write_private(data_dir / COLLECTOR_URL_FILE, f"http://127.0.0.1:{config.collector_port}\n")
    return _Local(data_dir, ring, secret, public_url)


async def _start_embedded(config: UpConfig, data_dir: Path) -> EmbeddedPostgres:
    pg = EmbeddedPostgres(data_dir / "pg", config.pg_port or free_port())
    await asyncio.to_thread(pg.init)
    await pg.start()
    write_private(data_dir / DATABASE_URL_FILE, pg.dsn + "\n")
    return pg


def _service_env(config: UpConfig, config_file: s.ConfigFile | None, dsn: str, secret: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CLICKEDGE_DATABASE_URL": dsn,
        "CLICKEDGE_INGEST_SECRET": secret,
        # One stack, one way of logging: up's own log settings ([up] or the top level of the file)
        # apply to the edge and the collector too. Their other settings come from their tables.
        "CLICKEDGE_LOG_LEVEL": config.log_level,
        "CLICKEDGE_LOG_FORMAT": config.log_format,
        # And one watchdog: the edge's own supervisor (--workers N) watches its workers the same way.
        "CLICKEDGE_WATCHDOG_TIMEOUT": str(config.watchdog_timeout),
    }
    if config_file is not None:
        env[s.CONFIG_ENV] = str(config_file.path)
    return env


def _collector_argv(config: UpConfig, local: _Local) -> list[str]:
    return [
        *[sys.executable, "-m", "clickedge", "collector", "--collector-port", str(config.collector_port)],
        *["--data-dir", str(local.data_dir), "--public-url", local.public_url],
    ]


def _edge_argv(config: UpConfig, config_file: s.ConfigFile | None, local: _Local) -> list[str]:
    argv = [
        *[sys.executable, "-m", "clickedge", "edge", "--edge-port", str(config.edge_port)],
        *["--workers", str(config.workers), "--data-dir", str(local.data_dir)],
        *["--collector-url", f"http://127.0.0.1:{config.collector_port}"],
    ]
    if "CLICKEDGE_DRAIN_GRACE" not in os.environ and not _file_sets(config_file, "edge", "drain_grace"):
        argv += ["--drain-grace", "0"]  # no load balancer to tell locally: stop at once
    return argv


async def _until_stopped(supervisor: Supervisor, stop: asyncio.Event) -> int:
    """Serve until asked to stop (0) or a service fails for good (1)."""
    failed = asyncio.create_task(supervisor.failed.wait())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    stopped.cancel()
    return 1 if supervisor.failed.is_set() and not stop.is_set() else 0


def _file_sets(config_file: s.ConfigFile | None, section: str, name: str) -> bool:
    """Whether the configuration file sets ``name`` for the edge (in its table or at the top level)."""
    return config_file is not None and name in config_file.values(section, EdgeConfig)


async def ensure_admin_key(dsn: str, data_dir: Path) -> Path:
    """A write-scoped admin API key for local use, made on the first `up` and kept in the data dir."""
    path = data_dir / "admin.key"
    if path.exists():
        return path
    conn = await connect(dsn)
    try:
        key = await apikeys.create(conn, "clickedge up (local admin)", ["write"])
    finally:
        await conn.close()
    write_private(path, key + "\n")
    return path


async def sign_in_url(dsn: str, collector_url: str, next_path: str | None = None, scope: str = "write") -> str:
    """A one-time URL that signs a browser in to the report pages (spent on first use, valid 10 minutes)."""
    conn = await connect(dsn)
    try:
        token, _ = await sessions.create_sign_in(conn, [scope], next_path)
    finally:
        await conn.close()
    return f"{collector_url.rstrip('/')}/ui/login?token={token}"


def _banner(database: str, config: UpConfig, public_url: str, sample: str, admin_key: Path, sign_in: str) -> str:
    edge = f"http://127.0.0.1:{config.edge_port}"
    collector = f"http://127.0.0.1:{config.collector_port}"
    return "\n".join(
        [
            "",
            "Clickedge is up.",
            f"  database       {database}",
            f"  edge           {edge}   (tracked links on {public_url}/c/...)",
            f"  collector      {collector}",
            f"  metrics        {edge}/metrics  {collector}/metrics",
            f"  admin API      {collector}/openapi.json   (API key in {admin_key})",
            f"  report pages   {sign_in}",
            "                 (a one-time sign-in URL, valid 10 minutes; `clickedge login-url` prints another)",
            f"  sample link    {sample}",
            "",
            f"  try:           curl -i '{sample}'",
            "  stop:          Ctrl-C (or SIGTERM)",
            "",
        ]
    )
