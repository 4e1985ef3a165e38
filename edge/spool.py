"""The edge's durable click spool: append-only segment files and an acknowledged position. Pure.

Every click is written here before its redirect is answered, so a crash of the edge process loses
nothing that was answered: the bytes are in the kernel's page cache. ``add`` buffers a record and
``flush`` writes all buffered ones with one ``write()``: the edge adds the clicks of one event-loop pass
and flushes once before sending their answers. ``sync()`` makes them
survive a machine crash as well; the edge calls it on a timer (group fsync) or, in ``always`` mode,
before each answer.

Layout of a spool directory (one per edge worker)::

    lock                       flock()ed by the worker that owns the directory
    ack                        "SEGMENT OFFSET CRC32": everything before it is committed by the collector
    0000000000000001.seg ...   segments, each a run of records (framed as common/frames.py says)

A writer only ever appends to a segment it created itself; on start it opens a new one, after cutting
the torn tail (an incomplete last record) off the previous process's last segment. A reader skips and
counts records whose magic, length or checksum is wrong. Segments wholly before the acknowledged
position are deleted. The oldest data is never dropped to make room: when the size cap is reached or the
disk fails, ``append`` refuses the record and counts it, and accepts again once there is room.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

# The record format is common/frames.py's (the collector reads it too); the names stay importable from here.
from common.frames import EVENT_ID_SIZE, walk
from common.frames import HEADER as HEADER
from common.frames import HEADER_SIZE as HEADER_SIZE
from common.frames import MAGIC as MAGIC
from common.frames import MAX_PAYLOAD as MAX_PAYLOAD
from common.frames import frame as frame
from common.frames import parse as parse

SEGMENT_SUFFIX = ".seg"
READ_CHUNK = 1 << 20
# What read_frames reads of a segment this process wrote: enough for the batch's records, at their usual size.
OWN_READ_MIN = 64 << 10
OWN_READ_PER_RECORD = 384
LEDGER_SIZE = 64
PROBE_BYTES = 4 * (HEADER_SIZE + MAX_PAYLOAD)
ROTATE_DRAINED_AT = 1 << 20


class SpoolLockedError(RuntimeError):
    """Another process owns this spool directory."""


@dataclass(frozen=True, order=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(slots=True)
class Batch:
    records: list[tuple[bytes, bytes]]  # (event id, payload)
    end: Position
    corrupt: int = 0


@dataclass(slots=True)
class Frames:
    """A batch as its records' own bytes: what the shipper sends."""

    body: bytes  # whole, intact records, framed as in the spool
    count: int
    end: Position
    corrupt: int = 0


@dataclass(frozen=True, slots=True)
class SpoolView:
    """What a reader in another thread may read: each segment's size and the active segment, as of a
    moment on the writer's side."""

    sizes: dict[int, int]
    active: int
    acknowledged: Position
    own_from: int = 1 << 62  # the first segment this process wrote: whole records only, from offset 0 on


@dataclass(slots=True)
class SpoolStats:
    appended: int = 0
    undurable: int = 0
    corrupt: int = 0
    replayed: int = 0  # records found at start, written by an earlier process and not yet acknowledged
    truncated_bytes: int = 0
    sync_errors: int = 0
    acked: int = 0  # records acknowledged by this process
    ledger_errors: int = 0
    oversized: int = 0  # records refused by add() because no reader could read them back


