"""`clickedge up` as a user runs it: the whole stack starts, takes a click, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp
import asyncpg
import pytest

from clickedge.pgembed import free_port
from collector.agents import current_version
from common.settings import redact_dsn
from tests.clickedge.test_cli import clickedge as clickedge_cli
from tests.conftest import eventually

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Each test's data dir, outside pytest's own temporary root: as root, `up` runs the embedded PostgreSQL
    as a service user who must be able to traverse to it, and any pytest session that starts (another run
    on the same machine) resets that root to mode 0700."""
    path = Path(tempfile.mkdtemp(prefix="clickedge-up-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Stack:
    def __init__(self, proc: asyncio.subprocess.Process, banner: dict[str, str], output: str) -> None:
        self.proc = proc
        self.banner = banner
        self.output = output  # everything printed up to the banner's last line


BROWSER = {
    "User-Agent": f"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/{current_version('Firefox', time.time())}.0",
    "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
    "Accept-Language": "en",
}


async def start_up(data_dir: Path, env: dict[str, str], ports: tuple[int, int] | None = None, *options: str) -> Stack:
    edge_port, collector_port = ports or (free_port(), free_port())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clickedge",
        "up",
        "--data-dir",
        str(data_dir),
        "--edge-port",
        str(edge_port),
        "--collector-port",
        str(collector_port),
        *options,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    banner: dict[str, str] = {}
    output = []
    async with asyncio.timeout(60):
        while "sample link" not in banner:
            line = (await proc.stdout.readline()).decode()
            assert line, f"clickedge up exited early with {await proc.wait()}"
            output.append(line)
            key, _, value = line.strip().partition("  ")
            if value:
                banner[key.strip()] = value.strip()
    return Stack(proc, banner, "".join(output))


async def stop(stack: Stack) -> int:
    stack.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(60):
        return await stack.proc.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_up_runs_the_stack_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CLICKEDGE_DATABASE_URL"}
    env["CLICKEDGE_COLLECTOR_VERDICT_HOLD"] = "0.5"  # the click below counts once its verdict is final
    data_dir = tmp_path / "state"
    ports = (free_port(), free_port())
    stack = await start_up(data_dir, env, ports)
    try:
        shown = stack.banner["database"]
        assert shown.startswith("postgresql://postgres:***@127.0.0.1:")  # the password is not printed...
        dsn = (data_dir / "database.url").read_text().strip()  # ...it is in a private file
        assert stat.S_IMODE((data_dir / "database.url").stat().st_mode) == 0o600
        assert shown.split()[0] == redact_dsn(dsn)
        sample = stack.banner["sample link"]
        edge_url = stack.banner["edge"].split()[0]
        assert sample.startswith(edge_url + "/c/")
        assert stack.banner["metrics"].split() == [
            f"{edge_url}/metrics",
            f"{stack.banner['collector']}/metrics",
        ]
        async with aiohttp.ClientSession() as http:
            # A person's click (a browser's navigation; a script's would be counted apart from people's).
            async with http.get(sample, headers=BROWSER, allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "https://example.com/?utm_source=clickedge#welcome"
            for url in stack.banner["metrics"].split():
                assert (await http.get(url)).status == 200
        conn = await asyncpg.connect(dsn)
        try:

            async def clicked() -> int:
                return int(await conn.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = 1"))

            assert await eventually(clicked, timeout=20) == 1
            assert await conn.fetchval("SELECT verdict FROM clicks WHERE campaign_id = 1") == "human"
        finally:
            await conn.close()
        # The admin API works with the key `up` made, and its report counts the click.
        admin_key = (data_dir / "admin.key").read_text().strip()
        assert stat.S_IMODE((data_dir / "admin.key").stat().st_mode) == 0o600
        assert str(data_dir / "admin.key") in stack.banner["admin API"]
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {admin_key}"}
            async with http.get(f"{stack.banner['collector']}/v1/reports/campaigns/1", headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["clicks"] == 1
        # The banner's one-time URL signs a browser in to the report pages, once.
        sign_in = stack.banner["report pages"]
        assert sign_in.startswith(f"{stack.banner['collector']}/ui/login?token=")
        jar = aiohttp.CookieJar(unsafe=True)  # unsafe: keeps the cookie of a server named by its IP address
        async with aiohttp.ClientSession(cookie_jar=jar) as browser, browser.get(sign_in) as resp:
            assert resp.status == 200 and str(resp.url) == f"{stack.banner['collector']}/ui/"
            assert 'href="/ui/campaigns/1"' in await resp.text()
        async with aiohttp.ClientSession() as browser, browser.get(sign_in) as resp:
            assert resp.status == 401
        made = await asyncio.to_thread(clickedge_cli, "login-url", "--data-dir", str(data_dir), "--next", "/ui/status")
        assert made.stdout.startswith(f"{stack.banner['collector']}/ui/login?token="), made.stderr
        postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    finally:
        code = await stop(stack)
    assert code == 0
    assert not pid_alive(postmaster), "PostgreSQL still running after up stopped"

    # Again: the same keys (the old link still redirects) and the same data (the click is still there).
    keys_before = (data_dir / "keys.json").read_text()
    again = await start_up(data_dir, env, ports)
    try:
        assert (data_dir / "keys.json").read_text() == keys_before
        async with aiohttp.ClientSession() as http, http.get(sample, allow_redirects=False) as resp:
            assert resp.status == 302
        conn = await asyncpg.connect((data_dir / "database.url").read_text().strip())
        try:

            async def clicked_twice() -> bool:
                return int(await conn.fetchval("SELECT count(*) FROM clicks WHERE campaign_id = 1")) == 2

            assert await eventually(clicked_twice, timeout=10)
        finally:
            await conn.close()
    finally:
        assert await stop(again) == 0


async def test_up_uses_an_existing_database_and_restarts_a_dead_service(tmp_path: Path, database_url: str) -> None:
    env = {**os.environ, "CLICKEDGE_DATABASE_URL": database_url}
    stack = await start_up(tmp_path / "state", env)
    try:
        assert stack.banner["database"] == redact_dsn(database_url)
        assert not (tmp_path / "state" / "pg").exists()
        collector_url = stack.banner["collector"]
        before = children(stack.proc.pid)
        async with aiohttp.ClientSession() as http, http.get(f"{collector_url}/metrics") as resp:
            assert "clickedge_collector_restarts 0.0" in await resp.text()
        victim = next(pid for pid in before if "\0collector\0" in cmdline(pid))  # not the edge's --collector-url
        os.kill(victim, signal.SIGKILL)

        async def restarted() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{collector_url}/metrics") as resp:
                    return "clickedge_collector_restarts 1.0" in await resp.text()
            except aiohttp.ClientError:
                return False

        await eventually(restarted, timeout=30)
        assert victim not in children(stack.proc.pid)
    finally:
        assert await stop(stack) == 0


async def test_ctrl_c_at_the_terminal_stops_make_up_with_exit_code_0(tmp_path: Path, database_url: str) -> None:
    # `script` gives `make up` a real terminal; the byte 0x03 typed into it is Ctrl-C, which the terminal
    # turns into SIGINT for its foreground process group, exactly as for a user at a keyboard.
    edge_port, collector_port = free_port(), free_port()
    args = f"--data-dir {tmp_path / 'state'} --edge-port {edge_port} --collector-port {collector_port}"
    proc = await asyncio.create_subprocess_exec(
        "script",
        "-qfec",
        f'make --no-print-directory up ARGS="{args}"',
        "/dev/null",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "CLICKEDGE_DATABASE_URL": database_url},
    )
    assert proc.stdin is not None and proc.stdout is not None
    output = b""
    async with asyncio.timeout(60):
        while b"stop:" not in output:
            chunk = await proc.stdout.read(4096)
            assert chunk, f"make up ended early: {output.decode(errors='replace')}"
            output += chunk
    proc.stdin.write(b"\x03")
    await proc.stdin.drain()
    async with asyncio.timeout(60):
        rest, _ = await proc.communicate()
    assert proc.returncode == 0, (output + rest).decode(errors="replace")[-2000:]
    assert b"Interrupt" not in rest


async def test_a_second_ctrl_c_stops_everything_at_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CLICKEDGE_DATABASE_URL"}
    env["CLICKEDGE_DRAIN_GRACE"] = "60"  # a long, polite stop: the second Ctrl-C cuts it short
    data_dir = tmp_path / "state"
    stack = await start_up(data_dir, env)
    ours = children(stack.proc.pid)
    ours.add(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]))
    assert len(ours) == 3  # PostgreSQL, collector, edge
    stack.proc.send_signal(signal.SIGINT)
    edge_url = stack.banner["edge"].split()[0]

    async def draining() -> bool:
        async with aiohttp.ClientSession() as http, http.get(f"{edge_url}/readyz") as resp:
            return resp.status == 503

    await eventually(draining, timeout=15)  # the first Ctrl-C is being handled
    stack.proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        assert await stack.proc.wait() == 128 + signal.SIGINT

    async def all_gone() -> bool:
        return not any(pid_alive(pid) for pid in ours)

    await eventually(all_gone, timeout=15)
    # ...and the next start is not blocked by anything left behind.
    env.pop("CLICKEDGE_DRAIN_GRACE")
    again = await start_up(data_dir, env)
    assert await stop(again) == 0


async def test_nothing_outlives_a_killed_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CLICKEDGE_DATABASE_URL"}
    data_dir = tmp_path / "state"
    stack = await start_up(data_dir, env)
    ours = children(stack.proc.pid)
    ours.add(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]))
    stack.proc.kill()  # no chance to stop anything itself
    await stack.proc.wait()

    async def all_gone() -> bool:
        return not any(pid_alive(pid) for pid in ours)

    await eventually(all_gone, timeout=30)


