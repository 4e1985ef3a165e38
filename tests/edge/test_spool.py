"""The spool alone: framing, recovery from torn and corrupt segments, bounds, failures of the disk under it
(short writes, a rotation that cannot open the next segment, a ledger that cannot be written, a segment gone
during a read), and a state machine."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from common.frames import decode
from edge.spool import HEADER_SIZE, MAX_PAYLOAD, Position, Spool, SpoolLockedError, _name, frame, parse
from tests.faults.harness import tiny_filesystem


def eid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def payload(n: int) -> bytes:
    return f'[{n},"Mozilla/5.0 test {n}"]'.encode()


def fill(spool: Spool, first: int, count: int) -> None:
    for n in range(first, first + count):
        assert spool.append(eid(n), payload(n))


def drain(spool: Spool, batch: int = 7) -> list[int]:
    got: list[int] = []
    while True:
        b = spool.read(batch)
        got.extend(int.from_bytes(e, "big") for e, _ in b.records)
        spool.ack(b.end, len(b.records), b.corrupt)
        if not b.records:
            return got


def opened(directory: Path, **kw: int) -> Spool:
    spool = Spool(directory, **kw)
    spool.open()
    return spool


def test_frame_round_trip_and_resync() -> None:
    data = frame(eid(1), payload(1)) + b"garbage" + frame(eid(2), payload(2))
    records, end, corrupt, _ = parse(data, final=True)
    assert [r[0] for r in records] == [eid(1), eid(2)]
    assert (end, corrupt) == (len(data), 1)


def test_parse_counts_every_corrupt_stretch_and_takes_an_empty_payload() -> None:
    data = b"junk" + frame(eid(1), payload(1)) + b"more junk" + frame(eid(2), payload(2)) + frame(eid(3), b"")
    records, end, corrupt, resyncing = parse(data, final=True)
    assert records == [(eid(1), payload(1)), (eid(2), payload(2)), (eid(3), b"")]
    assert (end, corrupt, resyncing) == (len(data), 2, False)


def test_parse_does_not_count_again_a_stretch_the_previous_chunk_counted() -> None:
    data = b"rest of a stretch" + frame(eid(1), payload(1)) + b"junk"
    assert parse(data, final=True, resyncing=True)[1:] == (len(data), 1, False)  # only the later stretch
    assert parse(data, final=True)[1:] == (len(data), 2, False)
    assert parse(data, final=True, resyncing=True).records == [(eid(1), payload(1))]


def test_a_directory_fsync_the_filesystem_does_not_support_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = os.fsync

    def directories_unsupported(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")  # as some filesystems answer for a directory
        fsync(fd)

    monkeypatch.setattr(os, "fsync", directories_unsupported)
    spool = opened(tmp_path, segment_bytes=200)  # opening makes a segment, and fsyncs the directory
    fill(spool, 0, 10)
    fds, _ = spool.sync_targets()
    assert len(fds) > 1
    spool.sync_fds(fds)  # ...as a sync does after segments were made
    assert drain(spool) == list(range(10))
    spool.close()


def test_a_directory_fsync_that_fails_fails_the_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = opened(tmp_path, segment_bytes=200)
    fill(spool, 0, 10)
    fds, _ = spool.sync_targets()
    assert len(fds) > 1  # segments were made since the last sync: the directory must be synced too

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        spool.sync_fds(fds)
    monkeypatch.undo()
    spool.close()


def test_records_survive_restart_and_acked_ones_are_not_replayed(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=500)
    fill(spool, 0, 30)
    batch = spool.read(10)
    spool.ack(batch.end)
    spool.close()  # as after kill -9: nothing synced, nothing flushed beyond write()

    again = opened(tmp_path, segment_bytes=500)
    assert again.count_records(again.backlog()) == 20
    assert drain(again) == list(range(10, 30))
    assert again.empty
    assert again.segments() == [again.position.segment]  # acknowledged segments are deleted


def test_files_are_private_and_the_directory_is_locked(tmp_path: Path) -> None:
    spool = opened(tmp_path / "spool")
    fill(spool, 0, 1)
    spool.ack(spool.read(1).end)
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    for entry in (tmp_path / "spool").iterdir():
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600, entry
    with pytest.raises(SpoolLockedError, match=str(os.getpid())):
        opened(tmp_path / "spool")
    spool.close()
    opened(tmp_path / "spool").close()


def test_segments_made_by_rotation_are_private_too(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=200)
    fill(spool, 0, 20)
    assert len(spool.segments()) > 3
    for seg in tmp_path.glob("*.seg"):
        assert stat.S_IMODE(seg.stat().st_mode) == 0o600, seg
    spool.close()


def test_a_segment_takes_records_until_it_is_full(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=500)
    fill(spool, 0, 60)
    sizes = [seg.stat().st_size for seg in sorted(tmp_path.glob("*.seg"))]
    assert all(500 <= size < 500 + len(frame(eid(0), payload(99))) for size in sizes[:-1]), sizes
    spool.close()


def test_torn_tail_is_cut_at_start(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 5)
    spool.close()
    seg = tmp_path / f"{spool.position.segment:016d}.seg"
    whole = seg.read_bytes()
    seg.write_bytes(whole + frame(eid(99), payload(99))[:-3])  # the last write was cut short

    again = opened(tmp_path)
    assert again.stats.truncated_bytes == HEADER_SIZE + len(payload(99)) - 3
    assert seg.read_bytes() == whole
    assert drain(again) == list(range(5))
    assert again.stats.corrupt == 0


def test_a_torn_record_alone_in_a_later_segment_is_cut(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 10)
    spool.ack(spool.read(8).end, 8)  # the ledger points into the middle of the segment
    ledger = spool.acknowledged
    spool.close()
    later = tmp_path / f"{ledger.segment + 1:016d}.seg"
    later.write_bytes(frame(eid(99), payload(99))[:11])  # the next process died in its first write()

    again = opened(tmp_path)
    assert later.stat().st_size == 0 and again.stats.truncated_bytes == 11
    assert drain(again) == [8, 9]
    assert again.stats.corrupt == 0


def test_the_backlog_is_what_an_earlier_process_left(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=500)
    fill(spool, 0, 30)
    spool.ack(spool.read(5).end, 5)
    assert spool.acknowledged.offset > 0  # in the middle of a segment
    spool.close()

    again = opened(tmp_path, segment_bytes=500)
    ranges = again.backlog()  # taken on the loop; the records are counted off it...
    fill(again, 100, 3)  # ...while this process goes on spooling clicks of its own
    assert again.count_records(ranges) == 25
    assert again.stats.replayed == 25 and again.unacknowledged_records == 28
    for seg, _ in ranges:  # acknowledged (and deleted) before they were counted: nothing to count
        (tmp_path / f"{seg:016d}.seg").unlink()
    assert again.count_records(ranges) == 0
    again.close()


def test_bit_flipped_record_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 10)
    spool.close()
    seg = tmp_path / f"{spool.position.segment:016d}.seg"
    data = bytearray(seg.read_bytes())
    size = HEADER_SIZE + len(payload(0))
    data[4 * size + HEADER_SIZE + 3] ^= 0x10  # inside record 4's payload
    seg.write_bytes(bytes(data))

    again = opened(tmp_path)
    assert drain(again) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert again.stats.corrupt == 1


def test_corrupt_length_does_not_hide_the_records_after_it(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 6)
    spool.close()
    seg = tmp_path / f"{spool.position.segment:016d}.seg"
    data = bytearray(seg.read_bytes())
    size = HEADER_SIZE + len(payload(0))
    data[2 * size + 2 : 2 * size + 6] = (4000).to_bytes(4, "big")  # record 2 claims to run on
    seg.write_bytes(bytes(data))

    again = opened(tmp_path)
    assert again.stats.truncated_bytes == 0  # whole records follow: not a torn tail
    assert again.count_records(again.backlog()) == 5  # nor do they hide from the count of the backlog
    assert drain(again) == [0, 1, 3, 4, 5]
    assert again.stats.corrupt == 1


def test_size_cap_refuses_new_records_and_never_drops_old_ones(tmp_path: Path) -> None:
    spool = opened(tmp_path, max_bytes=1000)
    n = 0
    while spool.append(eid(n), payload(n)):
        n += 1
    assert spool.full and not spool.healthy
    assert spool.stats.undurable == 1
    assert not spool.append(eid(n + 1), payload(n + 1))
    assert spool.stats.undurable == 2
    got = drain(spool)
    assert got == list(range(n))  # everything kept is delivered, oldest first
    assert spool.append(eid(500), payload(500))  # room again: accepted, healthy again
    assert spool.healthy and not spool.full


def test_the_dead_letter_file_counts_against_the_cap(tmp_path: Path) -> None:
    record = len(frame(eid(0), payload(0)))
    spool = opened(tmp_path, max_bytes=10 * record)
    spool.external_bytes = 9 * record  # the dead-letter file beside the spool
    assert spool.append(eid(0), payload(0))  # the cap, exactly
    assert not spool.append(eid(1), payload(1))
    assert spool.full and not spool.healthy
    assert not spool.probe() and spool.full  # no room yet: not even a probe write
    spool.external_bytes = 0  # the dead-letter file was emptied
    assert spool.probe() and spool.healthy and not spool.full
    assert drain(spool) == [0]
    spool.close()


def test_reads_are_bounded_in_bytes(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 100)
    record = HEADER_SIZE + len(payload(0))
    batch = spool.read(1000, max_bytes=10 * record)
    assert 10 <= len(batch.records) <= 11
    assert drain(spool) == list(range(100))


def test_ack_ledger_lost_replays_everything(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 4)
    spool.ack(spool.read(2).end)
    spool.close()
    (tmp_path / "ack").write_text("1 99999 12345\n")  # checksum does not match: not trusted
    again = opened(tmp_path)
    assert drain(again) == [0, 1, 2, 3]  # duplicates are fine: the collector drops them


def test_sync_makes_data_durable_and_closes_rotated_segments(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=200)
    fill(spool, 0, 20)
    assert spool.needs_sync
    spool.sync()
    assert not spool.needs_sync
    assert drain(spool) == list(range(20))


class SpoolMachine(RuleBasedStateMachine):
    """Random appends, syncs, crashes, torn writes, restarts, reads and acknowledgements.

    Every appended record must be delivered at least once, in order within each delivery pass, and the
    positions must stay consistent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-sm-"))
        self.spool = opened(self.dir, segment_bytes=300, max_bytes=10_000)
        self.next_id = 0
        self.appended: list[int] = []
        self.delivered: set[int] = set()
        self.pending: Position | None = None
        self.buffered: list[int] = []  # add()ed, not yet flush()ed

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @precondition(lambda self: not self.buffered)
    @rule(count=st.integers(1, 12))
    def append(self, count: int) -> None:
        for _ in range(count):
            n = self.next_id
            self.next_id += 1
            if self.spool.append(eid(n), payload(n)):
                self.appended.append(n)

    @rule(count=st.integers(1, 12))
    def add(self, count: int) -> None:
        for _ in range(count):
            n = self.next_id
            self.next_id += 1
            if self.spool.add(eid(n), payload(n)):
                self.buffered.append(n)

    @rule()
    def flush(self) -> None:
        if self.spool.flush():
            self.appended.extend(self.buffered)
        self.buffered = []

    @rule()
    def sync(self) -> None:
        self.flush()  # a sync writes what is buffered first
        self.spool.sync()

    @rule(limit=st.integers(1, 20), acknowledge=st.booleans())
    def read(self, limit: int, acknowledge: bool) -> None:
        batch = self.spool.read(limit)
        ids = [int.from_bytes(e, "big") for e, _ in batch.records]
        assert ids == sorted(ids)
        assert batch.end >= self.spool.acknowledged
        assert set(ids) <= set(self.appended)  # nothing that was refused or torn is ever delivered
        if acknowledge:
            self.delivered.update(ids)
            self.spool.ack(batch.end, len(batch.records), batch.corrupt)

    @rule(torn=st.booleans())
    def crash_and_restart(self, torn: bool) -> None:
        self.flush()  # buffered records were never answered; the edge flushes before it answers
        position = self.spool.position
        self.spool.close()
        if torn:  # the process died in the middle of a write()
            with open(self.dir / f"{position.segment:016d}.seg", "ab") as f:
                f.write(frame(eid(10**9), payload(0))[:11])
        self.spool = opened(self.dir, segment_bytes=300, max_bytes=10_000)
        # The torn record, and nothing else, is cut off (it is never read: see the invariant).
        assert self.spool.stats.truncated_bytes == (11 if torn else 0)

    @precondition(lambda self: len(self.appended) > 0 and not self.buffered)
    @rule()
    def drain_all(self) -> None:
        got = drain(self.spool, batch=5)
        self.delivered.update(got)
        assert set(self.appended) == self.delivered
        assert self.spool.empty
        assert self.spool.unacknowledged_bytes == 0

    @invariant()
    def positions_are_consistent(self) -> None:
        assert self.spool.acknowledged <= self.spool.position
        assert 0 <= self.spool.unacknowledged_bytes <= 10_000 + 200
        # Nothing in this machine corrupts a record, and torn tails are cut at start: a reader never meets a
        # corrupt one (ack() counts what the reads skipped).
        assert self.spool.stats.corrupt == 0


