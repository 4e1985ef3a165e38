"""Runs child processes, restarts one that dies or hangs with backoff, and stops them all in order.

A hung child is one whose event loop has stopped turning: it answers no health check, ignores SIGTERM,
and would never exit by itself. Each child gets a heartbeat pipe (its write end's number in
CLICKEDGE_HEARTBEAT_FD) and writes a byte to it once a second from a timer on its event loop
(``start_heartbeat``), which is what its /healthz would tell if the workers did not share one port. A
child silent for ``watchdog_timeout`` seconds (FIRST_BEAT_GRACE before its first beat, for start-up) is
killed with SIGKILL and restarted like one that crashed; its spool keeps every answered click.
"""

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

from common.process import CONFIG_ERROR_EXIT, HEARTBEAT_ENV, HEARTBEAT_INTERVAL, RESTARTS_ENV
from common.settings import ConfigError

log = logging.getLogger("clickedge.supervise")

PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_START = 0.5
RESTART_BACKOFF_CAP = 30.0
STABLE_AFTER = 30.0  # a child that ran this long resets its backoff
FIRST_BEAT_GRACE = 60.0  # start-up before the first beat: opening a spool with a backlog, connecting


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    restart: bool = True
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    _backoff: float = field(default=RESTART_BACKOFF_START)
    _heartbeat: int = -1  # the read end of this process's heartbeat pipe
    _deadline: float = 0.0  # when it counts as hung if no beat comes
    hung: int = 0  # times it was killed for not beating


class Supervisor:
    def __init__(self, *, watchdog_timeout: float = 0.0) -> None:
        self.children: list[Child] = []
        self.stopping = False
        self.watchdog_timeout = watchdog_timeout  # 0: no heartbeat, no watchdog
        self._watchers: set[asyncio.Task[None]] = set()
        self.failed = asyncio.Event()  # set when a child that must not be restarted exits

    async def start(self, child: Child) -> None:
        self.children.append(child)
        await self._spawn(child)
        self._keep(asyncio.create_task(self._watch(child), name=f"watch-{child.name}"))

    async def _spawn(self, child: Child) -> None:
        # A session of its own: a Ctrl-C at the terminal reaches only the supervisor, which then stops
        # the children in order (edge first, database last) instead of all at once.
        env = {**(child.env if child.env is not None else os.environ), RESTARTS_ENV: str(child.restarts)}
        env.pop(HEARTBEAT_ENV, None)  # never pass on our own supervisor's pipe: that descriptor is not theirs
        write_end = -1
        if self.watchdog_timeout > 0:
            self._forget_heartbeat(child)
            child._heartbeat, write_end = os.pipe()
            os.set_blocking(child._heartbeat, False)
            env[HEARTBEAT_ENV] = str(write_end)
        try:
            child.process = await asyncio.create_subprocess_exec(
                *child.argv,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
                pass_fds=(write_end,) if write_end >= 0 else (),
            )
        finally:
            if write_end >= 0:
                os.close(write_end)
        if child._heartbeat >= 0:
            loop = asyncio.get_running_loop()
            child._deadline = loop.time() + FIRST_BEAT_GRACE
            loop.add_reader(child._heartbeat, self._beat, child)
            if not any(task.get_name() == "watchdog" for task in self._watchers):
                self._keep(asyncio.create_task(self._watchdog(), name="watchdog"))
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _beat(self, child: Child) -> None:
        try:
            alive = bool(os.read(child._heartbeat, 4096))
        except BlockingIOError:
            return
        except OSError:
            alive = False
        if alive:
            child._deadline = asyncio.get_running_loop().time() + self.watchdog_timeout
        else:
            self._forget_heartbeat(child)  # the process closed its end: it exited (its watcher sees to it)

    def _forget_heartbeat(self, child: Child) -> None:
        if child._heartbeat >= 0:
            asyncio.get_running_loop().remove_reader(child._heartbeat)
            os.close(child._heartbeat)
            child._heartbeat = -1

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            for child in self.children:
                proc = child.process
                if self.stopping or child._heartbeat < 0 or proc is None or proc.returncode is not None:
                    continue
                if loop.time() > child._deadline:
                    child.hung += 1
                    log.error(
                        "%s (pid %d) has not answered its health check for %.0fs: its event loop is stuck; "
                        "killing it to restart it",
                        child.name,
                        proc.pid,
                        self.watchdog_timeout,
                    )
                    self._forget_heartbeat(child)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)

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
        for child in self.children:
            self._forget_heartbeat(child)
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
    """Raise ConfigError if something listens on ``host:port`` already.

    The probe binds with SO_REUSEADDR, as the servers themselves do: then only a socket listening there (on
    that address or a wildcard one) makes the bind fail, not the TIME-WAIT connections a stop under
    traffic leaves for a minute, nor a local client's connection that happens to use the port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
