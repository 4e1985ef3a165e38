"""How a process takes SIGTERM: the first asks for a drain; a second one later means stop now; a second
one at once (a control-group kill plus the supervisor passing it on) is the same request.

The windows are chosen so that no machine load can flip an outcome: "at once" is inside a 60 s window,
"later" is 0.2 s after the first signal against a window of 0.01 s."""

from __future__ import annotations

import signal
import subprocess
import sys

SCRIPT = """
import asyncio, logging, os, signal, sys

seen = []
class Seen(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
logging.getLogger().addHandler(Seen())
logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
logging.getLogger().setLevel(logging.INFO)

from common.process import install_stop_handlers

async def handled(text):
    # The signal's handler runs on the event loop, in one of its next turns: wait until it has.
    while not any(text in message for message in seen):
        await asyncio.sleep(0.01)

async def main():
    stop = asyncio.Event()
    install_stop_handlers(stop, same_stop_seconds=float(sys.argv[1]))
    os.kill(os.getpid(), signal.SIGTERM)
    await stop.wait()
    await asyncio.sleep(float(sys.argv[2]))  # the time that passes before the second one (the behaviour here)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(handled("again: already stopping"), 30)
    print("still draining", flush=True)

asyncio.run(main())
"""


def run(window: float, then: float) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", SCRIPT, str(window), str(then)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_second_sigterm_within_the_window_is_the_same_stop() -> None:
    result = run(window=60.0, then=0.0)
    assert result.stdout.splitlines() == ["still draining"], result.stderr
    assert result.returncode == 0


def test_a_second_sigterm_after_the_window_stops_at_once() -> None:
    result = run(window=0.01, then=0.2)
    assert result.stdout == ""  # it never got to say it was still draining
    assert result.returncode == 128 + signal.SIGTERM
    assert "second SIGTERM: exiting now" in result.stderr


def test_without_a_window_a_second_sigterm_stops_at_once() -> None:
    result = run(window=0.0, then=0.0)
    assert result.stdout == ""
    assert result.returncode == 128 + signal.SIGTERM