TestSpoolMachine = SpoolMachine.TestCase
TestSpoolMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_records_across_read_chunks_and_a_corrupt_stretch_at_a_boundary(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=1 << 20)
    fill(spool, 0, 400)
    spool.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    start = sum(HEADER_SIZE + len(payload(n)) for n in range(100))
    end = start + sum(HEADER_SIZE + len(payload(n)) for n in range(100, 103))
    data[start:end] = b"\xee" * (end - start)  # records 100, 101 and 102 overwritten with garbage
    seg.write_bytes(bytes(data))
    again = opened(tmp_path)
    again.read_chunk = 107  # chunks end mid-record and mid-garbage
    assert len(again.read(7).records) == 7  # the limit holds across chunks
    got = drain(again, batch=50)
    assert got == [n for n in range(400) if not 100 <= n < 103]
    assert again.stats.corrupt == 1  # one corrupt stretch, counted once however it was read


def corrupted_segment(directory: Path, garbage: int) -> None:
    """A spool directory left with one segment: records 0-13 and two corrupt stretches, the first 37 bytes
    long, the second ``garbage`` bytes (longer than several read chunks, when it is 441)."""
    directory.mkdir()
    data = b"".join(frame(eid(n), payload(n)) for n in range(6))
    data += b"\xee" * 37 + b"".join(frame(eid(n), payload(n)) for n in range(6, 10))
    data += b"\xee" * garbage + b"".join(frame(eid(n), payload(n)) for n in range(10, 14))
    (directory / f"{1:016d}.seg").write_bytes(data)


