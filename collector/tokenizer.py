"""A tokenizer worker process: ``python -m collector.tokenizer``, started by collector/rewriter.py.

It prepares one message at a time (links.rewrite.prepare) and is spoken to over its stdin and stdout in
frames: a 4-byte big-endian length, then a pickle. It writes READY once its imports are done, then for
each request ``(html, text)`` a reply ``("ok", PreparedMessage)`` or ``("error", reason)``. It exits when
its stdin closes. The collector kills it (SIGKILL) when a message takes longer than its deadline.

Pickle is safe here in both directions: each side is this code base, started by the other.
"""

from __future__ import annotations

import pickle
import signal
import struct
import sys
from typing import IO, Any

from links.rewrite import RewriteError, prepare

HEADER = struct.Struct(">I")
READY = b"clickedge-tokenizer-ready\n"
MAX_FRAME = 256 << 20  # a 1 MiB message's prepared form is a few MiB; more is a broken peer


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def _read_request(stdin: IO[bytes]) -> tuple[str, str | None] | None:
    header = stdin.read(HEADER.size)
    if len(header) < HEADER.size:
        return None  # the collector closed the pipe (or died): nothing more to do
    (size,) = HEADER.unpack(header)
    body = stdin.read(size)
    if len(body) < size:
        return None
    html, text = pickle.loads(body)  # noqa: S301 - from the collector that started this process
    return html, text


def answer(html: str, text: str | None) -> tuple[str, Any]:
    try:
        return "ok", prepare(html, text)
    except RewriteError as exc:
        return "error", str(exc)
    except (RecursionError, MemoryError) as exc:  # a pathological document; the next one is fine
        return "error", f"the HTML cannot be tokenized: {type(exc).__name__}"


def main() -> None:
    # Ctrl-C at a terminal reaches the whole process group; the collector decides when this one ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the pipe
    stdout.write(READY)
    stdout.flush()
    while (request := _read_request(stdin)) is not None:
        stdout.write(frame(answer(*request)))
        stdout.flush()


if __name__ == "__main__":
    main()
