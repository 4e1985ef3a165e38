"""Runs child processes, restarts one that dies with backoff, and stops them all in order."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from clickedge.settings import ConfigError

log = logging.getLogger("clickedge.supervise")

PR_SET_PDEATHSIG = 1
CONFIG_ERROR_EXIT = 2  # what `clickedge` exits with on a configuration error
RESTARTS_ENV = "CLICKEDGE_RESTARTS"  # tells a child how often its slot was restarted, for its metrics
RESTART_BACKOFF_START = 0.5
RESTART_BACKOFF_CAP = 30.0
STABLE_AFTER = 30.0  # a child that ran this long resets its backoff


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    restart: bool = True
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    _backoff: float = field(default=RESTART_BACKOFF_START)


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stopping = False
        self._watchers: set[asyncio.Task[None]] = set()
        self.failed = asyncio.Event()  # set when a child that must not be restarted exits

    async def start(self, child: Child) -> None:
        await self._spawn(child)
        self.children.append(child)
        task = asyncio.create_task(self._watch(child), name=f"watch-{child.name}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _spawn(self, child: Child) -> None:
        # A session of its own: a Ctrl-C at the terminal reaches only the supervisor, which then stops
        # the children in order (edge first, database last) instead of all at once.
        env = {**(child.env if child.env is not None else os.environ), RESTARTS_ENV: str(child.restarts)}
        child.process = await asyncio.create_subprocess_exec(
            *child.argv, env=env, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM)
        )
        log.info("started %s (pid %d)", child.name, child.process.pid)

    async def _watch(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        while True:
            assert child.process is not None
            started = loop.time()
            code = await child.process.wait()
            if self.stopping:
                return
            if not child.restart or code == CONFIG_ERROR_EXIT:
                # A configuration error will not go away by restarting: stop and say so.
                log.error("%s exited with code %s; not restarting it", child.name, code)
                self.failed.set()
                return
            if loop.time() - started > STABLE_AFTER:
                child._backoff = RESTART_BACKOFF_START
            child.restarts += 1
            log.error(
                "%s exited with code %s; restart %d in %.1fs",
                child.name,
                code,
                child.restarts,
                child._backoff,
            )
            await asyncio.sleep(child._backoff)
            child._backoff = min(child._backoff * 2, RESTART_BACKOFF_CAP)
            if self.stopping:
                return
            await self._spawn(child)

    async def stop(self, child: Child, timeout: float, sig: int = signal.SIGTERM) -> int | None:
        """Signal one child and wait for it; kill it if it outlives ``timeout``."""
        proc = child.process
        if proc is None or proc.returncode is not None:
            return 0  # already gone (a crash, logged when it happened, awaiting its restart): nothing to stop
        proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.error("%s did not stop within %.0fs; killing it", child.name, timeout)
            proc.kill()
            return await proc.wait()
        # Killed by our own signal: it had not installed its handlers yet, so it was still starting up
        # and had served nothing. That is a clean stop.
        return 0 if code == -sig else code

    async def stop_all(self, timeout: float, *, together: bool = False) -> list[int | None]:
        """Stop children in reverse start order (later ones depend on earlier ones), or all at once
        when they are peers (edge workers drain side by side, not one after another)."""
        self.stopping = True
        if together:
            codes = list(await asyncio.gather(*(self.stop(child, timeout) for child in self.children)))
        else:
            codes = [await self.stop(child, timeout) for child in reversed(self.children)]
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        # A watcher may have been restarting a child while we stopped the others: stop that one too,
        # or it would outlive us, holding the port and its spool.
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                await self.stop(child, timeout)
        return codes

    def kill_all(self) -> None:
        """Kill every child at once (a second Ctrl-C): nothing of ours may outlive us."""
        self.stopping = True
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send ``sig`` to the child if the process that started it dies (even by
    SIGKILL), so that no service outlives its supervisor. Must run in the thread that spawns."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # not Linux: children are stopped by the supervisor only
        return None

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return set_death_signal


def check_port_free(host: str, port: int) -> None:
    """Raise ConfigError if ``host:port`` cannot be bound (someone listens there already)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def install_stop_handlers(
    stop: asyncio.Event, on_force: Callable[[], None] | None = None, *, same_stop_seconds: float = 0.0
) -> None:
    """First SIGTERM/SIGINT asks for a graceful stop; a second one exits at once, after ``on_force``
    (which kills what must not outlive this process). A supervised worker passes ``same_stop_seconds``:
    signals that soon after the first are the same request, because a service manager that signals the
    whole control group (systemd's default KillMode) and the supervisor passing the signal on reach it
    twice at once, and that must not skip its drain."""
    loop = asyncio.get_running_loop()
    first: list[float] = []

    def on_signal(signum: int) -> None:
        if stop.is_set() and first and loop.time() - first[0] < same_stop_seconds:
            log.info("%s again: already stopping", signal.Signals(signum).name)
            return
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            if on_force is not None:
                on_force()
            os._exit(128 + signum)
        log.info("%s received: stopping", signal.Signals(signum).name)
        first.append(loop.time())
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