@pytest.mark.parametrize("garbage", [41, 441])
def test_each_corrupt_stretch_counts_once_wherever_a_read_chunk_ends(tmp_path: Path, garbage: int) -> None:
    corrupted_segment(tmp_path / "s", garbage)
    spool = opened(tmp_path / "s")
    try:
        for chunk in range(60, 400):  # every alignment of a chunk's end with the records and the stretches
            spool.read_chunk = chunk
            batch = spool.read(1000)
            assert [int.from_bytes(e, "big") for e, _ in batch.records] == list(range(14)), chunk
            assert batch.corrupt == 2, chunk
    finally:
        spool.close()


@pytest.mark.parametrize("garbage", [41, 441])
def test_each_corrupt_stretch_counts_once_wherever_a_batch_ends(tmp_path: Path, garbage: int) -> None:
    # Batches bounded in bytes, as the shipper reads them: one may end inside a stretch.
    for chunk, budget in itertools.product((60, 97, 150, 288), range(40, 400, 9)):
        corrupted_segment(tmp_path / f"{chunk}-{budget}", garbage)
        spool = opened(tmp_path / f"{chunk}-{budget}")
        spool.read_chunk = chunk
        got: list[int] = []
        try:
            while True:
                batch = spool.read(1000, max_bytes=budget)
                got += [int.from_bytes(e, "big") for e, _ in batch.records]
                spool.ack(batch.end, len(batch.records), batch.corrupt)
                if batch.end >= spool.position:
                    break
            assert (got, spool.stats.corrupt) == (list(range(14)), 2), (chunk, budget)
        finally:
            spool.close()


