"""How a process takes SIGTERM: the first asks for a drain; a second one later means stop now; a second
one at once (a control-group kill plus the supervisor passing it on) is the same request.

The windows are chosen so that no machine load can flip an outcome: "at once" is inside a 60 s window,
"later" is 0.2 s after the first signal against a window of 0.01 s."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common import process
from common.process import HEARTBEAT_ENV, start_heartbeat
from tests.conftest import eventually

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


# -- the heartbeat a supervised process writes -------------------------------------------------------------


async def test_a_heartbeat_beats_into_its_pipe_and_stops_when_the_supervisor_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    monkeypatch.setenv(HEARTBEAT_ENV, str(write_end))
    monkeypatch.setattr(process, "HEARTBEAT_INTERVAL", 0.01)
    start_heartbeat()
    assert HEARTBEAT_ENV not in os.environ  # never passed on to a child of this process
    assert os.read(read_end, 1) == b"."  # the first beat at once
    loop = asyncio.get_running_loop()
    beat: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        if not beat.done():
            beat.set_result(os.read(read_end, 1))

    loop.add_reader(read_end, readable)
    assert await asyncio.wait_for(beat, 10) == b"."  # and the next from the loop's timer
    loop.remove_reader(read_end)
    attempts: list[str] = []
    write = os.write

    def watched(fd: int, data: bytes | memoryview) -> int:
        if fd != write_end:
            return write(fd, data)
        try:
            return write(fd, data)
        except OSError as exc:
            attempts.append(type(exc).__name__)
            raise

    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    monkeypatch.setattr(os, "write", watched)
    os.close(read_end)  # the supervisor is gone: the next write fails and beating stops, quietly

    async def failed_once() -> bool:
        return bool(attempts)

    await eventually(failed_once, timeout=10)
    await asyncio.sleep(20 * process.HEARTBEAT_INTERVAL)  # twenty beats' time (absence takes time to show)
    assert attempts == ["BrokenPipeError"]  # one failed write (SIGPIPE is ignored), and no beat after it
    assert errors == []
    os.close(write_end)


@pytest.mark.parametrize("value", ["", "soon", "99999"])
def test_a_heartbeat_variable_that_is_not_a_pipe_is_ignored(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HEARTBEAT_ENV, value)
    start_heartbeat()  # not a digit, or a descriptor that is not open: nothing happens, no loop needed


def test_a_heartbeat_never_writes_into_a_descriptor_that_is_not_a_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "not-a-pipe", "wb") as f:
        monkeypatch.setenv(HEARTBEAT_ENV, str(f.fileno()))
        start_heartbeat()
    assert (tmp_path / "not-a-pipe").read_bytes() == b""
