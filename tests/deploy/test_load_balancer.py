"""The shipped load balancer configurations, run for real in front of two edges on loopback.

deploy/haproxy/haproxy.cfg and deploy/nginx/clickedge.conf are read and only their addresses, ports and
paths rewritten (each rewrite must match, so a changed file cannot silently escape the test); health
checks, retries, keep-alive and X-Forwarded-For are the shipped ones. The load client connects from
127.0.0.2 and the balancer reaches the edges from 127.0.0.1, which the edges trust: every click row must
name 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime
import io
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clickedge.pgembed import free_port
from tests.conftest import eventually, require
from tests.faults.harness import CollectorProc, EdgeProc, kill_leftovers, send_once, tokens, wait_http

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
NGINX_CONF = ROOT / "deploy" / "nginx" / "clickedge.conf"
CLIENT_ADDR = "127.0.0.2"  # the load client's source address; the balancers reach the edges from 127.0.0.1
FORGED = "198.51.100.7"  # what a client claims in its own X-Forwarded-For: never believed
DRAIN_GRACE = 5.0  # the edge's default, which the HAProxy health-check timing is set against
HAPROXY_DOMAINS = ("links.alpha.example", "links.beta.example")
NGINX_DOMAINS = ("click.sender-one.example", "click.sender-two.example")


def program(name: str) -> str | None:
    """A system program; Debian puts these in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    return found


def rewrite(text: str, changes: list[tuple[str, str, int]]) -> str:
    """Replace each ``old`` (expected ``count`` times) with ``new``."""
    for old, new, count in changes:
        found = text.count(old)
        assert found == count, f"expected {old!r} {count} time(s) in the shipped config, found {found}"
        text = text.replace(old, new)
    return text


def make_certs(names: tuple[str, ...]) -> tuple[bytes, dict[str, tuple[bytes, bytes]]]:
    """A throwaway CA and, per name, a certificate (PEM) and key (PEM) signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clickedge test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaves = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        leaves[name] = (cert.public_bytes(serialization.Encoding.PEM), key_pem)
    return ca.public_bytes(serialization.Encoding.PEM), leaves


def haproxy_certs(directory: Path, names: tuple[str, ...]) -> bytes:
    """One PEM file per domain (certificate, then key) in ``directory``, as `crt <dir>/` loads them."""
    directory.mkdir()
    ca, leaves = make_certs(names)
    for name, (cert, key) in leaves.items():
        (directory / f"{name}.pem").write_bytes(cert + key)
    return ca


def letsencrypt_certs(live: Path, names: tuple[str, ...]) -> bytes:
    """certbot's layout: live/<name>/fullchain.pem and privkey.pem."""
    ca, leaves = make_certs(names)
    for name, (cert, key) in leaves.items():
        (live / name).mkdir(parents=True)
        (live / name / "fullchain.pem").write_bytes(cert + ca)
        (live / name / "privkey.pem").write_bytes(key)
    return ca


# --- processes ---------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A balancer process; its output goes to a file, shown when a test fails."""

    args: list[str]
    log: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its process group: nginx's workers too
        await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture
async def procs() -> AsyncIterator[list[Proc]]:
    """Balancers started by a test; they and every clickedge process are killed afterwards."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            await proc.stop()
        await kill_leftovers()


@dataclass
class Stack:
    collector: CollectorProc
    edges: dict[str, EdgeProc]


async def start_stack(database_url: str, data_dir: Path, tmp: Path) -> Stack:
    """A collector and two edges sharing keys and ingest secret, each edge with a spool of its own."""
    collector = CollectorProc(database_url)
    await collector.start()
    edges = {
        name: EdgeProc(
            data_dir,
            collector.port,
            "--spool-dir",
            str(tmp / f"spool-{name}"),
            "--trusted-proxies",
            "127.0.0.1/32",
            "--drain-grace",
            str(DRAIN_GRACE),
        )
        for name in ("edge1", "edge2")
    }
    for edge in edges.values():
        await edge.start()
    await wait_http(f"{collector.url}/readyz")
    for edge in edges.values():
        await wait_http(f"{edge.url}/readyz")
    return Stack(collector, edges)


# --- load ----------------------------------------------------------------------------------------------


@dataclass
class Load:
    answered: set[tuple[int, int]] = field(default_factory=set)
    attempted: set[tuple[int, int]] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    by_channel: Counter[str] = field(default_factory=Counter)


def token_stream(data_dir: Path, campaign_id: int) -> Iterator[tuple[tuple[int, int], str]]:
    """Distinct tokens, minted as they are needed."""
    first = 0
    while True:
        yield from tokens(data_dir, campaign_id, 500, first)
        first += 500


async def clicker(
    channel: str,
    base: str,
    work: Iterator[tuple[tuple[int, int], str]],
    stop: asyncio.Event,
    load: Load,
    *,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> None:
    """One recipient after another on one kept-alive connection from CLIENT_ADDR; every answer but a 302,
    and every error, is a failure. Each click is sent once: no retry hides a failure."""
    connector = aiohttp.TCPConnector(local_addr=(CLIENT_ADDR, 0), limit=1)
    timeout = aiohttp.ClientTimeout(total=10)
    # aiohttp would resend a request once when a kept-alive connection breaks: send_once makes that a failure.
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, middlewares=(send_once,)) as http:
        while not stop.is_set():
            key, token = next(work)
            load.attempted.add(key)
            try:
                async with http.get(
                    f"{base}/c/{token}",
                    allow_redirects=False,
                    headers={"X-Forwarded-For": FORGED},
                    ssl=tls or True,
                    server_hostname=server_name,
                ) as resp:
                    await resp.read()
                    if resp.status == 302:
                        load.answered.add(key)
                        load.by_channel[channel] += 1
                    else:
                        load.failures.append(f"{channel}: {resp.status} {(await resp.text())[:200]!r}")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                load.failures.append(f"{channel}: {exc!r}")


async def run_load(
    urls: dict[str, tuple[str, ssl.SSLContext | None, str | None]],
    work: Iterator[tuple[tuple[int, int], str]],
    stop: asyncio.Event,
    load: Load,
    *,
    per_channel: int,
) -> None:
    await asyncio.gather(
        *(
            clicker(channel, base, work, stop, load, tls=tls, server_name=name)
            for channel, (base, tls, name) in urls.items()
            for _ in range(per_channel)
        )
    )


async def assert_recorded(database_url: str, campaign_id: int, load: Load) -> None:
    """Every answered click reaches PostgreSQL (waiting for the edges to ship, with a deadline), once,
    with the address the balancer saw."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            found = await conn.fetch(  # settled or waiting for its verdict: stored either way
                """SELECT contact_id, link_id, host(client_ip) AS ip FROM (
                       SELECT event_id, contact_id, link_id, client_ip FROM clicks WHERE campaign_id = $1
                       UNION SELECT event_id, contact_id, link_id, client_ip FROM pending_clicks WHERE campaign_id = $1
                   ) stored""",
                campaign_id,
            )
            got = [(r["contact_id"], r["link_id"]) for r in found]
            if load.answered <= set(got) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)  # polling for the edges' shipping, with a deadline
    finally:
        await conn.close()
    missing = load.answered - set(got)
    assert not missing, f"{len(missing)} of {len(load.answered)} answered clicks never arrived: {sorted(missing)[:5]}"
    assert set(got) <= load.attempted, "rows for clicks that were never sent"
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} clicks were recorded twice (a retried click)"
    addresses = Counter(r["ip"] for r in found)
    assert set(addresses) == {CLIENT_ADDR}, f"client addresses recorded: {addresses}"


# --- HAProxy ---------------------------------------------------------------------------------------------