def test_added_records_are_written_together_by_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = opened(tmp_path)
    writes: list[int] = []
    real_write = os.write

    def counting(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting)
    for n in range(3):
        assert spool.add(eid(n), payload(n))
    assert spool.read(10).records == [] and spool.position == Position(1, 0)  # nothing written yet
    assert spool.needs_sync  # a sync must write them first
    assert spool.flush()
    assert writes == [sum(len(frame(eid(n), payload(n))) for n in range(3))]
    assert drain(spool) == [0, 1, 2]
    assert spool.flush() and len(writes) == 1  # nothing buffered: no write
    assert spool.stats.appended == 3


def test_a_failed_flush_counts_every_buffered_click(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = opened(tmp_path)
    for n in range(4):
        assert spool.add(eid(n), payload(n))

    def failing(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", failing)
    assert not spool.flush()
    assert not spool.healthy and spool.stats.undurable == 4 and spool.stats.appended == 0
    monkeypatch.undo()
    assert spool.append(eid(9), payload(9)) and spool.healthy
    assert drain(spool) == [9]


def test_a_cap_reached_within_one_pass_still_says_full_after_the_flush(tmp_path: Path) -> None:
    record = len(frame(eid(0), payload(0)))
    spool = opened(tmp_path, segment_bytes=record, max_bytes=record)
    assert spool.add(eid(0), payload(0))  # fills the cap once written
    assert not spool.add(eid(1), payload(1))  # refused: no room once the first is counted
    assert spool.flush()
    assert spool.full and not spool.healthy and spool.stats.undurable == 1
    assert drain(spool) == [0]


def test_a_failed_fsync_counts_its_clicks_as_not_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 3)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        spool.sync()
    assert not spool.healthy and spool.stats.undurable == 3 and spool.stats.sync_errors == 1
    monkeypatch.setattr(os, "fsync", failing)
    assert not spool.probe()  # the disk still fails its fsyncs: still not healthy
    monkeypatch.undo()
    assert spool.probe() and spool.healthy
    assert spool.append(eid(3), payload(3))
    assert spool.position.segment > 1  # never again into the segment whose fsync failed


def test_each_failed_fsync_counts_the_clicks_since_the_last_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 3)
    spool.sync()  # these three are durable

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    fill(spool, 3, 2)
    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        spool.sync()
    assert (spool.stats.sync_errors, spool.stats.undurable) == (1, 2)
    fill(spool, 5, 1)
    with pytest.raises(OSError):
        spool.sync()
    assert (spool.stats.sync_errors, spool.stats.undurable) == (2, 3)
    spool.close()


