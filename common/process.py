"""How a Clickedge process lives under a supervisor: how it takes stop signals, how it says it is alive, and
what its exit codes mean. The supervisor itself is the application shell's (clickedge/supervise.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from collections.abc import Callable

log = logging.getLogger("clickedge.process")

CONFIG_ERROR_EXIT = 2  # a configuration error: restarting will not help
TEMPFAIL_EXIT = 75  # EX_TEMPFAIL: worth a restart later (a spool that cannot be opened now)
RESTARTS_ENV = "CLICKEDGE_RESTARTS"  # tells a child how often its slot was restarted, for its metrics
HEARTBEAT_ENV = "CLICKEDGE_HEARTBEAT_FD"  # the write end of the heartbeat pipe its supervisor reads
HEARTBEAT_INTERVAL = 1.0


def restarts() -> int:
    """How often the supervisor has restarted this process's slot (0 when not supervised)."""
    raw = os.environ.get(RESTARTS_ENV, "0")
    return int(raw) if raw.isdigit() else 0


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


def start_heartbeat() -> None:
    """If a supervisor gave this process a heartbeat pipe, write to it once a second from a timer on the
    running event loop, for as long as the loop turns (see the module's docstring)."""
    raw = os.environ.pop(HEARTBEAT_ENV, "")
    if not raw.isdigit():
        return
    fd = int(raw)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return  # not the pipe it should be: never write into a descriptor that is something else
        os.set_blocking(fd, False)
    except OSError:
        return
    loop = asyncio.get_running_loop()

    def beat() -> None:
        try:
            os.write(fd, b".")
        except BlockingIOError:
            pass  # the supervisor is behind reading: it has plenty of beats already
        except OSError:
            return  # the supervisor is gone
        loop.call_later(HEARTBEAT_INTERVAL, beat)

    beat()