class Spool:
    def __init__(self, directory: Path, *, segment_bytes: int = 16 << 20, max_bytes: int = 1 << 30) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.external_bytes = 0  # kept beside the spool and counted against max_bytes (the dead-letter file)
        self.stats = SpoolStats()
        self.healthy = True  # False after an append was refused, until one succeeds
        self.full = False
        self._lock_fd = -1
        self._ack_fd = -1
        self.ledger_error: OSError | None = None
        self._fd = -1
        self._segment = 0
        self._size = 0
        self._ack = Position(0, 0)
        self._retired_fds: list[int] = []  # rotated away, closed after their final sync
        self._rotate_next = False
        self._unsynced = False
        self._bytes = 0  # unacknowledged bytes
        self._since_sync = 0  # records appended since the last sync started
        self._pending = bytearray()  # framed records add()ed and not yet written by flush()
        self._pending_records = 0
        self.read_chunk = READ_CHUNK
        self._sizes: dict[int, int] = {}  # segment -> bytes, for every segment not yet deleted
        self._own_from = 1 << 62  # the first segment this process opened (set by open())

    # -- opening --------------------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, recover what an earlier process left, and start a new segment."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise SpoolLockedError(f"spool {self.directory} is in use by another process (pid {owner})") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        segments = self.segments()
        self._ack = self._read_ack(segments)
        for seg in segments:
            if seg < self._ack.segment:
                self._unlink(seg)
        segments = [s for s in segments if s >= self._ack.segment]
        if segments:
            self._cut_torn_tail(segments[-1])
        for seg in segments:
            self._sizes[seg] = (self.directory / _name(seg)).stat().st_size
        # Never reuse a number the ledger may name: new clicks would hide behind its offset.
        self._segment = max(segments[-1] if segments else 0, self._ack.segment) + 1
        self._own_from = self._segment
        self._open_segment()
        self._recount()

    def backlog(self) -> list[tuple[int, int]]:
        """The (segment, offset) ranges an earlier process left unacknowledged (call on the loop)."""
        return [
            (seg, self._ack.offset if seg == self._ack.segment else 0)
            for seg in sorted(self._sizes)
            if seg < self._segment
        ]

    def count_records(self, ranges: list[tuple[int, int]]) -> int:
        """Count the records in ``backlog()`` ranges: reads them all, so run it off the loop."""
        total = 0
        for seg, start in ranges:
            with contextlib.suppress(FileNotFoundError), open(self.directory / _name(seg), "rb") as f:
                f.seek(start)
                total += len(parse(f.read(), final=True).records)
        self.stats.replayed = total
        return total

    def segments(self) -> list[int]:
        found = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(SEGMENT_SUFFIX) and entry.name[: -len(SEGMENT_SUFFIX)].isdigit():
                found.append(int(entry.name[: -len(SEGMENT_SUFFIX)]))
        return sorted(found)

    def _read_ack(self, segments: list[int]) -> Position:
        self._ack_fd = os.open(self.directory / "ack", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        raw = os.pread(self._ack_fd, LEDGER_SIZE, 0)
        try:
            seg, off, crc = raw.split(b"\n", 1)[0].split()
            if zlib.crc32(seg + b" " + off) != int(crc):
                raise ValueError("checksum")
            return Position(int(seg), int(off))
        except ValueError:
            # No ledger, or a damaged one: replay everything present; the collector drops duplicates.
            return Position(segments[0] if segments else 0, 0)

    def _cut_torn_tail(self, seg: int) -> None:
        path = self.directory / _name(seg)
        data = path.read_bytes()
        start = self._ack.offset if seg == self._ack.segment else 0
        end = parse(data, start).end
        # parse() stops at an incomplete record and skips corrupt ones. What is left after `end` is a
        # record the previous process did not finish writing, unless whole records follow it (then the
        # "incomplete" record is a corrupt length field, and the reader will skip it).
        if end < len(data) and not _has_whole_record_after(data, end):
            with open(path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
            self.stats.truncated_bytes += len(data) - end

    def _open_segment(self) -> None:
        path = self.directory / _name(self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._sizes[self._segment] = self._size
        _fsync_dir(self.directory)

    # -- writing --------------------------------------------------------------------------------------

    def add(self, event_id: bytes, payload: bytes) -> bool:
        """Buffer one record for the next ``flush()``. False when it cannot be kept: the cap is reached, or
        the record is one a reader could not read back (counted in ``stats.oversized``)."""
        if len(payload) > MAX_PAYLOAD or len(event_id) != EVENT_ID_SIZE:
            # A reader takes a record like that for corruption: it would be skipped, or cut off as a torn
            # tail at the next start. Callers bound what they add; this is the last line.
            self.stats.oversized += 1
            return False
        if self._bytes + len(self._pending) + self.external_bytes >= self.max_bytes:
            self.full = True
            return self._refuse()
        self._pending += frame(event_id, payload)
        self._pending_records += 1
        return True

    def flush(self) -> bool:
        """Write the buffered records with one write(). False when they could not be kept (disk full or
        failing); they are counted as undurable."""
        records = self._pending_records
        if not records:
            return True
        data, self._pending, self._pending_records = self._pending, bytearray(), 0
        if (self._rotate_next or self._size >= self.segment_bytes) and not self._rotate():
            return self._refuse(records)
        try:
            written = os.write(self._fd, data)
        except OSError:
            return self._refuse(records)
        if written != len(data):
            # A partial write (the disk filled mid-write): cut it off, or leave this segment behind.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._rotate_next = True
            return self._refuse(records)
        self._size += written
        self._bytes += written
        self._sizes[self._segment] = self._size
        self.stats.appended += records
        self._since_sync += records
        self._unsynced = True
        if self._bytes + self.external_bytes < self.max_bytes:  # the disk takes writes; a cap reached still holds
            self.healthy = True
            self.full = False
        return True

    def append(self, event_id: bytes, payload: bytes) -> bool:
        """Write one record now (with any buffered before it). False when it could not be kept."""
        return self.add(event_id, payload) and self.flush()

    def probe(self) -> bool:
        """After a refused append: is there room again? Writes and removes one page-sized file, so a
        recovered disk is noticed even when no clicks arrive (a load balancer has moved them away)."""
        if self._bytes + self.external_bytes >= self.max_bytes:
            return False
        path = self.directory / "probe"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                written = os.write(fd, b"\0" * PROBE_BYTES)
                os.fsync(fd)  # a disk that fails its fsyncs is not healthy either
            finally:
                os.close(fd)
                os.unlink(path)
        except OSError:
            return False
        if written == PROBE_BYTES:
            self.healthy = True
            self.full = False
        return self.healthy

    def _refuse(self, records: int = 1) -> bool:
        self.stats.undurable += records
        self.healthy = False
        return False

    def _rotate(self) -> bool:
        try:
            next_fd = os.open(
                self.directory / _name(self._segment + 1),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                0o600,
            )
        except OSError:
            return False
        self._retired_fds.append(self._fd)
        self._fd = next_fd
        self._segment += 1
        self._size = 0
        self._sizes[self._segment] = 0
        self._rotate_next = False
        self._unsynced = True
        return True

    @property
    def position(self) -> Position:
        """Where the next record will be written."""
        return Position(self._segment, self._size)

    @property
    def needs_sync(self) -> bool:
        return self._unsynced or bool(self._retired_fds) or self._pending_records > 0

    def sync_targets(self) -> tuple[list[int], int]:
        """The descriptors a sync must cover and how many records it makes durable (call on the loop);
        buffered records are written first."""
        self.flush()
        targets = [*self._retired_fds, self._fd]
        records, self._since_sync = self._since_sync, 0
        self._unsynced = False
        return targets, records

    def sync_fds(self, fds: list[int]) -> None:
        """fdatasync the given descriptors (call from a worker thread); raises OSError on failure."""
        for fd in fds:
            os.fdatasync(fd)
        if len(fds) > 1:
            _fsync_dir(self.directory)

    def sync_done(self, fds: list[int], ok: bool, records: int = 0) -> None:
        """After a sync (on the loop): close retired segments it covered. A failed sync means the
        ``records`` it covered may be lost: they are counted as not durable, the spool reports itself
        unhealthy (readyz 503) until a probe write and fsync succeed, and writing moves to a new segment."""
        for fd in fds[:-1]:
            if fd in self._retired_fds:
                self._retired_fds.remove(fd)
                os.close(fd)
        if not ok:
            # After a failed fsync the kernel may have dropped the dirty pages: never trust this file again.
            self.stats.sync_errors += 1
            self.stats.undurable += records
            self.healthy = False
            self._rotate_next = True
            self._unsynced = True

    def sync(self) -> None:
        """Synchronous group sync, for tests and for shutdown."""
        fds, records = self.sync_targets()
        try:
            self.sync_fds(fds)
        except OSError:
            self.sync_done(fds, ok=False, records=records)
            raise
        self.sync_done(fds, ok=True)

    # -- reading and acknowledging ------------------------------------------------------------------

    @property
    def acknowledged(self) -> Position:
        return self._ack

    @property
    def unacknowledged_bytes(self) -> int:
        return self._bytes

    @property
    def unacknowledged_records(self) -> int:
        """Appended by this process or found at start (once counted), less those acknowledged."""
        return max(0, self.stats.replayed + self.stats.appended - self.stats.acked)

    @property
    def empty(self) -> bool:
        return self._ack >= self.position

    def read(self, limit: int, *, max_bytes: int = 1 << 62) -> Batch:
        """Up to ``limit`` records (and about ``max_bytes``) from the acknowledged position, and where they
        end. Reads files: the edge's shipper calls ``snapshot()`` on its event loop and ``read_frames`` in a
        worker thread instead."""
        return self.read_from(self.snapshot(), limit, max_bytes=max_bytes)

    def snapshot(self) -> SpoolView:
        """What a reader may read, as of now (call it where the spool is written: on the event loop)."""
        return SpoolView(dict(self._sizes), self._segment, self._ack, self._own_from)

    def read_from(self, view: SpoolView, limit: int, *, max_bytes: int = 1 << 62) -> Batch:
        """``read`` within ``view``: touches only the view and the files, so it may run in another thread
        while the owner appends (it reads no further than the sizes the view recorded)."""
        pos = view.acknowledged
        sizes = view.sizes
        records: list[tuple[bytes, bytes]] = []
        corrupt = 0
        budget = max_bytes
        resyncing = False
        # Past the budget, a corrupt stretch already counted is still read to its end: a batch that ended
        # inside it would leave the rest to the next batch, which would count it again.
        while len(records) < limit and (budget > 0 or resyncing):
            size = sizes.get(pos.segment)
            active = pos.segment == view.active
            if size is None or pos.offset >= size:
                later = [s for s in sizes if s > pos.segment]
                if active or not later:
                    break
                pos = Position(min(later), 0)
                resyncing = False  # a stretch never runs on into another file
                continue
            try:
                with open(self.directory / _name(pos.segment), "rb") as f:
                    f.seek(pos.offset)
                    chunk = f.read(min(self.read_chunk, size - pos.offset))
            except FileNotFoundError:
                pos = Position(pos.segment, size)
                continue
            # A segment no longer written to will never grow: an incomplete record in it is corrupt.
            final = not active and pos.offset + len(chunk) >= size
            got, used, bad, resyncing = parse(
                chunk, 0, limit - len(records), final=final, max_bytes=max(budget, 1), resyncing=resyncing
            )
            records.extend(got)
            corrupt += bad
            budget -= used
            if used == 0:
                break
            pos = Position(pos.segment, pos.offset + used)
        return Batch(records, pos, corrupt)

    def read_frames(self, view: SpoolView, limit: int, *, max_bytes: int = 1 << 62) -> Frames:
        """Up to ``limit`` records (and about ``max_bytes``) from the acknowledged position as their own bytes,
        for the shipper to send as they are. Like ``read_from`` it touches only the view and the files.

        A segment this process wrote holds whole records only (its size moves after each whole write, and
        the view's sizes bound the read), so its bytes are taken as they are, found by the length fields
        alone: no record is decoded, checked or framed again on the edge. A segment an earlier process left
        may be torn or damaged: it is parsed and checked as ``read_from`` does, and only intact records are
        sent. The collector checks every record's CRC either way."""
        pos = view.acknowledged
        sizes = view.sizes
        parts: list[bytes] = []
        count = corrupt = 0
        budget = max_bytes
        resyncing = False
        while count < limit and (budget > 0 or resyncing):
            size = sizes.get(pos.segment)
            active = pos.segment == view.active
            if size is None or pos.offset >= size:
                later = [s for s in sizes if s > pos.segment]
                if active or not later:
                    break
                pos = Position(min(later), 0)
                resyncing = False
                continue
            own = pos.segment >= view.own_from
            # A sequential read of about what the batch needs (a whole segment's chunk for a damaged one).
            want = min(self.read_chunk, size - pos.offset)
            if own:
                want = min(want, max(OWN_READ_MIN, (limit - count) * OWN_READ_PER_RECORD))
            try:
                with open(self.directory / _name(pos.segment), "rb") as f:
                    f.seek(pos.offset)
                    chunk = f.read(want)
            except FileNotFoundError:
                pos = Position(pos.segment, size)
                continue
            used, got = walk(chunk, limit - count, budget) if own else (0, 0)
            if got:
                parts.append(chunk if used == len(chunk) else chunk[:used])
            else:
                # Not this process's segment, or its bytes are not what this process wrote: check each record.
                final = not active and pos.offset + len(chunk) >= size
                parsed = parse(chunk, 0, limit - count, final=final, max_bytes=max(budget, 1), resyncing=resyncing)
                clean = parsed.corrupt == 0 and not resyncing
                used, got, resyncing = parsed.end, len(parsed.records), parsed.resyncing
                corrupt += parsed.corrupt
                if got:
                    parts.append(chunk[:used] if clean else b"".join(frame(e, p) for e, p in parsed.records))
                if used == 0:
                    break
            count += got
            budget -= used
            pos = Position(pos.segment, pos.offset + used)
        return Frames(parts[0] if len(parts) == 1 else b"".join(parts), count, pos, corrupt)

    def ack(self, end: Position, records: int = 0, corrupt: int = 0) -> None:
        """Everything before ``end`` is committed (``records`` records, ``corrupt`` skipped on the way):
        record that, and free what it can."""
        if end <= self._ack:
            return
        self.stats.acked += records
        self.stats.corrupt += corrupt  # counted once, here, however often the batch was read
        # Move past a finished segment, so it can be deleted now rather than at the next batch.
        if end.segment != self._segment and end.offset >= self._sizes.get(end.segment, 0):
            later = [s for s in self._sizes if s > end.segment]
            if later:
                end = Position(min(later), 0)
        self._ack = end
        # Delete first: on a full disk that is what makes room. A ledger older than the deletions is
        # harmless (a reader skips segments that are gone; the collector drops what it already has).
        # Everything written is committed: start a fresh segment, so the space the active one holds can be
        # given back too. Needed when the disk filled up inside a segment; thrifty once it has grown.
        if self._ack >= self.position and (not self.healthy or self._size >= ROTATE_DRAINED_AT) and self._rotate():
            end = self._ack = Position(self._segment, 0)
        for seg in [s for s in self._sizes if s < end.segment]:
            self._unlink(seg)
        self._recount()
        # Overwritten in place, within one block, so it needs no new space on a full disk. Not fsynced:
        # if a crash loses the newest ledger, an older one replays a little more, which is dropped as
        # duplicate; a torn one fails its checksum and replays everything present.
        line = f"{end.segment} {end.offset}".encode()
        record = b"%b %d\n" % (line, zlib.crc32(line))
        try:
            os.pwrite(self._ack_fd, record.ljust(LEDGER_SIZE, b" "), 0)
        except OSError as exc:
            self.stats.ledger_errors += 1
            self.ledger_error = exc

    def _unlink(self, seg: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / _name(seg))
        self._sizes.pop(seg, None)

    def _recount(self) -> None:
        self._bytes = sum(size for seg, size in self._sizes.items() if seg >= self._ack.segment) - (
            self._ack.offset if self._ack.segment in self._sizes else 0
        )

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
        for fd in [*self._retired_fds, self._fd]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._retired_fds.clear()
        self._fd = -1
        for fd in (self._ack_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._ack_fd = self._lock_fd = -1


def _name(seg: int) -> str:
    return f"{seg:016d}{SEGMENT_SUFFIX}"


def _has_whole_record_after(data: bytes, pos: int) -> bool:
    return bool(parse(data, pos + 1).records)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)