def test_a_sync_fsyncs_the_directory_after_a_segment_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A new segment's name is in the directory: without an fsync of the directory a power loss can lose
    # the file with its clicks. Without a new segment there is nothing to fsync there.
    spool = opened(tmp_path, segment_bytes=200)
    directories: list[int] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            directories.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    fill(spool, 0, 2)
    spool.sync()
    assert directories == []
    first = spool.position.segment
    fill(spool, 2, 6)
    assert spool.position.segment == first + 1
    spool.sync()
    assert len(directories) == 1
    spool.close()


def test_a_partial_write_is_cut_off_and_the_next_write_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opened(tmp_path, segment_bytes=200)
    fill(spool, 0, 6)  # into a segment made by rotation
    real_write = os.write

    def half(fd: int, data: bytes) -> int:  # the disk filled up in the middle of the write
        return real_write(fd, bytes(data)[: len(data) // 2])

    monkeypatch.setattr(os, "write", half)
    assert spool.add(eid(6), payload(6)) and spool.add(eid(7), payload(7))
    assert not spool.flush()
    assert spool.stats.undurable == 2
    monkeypatch.undo()
    fill(spool, 8, 2)
    assert drain(spool) == [0, 1, 2, 3, 4, 5, 8, 9]
    assert spool.stats.corrupt == 0  # no half record, no hole left behind
    spool.close()


def test_a_segment_that_cannot_be_made_refuses_the_clicks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = opened(tmp_path, segment_bytes=200)
    while spool.position.offset < 200:
        fill(spool, spool.stats.appended, 1)
    full_segment = spool.position
    real_open = os.open

    def no_new_files(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".seg"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_new_files)
    assert not spool.append(eid(50), payload(50))  # not written into the segment that is full
    assert spool.stats.undurable == 1 and not spool.healthy and spool.position == full_segment
    monkeypatch.undo()
    assert spool.append(eid(51), payload(51)) and spool.position.segment == full_segment.segment + 1
    assert drain(spool)[-1] == 51
    spool.close()


def test_new_segments_never_reuse_the_ledgers_number(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=300)
    fill(spool, 0, 10)
    spool.ack(spool.read(3).end, 3)
    ledger_segment = spool.acknowledged.segment
    spool.close()
    for seg in tmp_path.glob("*.seg"):  # the segments are gone, the ledger is not
        seg.unlink()
    again = opened(tmp_path, segment_bytes=300)
    assert again.position.segment > ledger_segment
    fill(again, 100, 10)
    assert drain(again) == list(range(100, 110))


def test_a_drained_spool_gives_back_its_active_segment(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=16 << 20)
    fill(spool, 0, 20)
    spool.healthy = False  # as after the disk filled up inside this segment
    first = spool.position.segment
    assert drain(spool) == list(range(20))
    spool.sync()  # closes the rotated-away segment
    assert spool.position.segment == first + 1
    assert not (tmp_path / f"{first:016d}.seg").exists()
    assert spool.append(eid(20), payload(20))  # the first record of the fresh segment is read too
    assert drain(spool) == [20] and spool.stats.corrupt == 0


def test_the_spool_never_accepts_a_record_it_could_not_read_back(tmp_path: Path) -> None:
    spool = opened(tmp_path / "s")
    try:
        assert not spool.add(eid(1), b"x" * (MAX_PAYLOAD + 1))  # a reader would take it for corruption
        assert not spool.add(b"short", payload(2))  # an event id is 16 bytes
        assert spool.stats.oversized == 2 and spool.healthy  # refused and counted; the spool itself is fine
        assert spool.add(eid(3), b"y" * MAX_PAYLOAD) and spool.flush()
        spool.sync()
    finally:
        spool.close()
    spool = opened(tmp_path / "s")  # a restart: nothing is cut off as a torn tail, nothing is corrupt
    try:
        batch = spool.read(10)
        assert [(e, len(p)) for e, p in batch.records] == [(eid(3), MAX_PAYLOAD)]
        assert batch.corrupt == 0 and spool.stats.truncated_bytes == 0
    finally:
        spool.close()


def test_a_snapshot_bounds_what_a_reader_in_another_thread_reads(tmp_path: Path) -> None:
    spool = opened(tmp_path / "s")
    try:
        fill(spool, 0, 3)
        view = spool.snapshot()
        fill(spool, 3, 2)  # written after the snapshot: not read from it
        batch = spool.read_from(view, 100)
        assert [int.from_bytes(e, "big") for e, _ in batch.records] == [0, 1, 2]
        assert batch.end == Position(view.active, view.sizes[view.active])
        spool.ack(batch.end, 3)
        view = spool.snapshot()  # now from an acknowledged position inside the segment
        fill(spool, 5, 2)
        assert [int.from_bytes(e, "big") for e, _ in spool.read_from(view, 100).records] == [3, 4]
    finally:
        spool.close()


def ids(records: list[tuple[bytes, bytes]]) -> list[int]:
    return [int.from_bytes(e, "big") for e, _ in records]


def leave_one_page_free(mount: Path) -> None:
    """Fill the filesystem at ``mount`` but for one page: a write of more than that is cut short."""
    stat_ = os.statvfs(mount)
    with open(mount / "filler", "wb") as f:
        f.write(bytes(stat_.f_bavail * stat_.f_frsize - stat_.f_frsize))


def test_a_short_write_is_cut_off_counted_and_never_read() -> None:
    # A real short write: a tmpfs with one page left takes the first part of a write and returns less than
    # was asked.
    with tiny_filesystem(64) as mount:
        spool = opened(mount / "s")
        try:
            fill(spool, 0, 3)
            before = spool.position
            leave_one_page_free(mount)
            for n in range(3, 203):  # some 10 KB: more than the page left and the rest of the segment's page
                assert spool.add(eid(n), payload(n))
            assert not spool.flush()
            assert spool.stats.undurable == 200 and spool.stats.appended == 3 and not spool.healthy
            # Cut back to where it was: no half record for a reader, or a restart, to find.
            assert spool.position == before
            assert (mount / "s" / _name(before.segment)).stat().st_size == before.offset
            (mount / "filler").unlink()  # room again
            assert spool.append(eid(500), payload(500)) and spool.healthy
            assert drain(spool) == [0, 1, 2, 500] and spool.stats.corrupt == 0
        finally:
            spool.close()


def test_a_short_write_that_cannot_be_cut_off_leaves_its_segment_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same real short write, and cutting it off fails too. ftruncate() to a smaller size does not fail
    # on a filesystem that just took the write, so its failure is injected (the spool is a pure module and
    # calls os.ftruncate itself): what is under test is that the spool never appends after the torn bytes.
    with tiny_filesystem(64) as mount:
        spool = opened(mount / "s")
        try:
            fill(spool, 0, 3)
            torn = spool.position
            leave_one_page_free(mount)
            for n in range(3, 203):
                assert spool.add(eid(n), payload(n))

            def failing(fd: int, length: int) -> None:
                raise OSError(errno.EIO, "Input/output error")

            monkeypatch.setattr(os, "ftruncate", failing)
            assert not spool.flush()
            monkeypatch.undo()
            assert spool.stats.undurable == 200 and not spool.healthy
            (mount / "filler").unlink()
            assert spool.append(eid(500), payload(500)) and spool.healthy
            assert spool.position.segment == torn.segment + 1  # a new segment, not after the torn bytes
            # This process reads only what it knows it wrote: the torn segment up to its last whole record.
            assert drain(spool) == [0, 1, 2, 500] and spool.stats.corrupt == 0
        finally:
            spool.close()


def test_a_rotation_that_cannot_open_the_next_segment_refuses_the_pass_and_the_next_pass_rotates(
    tmp_path: Path,
) -> None:
    record = len(frame(eid(0), payload(0)))
    spool = opened(tmp_path, segment_bytes=3 * record)
    try:
        fill(spool, 0, 3)  # the segment is full: the next write opens the next one
        full = spool.position
        # A real failure to open the next segment: a directory stands where it would be created (EISDIR).
        blocker = tmp_path / _name(full.segment + 1)
        blocker.mkdir()
        assert spool.add(eid(3), payload(3)) and spool.add(eid(4), payload(4))
        assert not spool.flush()
        assert spool.stats.undurable == 2 and spool.stats.appended == 3 and not spool.healthy
        assert spool.position == full  # nothing written past the segment's size
        blocker.rmdir()
        assert spool.append(eid(5), payload(5)) and spool.healthy
        assert spool.position.segment == full.segment + 1
        assert drain(spool) == [0, 1, 2, 5] and spool.stats.corrupt == 0
    finally:
        spool.close()


def test_a_ledger_that_cannot_be_written_is_counted_and_a_restart_replays_from_the_last_one_written(
    tmp_path: Path,
) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 6)
    batch = spool.read(2)
    spool.ack(batch.end, 2)
    written = spool.acknowledged
    # The ledger's write fails as on a failing disk: its descriptor now writes to /dev/full, a real device
    # whose every write fails (ENOSPC). A full filesystem cannot do it: the ledger is overwritten in place.
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, spool._ack_fd)
    os.close(full)
    batch = spool.read(2)
    spool.ack(batch.end, 2)
    assert spool.stats.ledger_errors == 1
    assert isinstance(spool.ledger_error, OSError) and spool.ledger_error.errno == errno.ENOSPC
    assert spool.acknowledged == batch.end > written  # shipping goes on from where it is
    assert ids(spool.read(10).records) == [4, 5]
    spool.close()
    again = opened(tmp_path)
    try:
        assert again.acknowledged == written  # the last ledger written
        assert drain(again) == [2, 3, 4, 5]  # 2 and 3 again: duplicates, which the collector drops
    finally:
        again.close()


