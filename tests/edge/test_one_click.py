"""edge/one_click.py alone: which POST bodies ask for an RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import pytest

from edge.one_click import requested

URLENCODED = "application/x-www-form-urlencoded"


def multipart(*parts: tuple[str, bytes], boundary: str = "b0undary") -> bytes:
    body = b""
    for disposition, value in parts:
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


ONE_CLICK_PART = ('form-data; name="List-Unsubscribe"', b"One-Click")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"List-Unsubscribe=One-Click", URLENCODED),
        (b"List-Unsubscribe=One-Click", "Application/X-WWW-Form-Urlencoded; charset=utf-8"),
        (b"a=1&List-Unsubscribe=One-Click&b=", URLENCODED),
        (b"List-Unsubscribe=One%2DClick", URLENCODED),
        (b"List-Unsubscribe=One-Click\r\n", URLENCODED),
        (b"List-Unsubscribe=One-Click", ""),  # no type, or the wrong one: read as urlencoded
        (b"List-Unsubscribe=One-Click", "text/plain"),
        (multipart(ONE_CLICK_PART), "multipart/form-data; boundary=b0undary"),
        (multipart(ONE_CLICK_PART, boundary="a b'c"), 'multipart/form-data; boundary="a b\'c"'),
        (
            multipart(('form-data; name="other"', b"x\r\n\r\ny"), ONE_CLICK_PART),
            "Multipart/Form-Data; charset=utf-8; boundary=b0undary",
        ),
        (b"a preamble\r\n" + multipart(ONE_CLICK_PART), "multipart/form-data; boundary=b0undary"),
    ],
    ids=[
        "urlencoded",
        "urlencoded-type-in-other-case",
        "among-other-pairs",
        "percent-encoded",
        "trailing-line-break",
        "no-type",
        "text-plain",
        "multipart",
        "multipart-quoted-boundary",
        "multipart-other-part-first",
        "multipart-preamble",
    ],
)
def test_bodies_that_ask_for_one_click(body: bytes, content_type: str) -> None:
    assert requested(body, content_type) is True


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", URLENCODED),
        (b"List-Unsubscribe=", URLENCODED),
        (b"List-Unsubscribe=One-Clicks", URLENCODED),
        (b"list-unsubscribe=one-click", URLENCODED),
        (b"List-Unsubscribe", URLENCODED),
        (b"Unsubscribe=One-Click", URLENCODED),
        (b"\xff\xfe=\x00", URLENCODED),
        (multipart(ONE_CLICK_PART), URLENCODED),  # a multipart body read as urlencoded
        (multipart(ONE_CLICK_PART), "multipart/form-data"),  # no boundary
        (multipart(ONE_CLICK_PART), "multipart/form-data; boundary=other"),
        (multipart(('form-data; name="List-Unsubscribe"', b"No")), "multipart/form-data; boundary=b0undary"),
        (multipart(('form-data; name="Unsubscribe"', b"One-Click")), "multipart/form-data; boundary=b0undary"),
        (b"List-Unsubscribe=One-Click", "multipart/form-data; boundary=b0undary"),
    ],
    ids=[
        "empty",
        "empty-value",
        "other-value",
        "other-case",
        "name-alone",
        "other-name",
        "not-utf8",
        "multipart-as-urlencoded",
        "multipart-without-boundary",
        "multipart-other-boundary",
        "multipart-other-value",
        "multipart-other-name",
        "urlencoded-as-multipart",
    ],
)
def test_bodies_that_do_not(body: bytes, content_type: str) -> None:
    assert requested(body, content_type) is False