@dataclass
class HAProxy:
    proc: Proc
    http_port: int
    tls_port: int
    stats_port: int
    ca: bytes

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}"

    async def servers(self) -> dict[str, dict[str, str]]:
        """The edges' rows of HAProxy's statistics (status, hrsp_3xx, ...)."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"{self.stats_url}/stats;csv") as resp,
        ):
            text = await resp.text()
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "edges" and row["svname"] != "BACKEND"}

    async def status(self, server: str) -> str:
        return (await self.servers())[server]["status"]

    async def redirects(self, server: str) -> int:
        return int((await self.servers())[server]["hrsp_3xx"] or 0)

    async def is_up(self, server: str) -> bool:
        return await self.status(server) == "UP"

    async def is_down(self, server: str) -> bool:
        """Out of rotation: "DOWN", or "DOWN 1/2" (one good check on the way back)."""
        return (await self.status(server)).split()[0] == "DOWN"

    async def served_more(self, server: str, than: int) -> bool:
        return await self.redirects(server) > than


def haproxy_config(tmp: Path, edges: dict[str, int], ports: tuple[int, int, int], certs: Path) -> str:
    """deploy/haproxy/haproxy.cfg with loopback addresses and temporary paths; nothing else changed."""
    http_port, tls_port, stats_port = ports
    return rewrite(
        HAPROXY_CFG.read_text(),
        [
            # Logs to the test's output (state changes only: notice and above); no chroot, no user switch.
            ("    log /dev/log local0\n", "    log stderr format raw local0 notice\n", 1),
            ("    chroot /var/lib/haproxy\n", "", 1),
            ("    user haproxy\n", "", 1),
            ("    group haproxy\n", "", 1),
            ("stats socket /run/haproxy/admin.sock", f"stats socket {tmp / 'admin.sock'}", 1),
            ("    bind :80\n", f"    bind 127.0.0.1:{http_port}\n", 1),
            ("bind :443 ssl crt /etc/haproxy/certs/", f"bind 127.0.0.1:{tls_port} ssl crt {certs}/", 1),
            ("    bind :8404\n", f"    bind 127.0.0.1:{stats_port}\n", 1),
            ("server edge1 edge1:8080", f"server edge1 127.0.0.1:{edges['edge1']}", 1),
            ("server edge2 edge2:8080", f"server edge2 127.0.0.1:{edges['edge2']}", 1),
        ],
    )


async def start_haproxy(tmp: Path, stack: Stack, procs: list[Proc]) -> HAProxy:
    haproxy = program("haproxy")
    require(haproxy is not None, "haproxy (apt-get install haproxy)")
    assert haproxy is not None
    ports = (free_port(), free_port(), free_port())
    ca = haproxy_certs(tmp / "certs", HAPROXY_DOMAINS)
    config = tmp / "haproxy.cfg"
    config.write_text(haproxy_config(tmp, {n: e.port for n, e in stack.edges.items()}, ports, tmp / "certs"))
    # -db: stay in the foreground (the shipped file says `daemon`).
    proc = Proc([haproxy, "-db", "-f", str(config)], tmp / "haproxy.log")
    procs.append(proc)
    await proc.start()
    balancer = HAProxy(proc, *ports, ca)
    await wait_http(f"{balancer.stats_url}/stats")
    for name in stack.edges:
        await eventually(partial(balancer.is_up, name), timeout=10)
    return balancer


async def test_haproxy_rolling_restart_loses_no_click(
    database_url: str, data_dir: Path, campaign_id: int, tmp_path: Path, procs: list[Proc]
) -> None:
    """Both edges restarted in turn under load (plain HTTP and TLS for two domains, picked by SNI): HAProxy
    takes each out within its drain grace and back once ready, no request fails, and every answered
    click reaches PostgreSQL once, with the address HAProxy saw."""
    stack = await start_stack(database_url, data_dir, tmp_path)
    balancer = await start_haproxy(tmp_path, stack, procs)
    tls = ssl.create_default_context(cadata=balancer.ca.decode())
    urls: dict[str, tuple[str, ssl.SSLContext | None, str | None]] = {
        "http": (f"http://127.0.0.1:{balancer.http_port}", None, None),
        **{d: (f"https://127.0.0.1:{balancer.tls_port}", tls, d) for d in HAPROXY_DOMAINS},
    }
    load = Load()
    stop = asyncio.Event()
    driver = asyncio.create_task(run_load(urls, token_stream(data_dir, campaign_id), stop, load, per_channel=3))
    timings: list[str] = []
    try:
        for name in stack.edges:
            await eventually(partial(balancer.served_more, name, 0), timeout=10)  # both edges serve
        for name, edge in stack.edges.items():
            assert edge.proc is not None
            signalled = time.monotonic()
            edge.proc.send_signal(signal.SIGTERM)
            # HAProxy must take the edge out while it still serves (its drain grace): /readyz says 503.
            await eventually(partial(balancer.is_down, name), timeout=DRAIN_GRACE + 5)
            out_after = time.monotonic() - signalled
            async with asyncio.timeout(DRAIN_GRACE + 30):
                code = await edge.proc.wait()
            assert code == 0, f"{name} exited {code} after SIGTERM"
            exited_after = time.monotonic() - signalled
            assert out_after < DRAIN_GRACE, f"HAProxy took {name} out {out_after:.1f}s after SIGTERM"
            await edge.start()  # same port, same spool
            await wait_http(f"{edge.url}/readyz")
            await eventually(partial(balancer.is_up, name), timeout=15)
            back_after = time.monotonic() - signalled
            served = await balancer.redirects(name)
            await eventually(partial(balancer.served_more, name, served), timeout=10)
            timings.append(f"{name}: out {out_after:.1f}s, exited {exited_after:.1f}s, back {back_after:.1f}s")
    finally:
        stop.set()
        await driver
    print("; ".join(timings), dict(load.by_channel))  # shown with -s, and on failure
    failures = load.failures
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:5]}\n{balancer.proc.output()}"
    assert all(load.by_channel[c] > 0 for c in urls), load.by_channel
    await assert_recorded(database_url, campaign_id, load)
    # The Prometheus exporter the shipped file enables on the statistics port.
    async with aiohttp.ClientSession() as http, http.get(f"{balancer.stats_url}/metrics") as resp:
        assert resp.status == 200
        assert 'haproxy_server_status{proxy="edges",server="edge1"' in await resp.text()


def test_haproxy_config_as_shipped_is_valid(tmp_path: Path) -> None:
    """`haproxy -c` on the shipped file. Only the certificate directory is pointed at a generated
    certificate: HAProxy loads certificates while checking, and /etc/haproxy/certs/ holds the real ones."""
    haproxy = program("haproxy")
    require(haproxy is not None, "haproxy (apt-get install haproxy)")
    assert haproxy is not None
    certs = tmp_path / "certs"
    haproxy_certs(certs, HAPROXY_DOMAINS)
    config = tmp_path / "haproxy.cfg"
    config.write_text(rewrite(HAPROXY_CFG.read_text(), [("crt /etc/haproxy/certs/", f"crt {certs}/", 1)]))
    result = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ALERT]" not in result.stderr, result.stderr


# --- nginx -----------------------------------------------------------------------------------------------


def nginx_main(tmp: Path, site: str) -> Path:
    """A main configuration around the shipped include, with every path in ``tmp``."""
    (tmp / "clickedge.conf").write_text(site)
    main = tmp / "nginx.conf"
    main.write_text(
        f"""