def test_a_segment_that_vanishes_during_a_read_is_skipped(tmp_path: Path) -> None:
    record = len(frame(eid(0), payload(0)))
    spool = opened(tmp_path, segment_bytes=3 * record)
    try:
        fill(spool, 0, 9)  # three segments of three records
        first = spool.segments()[0]
        view = spool.snapshot()
        # Between the snapshot (on the event loop) and the read (in a worker thread), a segment is deleted.
        os.unlink(tmp_path / _name(first + 1))
        batch = spool.read_from(view, 100)
        assert ids(batch.records) == [0, 1, 2, 6, 7, 8] and batch.corrupt == 0
        assert batch.end == Position(view.active, view.sizes[view.active])
    finally:
        spool.close()
    again = opened(tmp_path)
    try:
        ranges = again.backlog()
        os.unlink(tmp_path / _name(first))  # and while the backlog is counted at the next start
        assert again.count_records(ranges) == 3
    finally:
        again.close()


def test_acknowledging_a_whole_segment_deletes_it_at_once(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=200)
    fill(spool, 0, 10)
    first = tmp_path / f"{spool.segments()[0]:016d}.seg"
    in_first = len(parse(first.read_bytes()).records)
    batch = spool.read(in_first)
    assert batch.end == Position(spool.segments()[0], first.stat().st_size)
    spool.ack(batch.end, in_first)
    assert not first.exists()  # not at the next batch: on a full disk, the room is needed now
    assert drain(spool) == list(range(in_first, 10))
    spool.close()


