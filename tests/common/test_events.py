"""The batch wire format: every malformed row is refused with a reason naming it."""

from __future__ import annotations

import ipaddress
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.events import (
    BLOCKED,
    MAX_BATCH_CLICKS,
    MAX_USER_AGENT,
    REDIRECT,
    UNSUBSCRIBE,
    BatchError,
    EventIds,
    click_payload,
    decode_batch,
)
from common.signals import MAX_SIGNALS
from edge.spool import MAX_PAYLOAD


def row(**overrides: Any) -> list[Any]:
    base: dict[str, Any] = {
        "event_id": "0" * 31 + "1",
        "clicked_at_us": 1_790_000_000_000_000,
        "campaign_id": 7,
        "link_id": 3,
        "contact_id": 42,
        "sent_at": 1_789_999_000,
        "key_id": 1,
        "client_ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "method": "GET",
    }
    base.update(overrides)
    return list(base.values())


def test_valid_batch_decodes() -> None:
    edge, clicks = decode_batch({"v": 1, "edge": "e1", "clicks": [row(), row(contact_id=None, client_ip="")]})
    assert edge == "e1"
    assert clicks[0].contact_id == 42 and clicks[1].contact_id is None and clicks[1].client_ip is None
    assert clicks[0].clicked_at_us == 1_790_000_000_000_000 and clicks[0].event_id == bytes(15) + b"\x01"


