"""Click records as the edge's spool frames them, and as an edge ships them to its collector. Pure.

One record::

    offset  size  field
    0       2     magic 0xC1 0x1C (lets a reader find the next record after a corrupt one)
    2       4     payload length, big-endian
    6       4     CRC-32 of event id + payload
    10      16    event id
    26      n     payload (common/events.py: the click's other fields, a JSON array)

The spool (edge/spool.py) is a run of records in each segment file. A shipped batch is a run of records too:
the edge sends what its spool holds without decoding or re-encoding a click, and the collector checks every
frame (``decode``) before it reads a payload.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

MAGIC = b"\xc1\x1c"
HEADER = struct.Struct(">2sII16s")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 4096  # the largest payload a record may carry; a reader takes a longer one for corruption
EVENT_ID_SIZE = 16
_START = struct.Struct(">2sI")  # magic and length
_CHECKED = struct.Struct(">2sII")  # magic, length and checksum


class FrameError(ValueError):
    """Bytes that are not a run of whole, intact records; the message says where and why."""


def frame(event_id: bytes, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload, zlib.crc32(event_id)), event_id) + payload


class Parsed(NamedTuple):
    records: list[tuple[bytes, bytes]]
    end: int
    corrupt: int
    resyncing: bool  # stopped inside a corrupt stretch (already counted) that the bytes from ``end`` on continue


def parse(
    buf: bytes,
    start: int = 0,
    limit: int = -1,
    *,
    final: bool = False,
    max_bytes: int = 1 << 62,
    resyncing: bool = False,
) -> Parsed:
    """Parse records from ``buf[start:]``, for a reader that must survive damage (a torn or corrupt spool).

    A record with a wrong magic, length or checksum is skipped up to the next magic and counted once.
    An incomplete record at the end of ``buf`` stops parsing there (it may still be being written),
    unless ``final`` says nothing more will ever follow, in which case it is corrupt too. ``resyncing``
    says ``buf`` continues a corrupt stretch already counted (one that ran past the previous chunk): pass
    the ``resyncing`` of the parse that read the previous chunk.
    """
    records: list[tuple[bytes, bytes]] = []
    corrupt = 0
    inside = False
    pos = start
    size = len(buf)
    stop = min(size, start + max_bytes)
    while pos < stop and limit != len(records):
        if pos + HEADER_SIZE <= size:
            magic, length, crc, event_id = HEADER.unpack_from(buf, pos)
            if magic == MAGIC and length <= MAX_PAYLOAD:
                end = pos + HEADER_SIZE + length
                if end <= size:
                    payload = buf[pos + HEADER_SIZE : end]
                    if zlib.crc32(payload, zlib.crc32(event_id)) == crc:
                        records.append((event_id, payload))
                        pos = end
                        continue
                elif not final:
                    break
        elif not final:
            break
        if not (resyncing and pos == start):
            corrupt += 1
        found = buf.find(MAGIC, pos + 1)
        if found < 0:
            # Unless this is the end for good, keep the last byte: it may be half of the next magic.
            pos = size if final else max(pos + 1, size - 1)
            inside = not final
            break
        pos = found
    return Parsed(records, pos, corrupt, inside)


def walk(buf: bytes, limit: int, max_bytes: int) -> tuple[int, int]:
    """(end, count): how far the first ``limit`` whole records of ``buf`` reach, within about ``max_bytes``
    (at least one record when there is one). Reads only the magic and length fields, not the checksums: for
    bytes known to be whole records, such as those the spool's writer appended in this process. It stops at
    anything else (a wrong magic or length), for a reader to check from there with ``parse``."""
    pos = count = 0
    size = len(buf)
    stop = min(size, max_bytes)
    start = _START.unpack_from
    while count < limit and pos + HEADER_SIZE <= size and (pos < stop or count == 0):
        magic, length = start(buf, pos)
        end = pos + HEADER_SIZE + length
        if magic != MAGIC or length > MAX_PAYLOAD or end > size:
            break
        pos = end
        count += 1
    return pos, count


def decode(body: bytes, limit: int) -> list[tuple[bytes, bytes]]:
    """The (event id, payload) records of a shipped batch: every byte must belong to a whole, intact record,
    and there may be at most ``limit`` of them. Raises FrameError naming the first record that is not."""
    records: list[tuple[bytes, bytes]] = []
    append = records.append
    pos = 0
    size = len(body)
    unpack = _CHECKED.unpack_from
    crc32 = zlib.crc32
    while pos + HEADER_SIZE <= size:
        magic, length, crc = unpack(body, pos)
        end = pos + HEADER_SIZE + length
        # The checksum covers the event id and the payload, which follow it: one slice, one call.
        if magic != MAGIC or length > MAX_PAYLOAD or end > size or crc32(body[pos + 10 : end]) != crc:
            break
        append((body[pos + 10 : pos + HEADER_SIZE], body[pos + HEADER_SIZE : end]))
        pos = end
        if len(records) > limit:
            raise FrameError(f"batch has more than {limit} records; at most {limit} are accepted")
    if pos < size:
        raise FrameError(_why(body, pos, len(records)))
    return records


def _why(body: bytes, pos: int, i: int) -> str:
    """Why the record at ``pos`` is not whole and intact (``decode`` stopped there)."""
    size = len(body)
    if pos + HEADER_SIZE > size:
        return f"records[{i}] at byte {pos} is cut off: {size - pos} bytes, a header is {HEADER_SIZE}"
    magic, length = _START.unpack_from(body, pos)
    if magic != MAGIC:
        return f"records[{i}] at byte {pos} does not start with the record magic C1 1C"
    if length > MAX_PAYLOAD:
        return f"records[{i}] at byte {pos} declares {length} payload bytes; at most {MAX_PAYLOAD}"
    if pos + HEADER_SIZE + length > size:
        return f"records[{i}] at byte {pos} is cut off: {length} payload bytes declared"
    return f"records[{i}] at byte {pos} fails its CRC-32: damaged on the way or on disk"