def test_segments_removed_behind_the_spools_back_are_skipped(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=200)
    fill(spool, 0, 10)
    view = spool.snapshot()
    first = tmp_path / f"{min(view.sizes):016d}.seg"
    in_first = len(parse(first.read_bytes()).records)
    first.unlink()  # after the snapshot, before the read (an operator's clean-up, say)
    batch = spool.read_from(view, 100)
    assert [int.from_bytes(e, "big") for e, _ in batch.records] == list(range(in_first, 10))
    spool.ack(batch.end, len(batch.records))  # deleting what is already gone is no error
    assert spool.empty and set(spool.snapshot().sizes) == set(spool.segments())
    spool.close()
    (tmp_path / f"{0:016d}.seg").write_bytes(frame(eid(99), payload(99)))  # older than the ledger
    again = opened(tmp_path, segment_bytes=200)
    assert not (tmp_path / f"{0:016d}.seg").exists() and drain(again) == []
    again.close()


def test_a_failed_ledger_write_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 3)
    error = OSError(errno.EIO, "Input/output error")

    def failing(fd: int, data: bytes, offset: int) -> int:
        raise error

    monkeypatch.setattr(os, "pwrite", failing)
    spool.ack(spool.read(1).end, 1)
    spool.ack(spool.read(1).end, 1)
    assert spool.stats.ledger_errors == 2 and spool.ledger_error is error
    monkeypatch.undo()
    spool.ack(spool.read(1).end, 1)
    assert spool.stats.ledger_errors == 2 and spool.stats.acked == 3
    spool.close()
    assert drain(opened(tmp_path)) == []  # the last ledger written says everything was acknowledged


# -- from the survivors of `make mutation` (tests/README.md) -----------------------------------------------


def test_a_write_needs_a_sync_without_a_rotation(tmp_path: Path) -> None:
    spool = opened(tmp_path)  # segments far larger than one record: no rotation
    spool.sync()
    assert not spool.needs_sync
    assert spool.append(eid(0), payload(0))
    assert spool.needs_sync  # else the syncer skips it, and fsync=always answers with nothing on disk
    fds, records = spool.sync_targets()
    assert records == 1 and fds
    spool.sync_fds(fds)
    spool.sync_done(fds, ok=True)
    assert not spool.needs_sync
    spool.close()


def test_a_failed_sync_is_tried_again_at_the_next_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = opened(tmp_path)
    assert spool.append(eid(0), payload(0))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        spool.sync()
    assert spool.needs_sync  # no new click needed: the next tick tries (and counts) again
    monkeypatch.undo()
    spool.close()


def test_reaching_the_cap_shared_with_the_dead_letter_file_stays_full(tmp_path: Path) -> None:
    record = len(frame(eid(0), payload(0)))
    spool = opened(tmp_path, max_bytes=2 * record)
    spool.external_bytes = record  # the dead-letter file's share
    assert spool.add(eid(0), payload(0))  # buffered: it fits
    assert not spool.add(eid(1), payload(1))  # with it, the cap is reached: refused, the spool full
    assert spool.flush()  # the first is written...
    assert spool.full and not spool.healthy  # ...and the cap, counted with the dead letters, still holds
    spool.close()