@pytest.mark.parametrize("text", ["203.0.113.9", "0.0.0.0", "2001:db8::1", "::ffff:192.0.2.9", "fe80::1%eth0", "::"])
def test_client_addresses_parse_as_ipaddress_does(text: str) -> None:
    [click] = decode_batch({"v": 1, "edge": "e", "clicks": [row(client_ip=text)]})[1]
    assert click.client_ip == ipaddress.ip_address(text).packed


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object"),
        ({"v": 2, "edge": "e", "clicks": []}, "unsupported batch version"),
        ({"v": 1, "edge": "", "clicks": []}, "'edge'"),
        ({"v": 1, "edge": "e", "clicks": {}}, "'clicks' must be an array"),
        (
            {"v": 1, "edge": "e", "clicks": [[1, 2]]},
            r"clicks\[0\] must be an array of 11 values: .* \(or without signals; or with an outcome after them\)",
        ),
        ({"v": 1, "edge": "e", "clicks": [row(event_id="xyz")]}, r"clicks\[0\].event_id"),
        ({"v": 1, "edge": "e", "clicks": [row(event_id="0" * 30 + " 1")]}, r"clicks\[0\].event_id"),
        ({"v": 1, "edge": "e", "clicks": [row(event_id="0x" + "0" * 30)]}, r"clicks\[0\].event_id"),
        ({"v": 1, "edge": "e", "clicks": [row(event_id="g" * 32)]}, r"clicks\[0\].event_id"),
        ({"v": 1, "edge": "e", "clicks": [row(event_id=12)]}, r"clicks\[0\].event_id"),
        ({"v": 1, "edge": "e", "clicks": [row(key_id=65536)]}, r"clicks\[0\].key_id"),
        ({"v": 1, "edge": "e", "clicks": [row(clicked_at_us=2**32 * 10**6)]}, r"clicks\[0\].clicked_at_us"),
        ({"v": 1, "edge": "e", "clicks": [row(client_ip="1.2.3")]}, r"clicks\[0\].client_ip"),
        ({"v": 1, "edge": "e", "clicks": [row(client_ip=" 1.2.3.4")]}, r"clicks\[0\].client_ip"),
        ({"v": 1, "edge": "e", "clicks": [row(), row(campaign_id=-1)]}, r"clicks\[1\].campaign_id"),
        ({"v": 1, "edge": "e", "clicks": [row(link_id="3")]}, r"clicks\[0\].link_id"),
        ({"v": 1, "edge": "e", "clicks": [row(contact_id=0)]}, r"clicks\[0\].contact_id"),
        ({"v": 1, "edge": "e", "clicks": [row(client_ip="999.1.1.1")]}, r"clicks\[0\].client_ip"),
        ({"v": 1, "edge": "e", "clicks": [row(user_agent="x" * 513)]}, r"clicks\[0\].user_agent"),
        ({"v": 1, "edge": "e", "clicks": [row(method="POST")]}, r"clicks\[0\].method"),
        ({"v": 1, "edge": "e", "clicks": [row(method=["GET"])]}, r"clicks\[0\].method"),
        ({"v": 1, "edge": "e", "clicks": [row(sent_at=True)]}, r"clicks\[0\].sent_at"),
        ({"v": 1, "edge": "e", "clicks": [row()] * (MAX_BATCH_CLICKS + 1)}, "at most 10000"),
    ],
)
def test_malformed_batches_are_refused_with_a_reason(doc: Any, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        decode_batch(doc)


def test_rows_with_and_without_signals_decode() -> None:
    row = ["0" * 32, 1, 1, 1, None, 0, 1, "", "ua", "GET"]
    _, [older, unknown, known] = decode_batch({"v": 1, "edge": "e", "clicks": [row, [*row, None], [*row, 5]]})
    assert (older.signals, unknown.signals, known.signals) == (None, None, 5)  # an older edge's row: unknown
    for bad in (-1, MAX_SIGNALS + 1, "5", 1.0, True):
        with pytest.raises(BatchError, match=r"clicks\[0\]\.signals must be null or an integer from 0 to"):
            decode_batch({"v": 1, "edge": "e", "clicks": [[*row, bad]]})


def test_event_ids_are_unique_and_time_ordered() -> None:
    ids = EventIds()
    made = [ids.next(1_790_000_000_000 + i // 10) for i in range(10_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert made[0][12] == "7"  # UUID version 7


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(), max_size=MAX_USER_AGENT), st.sampled_from(["GET", "HEAD"]))
def test_a_click_payload_always_fits_a_spool_record(user_agent: str, method: str) -> None:
    # The largest of every other field: the edge bounds each (the user agent to MAX_USER_AGENT characters,
    # the address to a parsed one), so whatever the user agent holds, the record can be read back.
    payload = click_payload(
        2**32 * 1_000_000 - 1, 2**32 - 1, 2**32 - 1, 2**63 - 1, 2**32 - 1, 2**16 - 1,
        "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", user_agent, method, MAX_SIGNALS, BLOCKED,
    )  # fmt: skip
    assert len(payload) <= MAX_PAYLOAD


def test_the_worst_user_agent_fits_a_spool_record() -> None:
    for ch in ("\x00", "\U0001f600", "\udcff"):  # escaped as \u0000 (6 bytes), 4 bytes of UTF-8, U+FFFD
        payload = click_payload(0, 0, 0, None, 0, 0, "::1", ch * MAX_USER_AGENT, "HEAD", MAX_SIGNALS, BLOCKED)
        assert len(payload) <= MAX_PAYLOAD


def test_a_row_says_when_the_edge_did_not_redirect() -> None:
    _, [redirected, blocked, older] = decode_batch(
        {"v": 1, "edge": "e", "clicks": [[*row(), 5], [*row(), 5, "blocked"], row()]}
    )
    assert (redirected.outcome, blocked.outcome, older.outcome) == (REDIRECT, BLOCKED, REDIRECT)
    assert (blocked.signals, older.signals) == (5, None)
    payload = click_payload(1, 7, 3, 42, 2, 1, "::1", "ua", "GET", 5, BLOCKED)
    assert orjson.loads(payload)[-2:] == [5, "blocked"]
    for bad in ("redirect", "", 1, None):
        with pytest.raises(BatchError, match=r"clicks\[0\]\.outcome must be one of \['blocked', 'unsubscribe'\]"):
            decode_batch({"v": 1, "edge": "e", "clicks": [[*row(), 5, bad]]})


def test_an_unsubscribe_row_is_a_post_that_names_its_contact() -> None:
    post = row()
    post[9] = "POST"
    _, [unsubscribe] = decode_batch({"v": 1, "edge": "e", "clicks": [[*post, 0, UNSUBSCRIBE]]})
    assert (unsubscribe.outcome, unsubscribe.method) == (UNSUBSCRIBE, "POST")
    with pytest.raises(BatchError, match=r"clicks\[0\]\.method must be POST for an unsubscribe"):
        decode_batch({"v": 1, "edge": "e", "clicks": [[*row(), 0, UNSUBSCRIBE]]})
    with pytest.raises(BatchError, match=r"clicks\[0\]\.method must be one of"):
        decode_batch({"v": 1, "edge": "e", "clicks": [[*post, 0]]})  # a POST is only ever an unsubscribe
    post[4] = None
    with pytest.raises(BatchError, match=r"clicks\[0\]\.contact_id must name the contact for an unsubscribe"):
        decode_batch({"v": 1, "edge": "e", "clicks": [[*post, 0, UNSUBSCRIBE]]})
