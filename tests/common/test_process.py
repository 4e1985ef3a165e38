"""How a process takes SIGTERM: the first asks for a drain; a second one later means stop now; a second
one at once (a control-group kill plus the supervisor passing it on) is the same request."""

from __future__ import annotations

import signal
import subprocess
import sys

SCRIPT = """
import asyncio, os, signal, sys, time
from common.process import install_stop_handlers

async def main():
    stop = asyncio.Event()
    install_stop_handlers(stop, same_stop_seconds=float(sys.argv[1]))
    os.kill(os.getpid(), signal.SIGTERM)
    await stop.wait()
    os.kill(os.getpid(), signal.SIGTERM)  # at once: the same stop
    await asyncio.sleep(0.1)  # the handler runs; the process is still here
    print("still draining", flush=True)
    await asyncio.sleep(float(sys.argv[2]))  # the window under test passes (time is the behaviour here)
    os.kill(os.getpid(), signal.SIGTERM)  # later: stop now
    await asyncio.sleep(5)
    print("not stopped", flush=True)

asyncio.run(main())
"""


def run(window: float, then: float) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", SCRIPT, str(window), str(then)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_a_second_sigterm_at_once_is_the_same_stop_and_a_later_one_stops_now() -> None:
    result = run(window=0.5, then=0.6)
    assert result.stdout.splitlines() == ["still draining"]
    assert result.returncode == 128 + signal.SIGTERM
    assert "second SIGTERM: exiting now" in result.stderr


def test_without_a_window_a_second_sigterm_stops_at_once() -> None:
    result = run(window=0.0, then=0.0)
    assert result.stdout == ""  # the second SIGTERM ended it before it could say anything
    assert result.returncode == 128 + signal.SIGTERM