def test_a_spool_directory_is_made_with_its_parents(tmp_path: Path) -> None:
    spool = opened(tmp_path / "spool" / "worker-0")  # a fresh data directory
    assert spool.append(eid(0), payload(0)) and drain(spool) == [0]
    spool.close()


def test_a_corrupt_first_record_of_a_later_segment_is_counted(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=200)
    fill(spool, 0, 10)
    spool.close()
    second = tmp_path / _name(sorted(opened_segments(tmp_path))[1])
    data = bytearray(second.read_bytes())
    data[HEADER_SIZE] ^= 0x01  # the first record's payload: its checksum fails
    second.write_bytes(bytes(data))
    again = opened(tmp_path, segment_bytes=200)
    got = drain(again)
    assert len(got) == 9 and again.stats.corrupt == 1
    again.close()


def opened_segments(directory: Path) -> list[int]:
    return [int(p.name[: -len(".seg")]) for p in directory.glob("*.seg")]


def test_a_finished_segments_garbage_tail_is_one_corrupt_stretch_read_once() -> None:
    data = frame(eid(1), payload(1)) + b"garbage"
    parsed = parse(data, final=True)
    assert (parsed.end, parsed.corrupt, parsed.resyncing) == (len(data), 1, False)  # to its last byte


def test_files_that_are_not_segments_are_left_alone(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 3)
    spool.close()
    for stray in ("notes.seg", "1234abc.seg", "12345678", "0000000000000001.seg.bak"):
        (tmp_path / stray).write_bytes(b"not a segment")
    again = opened(tmp_path)
    assert drain(again) == [0, 1, 2]
    again.close()
    assert all((tmp_path / stray).exists() for stray in ("notes.seg", "1234abc.seg", "12345678"))


# -- read_frames: what the shipper sends ------------------------------------------------------------------------


def drain_frames(spool: Spool, batch: int = 7) -> list[int]:
    """Every record read_frames gives, checked as the collector checks them, acknowledged as the shipper does."""
    got: list[int] = []
    while True:
        frames = spool.read_frames(spool.snapshot(), batch)
        records = decode(frames.body, batch)  # whole, intact records only: the collector's check
        assert len(records) == frames.count
        got.extend(int.from_bytes(e, "big") for e, _ in records)
        spool.ack(frames.end, frames.count, frames.corrupt)
        if not frames.count and frames.end <= spool.acknowledged:
            return got


def test_read_frames_sends_what_this_process_wrote_as_it_is(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=400)  # several segments
    fill(spool, 0, 30)
    written = b"".join((tmp_path / _name(seg)).read_bytes() for seg in sorted(spool._sizes))
    frames = spool.read_frames(spool.snapshot(), 1000)
    assert frames.count == 30 and frames.body == written and frames.corrupt == 0
    assert drain_frames(spool) == list(range(30))  # batches of 7, across segments


def test_read_frames_checks_what_an_earlier_process_left_and_sends_only_intact_records(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 10)
    spool.close()
    seg = tmp_path / _name(spool.position.segment)
    data = bytearray(seg.read_bytes())
    size = HEADER_SIZE + len(payload(0))
    data[4 * size + HEADER_SIZE + 3] ^= 0x10  # inside record 4's payload
    seg.write_bytes(bytes(data))
    again = opened(tmp_path)
    fill(again, 10, 3)  # and this process's own, after the backlog
    assert drain_frames(again, batch=100) == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]
    assert again.stats.corrupt == 1


def test_read_frames_checks_its_own_segment_from_where_its_bytes_are_not_what_it_wrote(tmp_path: Path) -> None:
    # Not a torn write (the view's sizes keep a reader before those), but bytes changed under the spool: the
    # length fields alone would be believed, so the reader checks from the first header that is wrong.
    spool = opened(tmp_path)
    fill(spool, 0, 6)
    seg = tmp_path / _name(spool.position.segment)
    size = HEADER_SIZE + len(payload(0))
    with open(seg, "r+b") as f:
        f.seek(2 * size)
        f.write(b"\x00\x00")  # record 2's magic
    assert drain_frames(spool) == [0, 1, 3, 4, 5]
    assert spool.stats.corrupt == 1


def test_read_frames_is_bounded_in_records_and_bytes(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    fill(spool, 0, 50)
    size = HEADER_SIZE + len(payload(0))
    assert spool.read_frames(spool.snapshot(), 10).count == 10
    small = spool.read_frames(spool.snapshot(), 1000, max_bytes=3 * size)
    assert small.count == 3 and len(small.body) == 3 * size
    assert spool.read_frames(spool.snapshot(), 1000, max_bytes=1).count == 1  # at least one record
