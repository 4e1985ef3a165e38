"""The spool's record format, as the edge writes it and the collector checks it (common/frames.py). Pure."""

from __future__ import annotations

import pytest

from common.frames import HEADER_SIZE, MAX_PAYLOAD, FrameError, decode, frame, parse, walk

RECORDS = [(n.to_bytes(16, "big"), b'["payload %d"]' % n) for n in range(5)]
BODY = b"".join(frame(e, p) for e, p in RECORDS)


def test_decode_gives_back_every_record_in_order() -> None:
    assert decode(BODY, 5) == RECORDS
    assert decode(b"", 5) == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (BODY[:-1], "records[4] at byte"),
        (BODY + b"\xc1", "records[5] at byte"),
        (BODY[:25] + b"\x01" + BODY[26:], "records[0] at byte 0 fails its CRC-32"),
        (b"\x00\x00" + BODY[2:], "does not start with the record magic"),
        (frame(bytes(16), b"x" * (MAX_PAYLOAD + 1)), f"at most {MAX_PAYLOAD}"),
    ],
)
def test_decode_refuses_anything_but_whole_intact_records(body: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why.replace("[", r"\[").replace("]", r"\]")):
        decode(body, 100)


def test_decode_refuses_more_records_than_the_limit() -> None:
    with pytest.raises(FrameError, match="more than 4 records"):
        decode(BODY, 4)


def test_walk_finds_record_boundaries_from_the_length_fields() -> None:
    sizes = [HEADER_SIZE + len(p) for _, p in RECORDS]
    assert walk(BODY, 2, 1 << 20) == (sizes[0] + sizes[1], 2)
    assert walk(BODY, 100, 1 << 20) == (len(BODY), 5)
    assert walk(BODY, 100, 1) == (sizes[0], 1)  # at least one record, whatever the byte budget
    assert walk(BODY[:-1], 100, 1 << 20) == (sum(sizes[:4]), 4)  # an incomplete record is not counted
    # It stops where the bytes are not what the writer wrote, for parse() to check from there.
    assert walk(BODY[: sizes[0]] + b"\x00" + BODY[sizes[0] + 1 :], 100, 1 << 20) == (sizes[0], 1)


def test_parse_skips_and_counts_a_corrupt_record() -> None:
    broken = BODY[: HEADER_SIZE + 3] + b"!" + BODY[HEADER_SIZE + 4 :]
    parsed = parse(broken, final=True)
    assert parsed.records == RECORDS[1:] and parsed.corrupt == 1