async def test_a_busy_port_stops_up_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clickedge",
            "up",
            "--data-dir",
            str(tmp_path),
            "--edge-port",
            str(port),
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text()


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


async def test_up_passes_the_configuration_file_on_to_the_edge_and_the_collector(tmp_path: Path) -> None:
    metrics_port, collector_port = free_port(), free_port()
    config = tmp_path / "clickedge.toml"
    config.write_text(f"[edge]\nmetrics_port = {metrics_port}\n[collector]\nmax_body_bytes = 1000\n")
    env = {k: v for k, v in os.environ.items() if k != "CLICKEDGE_DATABASE_URL"}
    # --config, not CLICKEDGE_CONFIG (which the children would inherit anyway): up passes the file on.
    stack = await start_up(tmp_path / "state", env, (free_port(), collector_port), "--config", str(config))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200  # [edge] metrics_port reached the edge
                assert 'clickedge_edge_requests_total{outcome="redirect",worker="0"}' in await resp.text()
            secret = (tmp_path / "state" / "ingest.secret").read_text().strip()
            headers = {"Authorization": f"Bearer {secret}"}
            async with http.post(
                f"http://127.0.0.1:{collector_port}/v1/clicks", data=b"x" * 2000, headers=headers
            ) as r:
                assert r.status == 413  # [collector] max_body_bytes reached the collector
                assert "larger than 1000 bytes" in (await r.json())["error"]
    finally:
        assert await stop(stack) == 0


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/clicks", "postgresql://app:***@db:5432/clicks"),
        ("postgresql://app@db/clicks?password=s3cret", "postgresql://app@db/clicks?password=***"),
        (
            "postgres://db/clicks?sslmode=verify-full&sslpassword=k3y&PASSWORD=s3cret&application_name=x",
            "postgres://db/clicks?sslmode=verify-full&sslpassword=***&PASSWORD=***&application_name=x",
        ),
        ("postgresql://db/clicks?SslPassword=k3y", "postgresql://db/clicks?SslPassword=***"),
        ("postgresql://db/clicks?pass%77ord=s3cret", "postgresql://db/clicks?pass%77ord=***"),  # "password"
        ("postgresql://app:p@ss:w@rd@db/clicks", "postgresql://app:***@db/clicks"),  # an unencoded "@"
        (
            "postgresql://app:s3cret@h1:5432,h2:5433/clicks?password=s3cret",
            "postgresql://app:***@h1:5432,h2:5433/clicks?password=***",
        ),
        ("postgresql:///clicks?host=/run/pg&password=s3cret", "postgresql:///clicks?host=/run/pg&password=***"),
        ("postgresql://app@db/clicks?application_name=pw", "postgresql://app@db/clicks?application_name=pw"),
        ("host=db password=s3cret", "<redacted>"),  # not a URL: nothing of it is shown
    ],
)
def test_redact_dsn_hides_every_password(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert "s3cret" not in redact_dsn(dsn) and "k3y" not in redact_dsn(dsn)


async def test_up_never_prints_a_password_given_as_a_query_parameter(tmp_path: Path, database_url: str) -> None:
    parts = urlsplit(database_url)
    password = parts.password
    assert password
    dsn = f"postgresql://{parts.username}@{parts.hostname}:{parts.port}{parts.path}?password={quote(password)}"
    stack = await start_up(tmp_path / "state", {**os.environ, "CLICKEDGE_DATABASE_URL": dsn})
    try:
        assert stack.banner["database"].startswith(f"postgresql://{parts.username}@{parts.hostname}:")
        assert "?password=***" in stack.banner["database"]
        assert password not in stack.output and quote(password) not in stack.output
    finally:
        assert await stop(stack) == 0


async def test_up_restarted_right_after_traffic_comes_up(tmp_path: Path, database_url: str) -> None:
    # The edge closes keep-alive connections when it stops, and the collector the edges': TIME-WAIT on both
    # ports. Nothing listens there; `up` must start again at once, on the same ports.
    ports = (free_port(), free_port())
    env = {**os.environ, "CLICKEDGE_DATABASE_URL": database_url}
    for _ in range(2):
        stack = await start_up(tmp_path, env, ports)
        async with aiohttp.ClientSession() as http:  # open while `up` stops: the edge closes it
            for _ in range(10):
                async with http.get(stack.banner["sample link"], allow_redirects=False) as resp:
                    assert resp.status == 302
            assert await stop(stack) == 0