pid {tmp}/nginx.pid;
error_log {tmp}/error.log notice;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/clickedge.conf;
}}
"""
    )
    return main


def nginx_site(live: Path, edges: dict[str, str], http_port: int, tls_port: int) -> str:
    """deploy/nginx/clickedge.conf with loopback addresses, no IPv6 listeners and generated certificates."""
    return rewrite(
        NGINX_CONF.read_text(),
        [
            ("server edge1:8080 ", f"server {edges['edge1']} ", 1),
            ("server edge2:8080 ", f"server {edges['edge2']} ", 1),
            ("    listen 80 default_server;\n", f"    listen 127.0.0.1:{http_port} default_server;\n", 1),
            ("    listen [::]:80 default_server;\n", "", 1),
            ("    listen 443 ssl default_server;\n", f"    listen 127.0.0.1:{tls_port} ssl default_server;\n", 1),
            ("    listen [::]:443 ssl default_server;\n", "", 1),
            ("    listen 443 ssl;\n", f"    listen 127.0.0.1:{tls_port} ssl;\n", 1),
            ("    listen [::]:443 ssl;\n", "", 1),
            ("/etc/letsencrypt/live/", f"{live}/", 4),
        ],
    )


def nginx_program() -> str:
    nginx = program("nginx")
    require(nginx is not None, "nginx (apt-get install nginx)")
    assert nginx is not None
    return nginx


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = nginx_program()
    ca = letsencrypt_certs(tmp_path / "live", NGINX_DOMAINS)
    assert ca
    edges = {"edge1": f"127.0.0.1:{free_port()}", "edge2": f"127.0.0.1:{free_port()}"}
    main = nginx_main(tmp_path, nginx_site(tmp_path / "live", edges, free_port(), free_port()))
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test is successful" in result.stderr, result.stderr


async def test_nginx_rolling_restart_loses_no_click(
    database_url: str, data_dir: Path, campaign_id: int, tmp_path: Path, procs: list[Proc]
) -> None:
    """nginx sees no /readyz: a draining edge keeps answering (with Connection: close), and once it stops
    listening proxy_next_upstream sends its requests to the other edge."""
    nginx = nginx_program()
    stack = await start_stack(database_url, data_dir, tmp_path)
    ca = letsencrypt_certs(tmp_path / "live", NGINX_DOMAINS)
    http_port, tls_port = free_port(), free_port()
    edges = {name: f"127.0.0.1:{edge.port}" for name, edge in stack.edges.items()}
    main = nginx_main(tmp_path, nginx_site(tmp_path / "live", edges, http_port, tls_port))
    proc = Proc([nginx, "-p", str(tmp_path), "-c", str(main), "-g", "daemon off;"], tmp_path / "nginx.log")
    procs.append(proc)
    await proc.start()
    await wait_http(f"http://127.0.0.1:{http_port}/healthz")
    tls = ssl.create_default_context(cadata=ca.decode())
    urls: dict[str, tuple[str, ssl.SSLContext | None, str | None]] = {
        "http": (f"http://127.0.0.1:{http_port}", None, None),
        **{d: (f"https://127.0.0.1:{tls_port}", tls, d) for d in NGINX_DOMAINS},
    }
    load = Load()
    stop = asyncio.Event()
    driver = asyncio.create_task(run_load(urls, token_stream(data_dir, campaign_id), stop, load, per_channel=3))
    try:
        await eventually(partial(_answered, load, 200), timeout=10)
        for name, edge in stack.edges.items():
            assert edge.proc is not None
            edge.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(DRAIN_GRACE + 30):
                code = await edge.proc.wait()
            assert code == 0, f"{name} exited {code} after SIGTERM"
            await edge.start()
            await wait_http(f"{edge.url}/readyz")
            # Clicks keep being answered after each restart (by whichever edge nginx picks).
            before = len(load.answered)
            await eventually(partial(_answered, load, before + 200), timeout=10)
    finally:
        stop.set()
        await driver
    failures = load.failures
    log = (tmp_path / "error.log").read_text(errors="replace")
    # Each request nginx sent on to the next edge left an error line: shown with -s.
    retried = sum("[error]" in line and "upstream" in line for line in log.splitlines())
    print(f"nginx: {retried} requests retried on the other edge", dict(load.by_channel))
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:5]}\n{log[-3000:]}"
    assert all(load.by_channel[c] > 0 for c in urls), load.by_channel
    await assert_recorded(database_url, campaign_id, load)


async def _answered(load: Load, at_least: int) -> bool:
    return len(load.answered) >= at_least
