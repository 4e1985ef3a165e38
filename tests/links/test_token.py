"""The token codec alone: round trips, tamper rejection, destination rules, rotation."""

from __future__ import annotations

import base64
import os
import re
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import given, settings
from hypothesis import strategies as st

from common.limits import MAX_CONTACT, MAX_ID, MAX_KEY_ID
from links.token import (
    FORMAT_VERSION,
    INVALID,
    MALFORMED,
    MAX_TOKEN_CHARS,
    MAX_URL_BYTES,
    MIN_TOKEN_CHARS,
    OVERHEAD_BYTES,
    OVERSIZED,
    UNSUBSCRIBE_TOKEN_CHARS,
    VERSION_1,
    DestinationError,
    TokenCodec,
    TokenError,
    Unsubscribe,
    validate_destination,
)

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(32, 64))
URL = "https://shop.example.com/pricing?utm_source=news&utm_medium=email#plans"


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec({1: KEY_1}, 1)


def mint(codec: TokenCodec, url: str = URL, contact: int | None = 42) -> str:
    return codec.mint(url, campaign_id=7, link_id=3, contact_id=contact, sent_at=1_790_000_000)


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seal(version: int, url: str, key: bytes = KEY_1, key_id: int = 1, flags: int = 1) -> str:
    """A token sealed by hand as the given format version seals it, skipping destination validation."""
    clear = struct.pack(">BH", version, key_id)
    plain = struct.pack(">IIQIB", 7, 3, 42, 1_790_000_000, flags) + url.encode()
    associated = [clear] if version == VERSION_1 else None
    return encode(clear + AESSIV(key).encrypt(plain, associated))


path_chars = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:@/?#"),
    max_size=300,
)


@settings(deadline=None)
@given(
    path=path_chars,
    campaign=st.integers(0, 2**32 - 1),
    link=st.integers(0, 2**32 - 1),
    contact=st.none() | st.integers(1, 2**63 - 1),
    sent_at=st.integers(0, 2**32 - 1),
    scheme=st.sampled_from(["http", "https"]),
)
def test_round_trip_keeps_every_field(
    path: str, campaign: int, link: int, contact: int | None, sent_at: int, scheme: str
) -> None:
    codec = TokenCodec({5: KEY_1}, 5)
    url = f"{scheme}://example.com/{path}"
    token = codec.mint(url, campaign_id=campaign, link_id=link, contact_id=contact, sent_at=sent_at)
    link_ = codec.decode(token)
    assert (
        link_.destination,
        link_.campaign_id,
        link_.link_id,
        link_.contact_id,
        link_.sent_at,
        link_.key_id,
    ) == (
        url,
        campaign,
        link,
        contact,
        sent_at,
        5,
    )
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_overhead_is_within_48_bytes(codec: TokenCodec) -> None:
    token = mint(codec)
    assert OVERHEAD_BYTES == 40
    assert len(raw(token)) == len(URL) + OVERHEAD_BYTES
    assert len(token) == -(-(len(URL) + OVERHEAD_BYTES) * 4 // 3)


def test_every_single_bit_flip_is_rejected(codec: TokenCodec) -> None:
    data = raw(mint(codec))
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(TokenError) as err:
            codec.decode(encode(bytes(flipped)))
        assert err.value.kind in (INVALID, MALFORMED), bit


def test_every_truncation_is_rejected(codec: TokenCodec) -> None:
    token = mint(codec)
    for size in range(len(token)):
        with pytest.raises(TokenError):
            codec.decode(token[:size])


@settings(deadline=None)
@given(extra=st.binary(min_size=1, max_size=64))
def test_extension_is_rejected(extra: bytes) -> None:
    codec = TokenCodec({1: KEY_1}, 1)
    data = raw(mint(codec))
    with pytest.raises(TokenError):
        codec.decode(encode(data + extra))


@settings(deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_are_rejected(data: bytes) -> None:
    codec = TokenCodec({1: KEY_1}, 1)
    with pytest.raises(TokenError):
        codec.decode(encode(data))


@settings(deadline=None)
@given(text=st.text(max_size=400))
def test_arbitrary_text_never_decodes_and_never_crashes(text: str) -> None:
    codec = TokenCodec({1: KEY_1}, 1)
    with pytest.raises(TokenError):
        codec.decode(text)


def test_every_changed_character_is_rejected(codec: TokenCodec) -> None:
    token = mint(codec)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, ch in enumerate(token):
        other = alphabet[(alphabet.index(ch) + 1) % 64]
        with pytest.raises(TokenError):
            codec.decode(token[:i] + other + token[i + 1 :])


def test_error_kinds(codec: TokenCodec) -> None:
    # The kind picks the edge's answer; the reason is what `clickedge decode` tells the person holding the token.
    token = mint(codec)
    cases = {
        "A" * (MAX_TOKEN_CHARS + 1): (OVERSIZED, "longest valid"),
        token[:20] + "!" + token[21:]: (MALFORMED, "outside base64url"),
        token[:20] + "+" + token[21:]: (MALFORMED, "outside base64url"),  # standard base64, not base64url
        token[:20] + "/" + token[21:]: (MALFORMED, "outside base64url"),
        token[:20] + "é" + token[21:]: (MALFORMED, "outside base64url"),
        token + "A" * ((1 - len(token)) % 4): (MALFORMED, "truncated or extended"),  # a length base64 cannot have
        token[: len(token) - (len(token) - 1) % 4]: (MALFORMED, "truncated or extended"),
        "": (MALFORMED, "shortest valid"),
        token[:30] + ("A" if token[30] != "A" else "B") + token[31:]: (INVALID, "authentication tag"),
    }
    for bad, (kind, reason) in cases.items():
        with pytest.raises(TokenError) as err:
            codec.decode(bad)
        assert err.value.kind == kind, bad
        assert reason in err.value.reason and err.value.reason == str(err.value), bad


@pytest.mark.parametrize("noise", ["!!!!", "    ", "\n\n\n\n", "===="])
def test_characters_outside_base64url_are_refused_not_skipped(codec: TokenCodec, noise: str) -> None:
    # A lenient decoder drops them and finds the token inside: a second spelling that would redirect.
    token = mint(codec)
    with pytest.raises(TokenError) as err:
        codec.decode(token[:20] + noise + token[20:])
    assert err.value.kind == MALFORMED


def test_the_shortest_and_the_longest_tokens_decode(codec: TokenCodec) -> None:
    shortest = mint(codec, "http://a")
    assert len(shortest) == MIN_TOKEN_CHARS
    assert codec.decode(shortest).destination == "http://a"
    url = "https://example.com/" + "a" * (MAX_URL_BYTES - len("https://example.com/"))
    longest = mint(codec, url)
    assert len(longest) == MAX_TOKEN_CHARS
    assert codec.decode(longest).destination == url
    with pytest.raises(DestinationError, match="limit is 2048"):
        mint(codec, url + "a")


def test_ids_at_their_bounds_round_trip(codec: TokenCodec) -> None:
    for low_or_high, contact in ((0, 1), (MAX_ID, MAX_CONTACT)):
        token = codec.mint(URL, campaign_id=low_or_high, link_id=low_or_high, contact_id=contact, sent_at=low_or_high)
        link = codec.decode(token)
        assert (link.campaign_id, link.link_id, link.contact_id, link.sent_at) == (
            low_or_high,
            low_or_high,
            contact,
            low_or_high,
        )


def test_known_answers() -> None:
    # The format is what links already sent carry: a change to the layout that still round-trips (two fields
    # swapped, a flag moved) would break every one of them. AES-SIV is deterministic, so the bytes are fixed.
    codec = TokenCodec({1: KEY_1}, 1)
    named = (
        "AgABSEtT-Eyfpj2ty9nVrVKq8x7h6zPGf71PH71dJb5BOcY74poTuOQr8-zHHoQTglzodenj36qHyMFDtb1RPF6s8es4_l9qaRpXRJrSo95"
        "DoFwgOuhb3iUrNNzeoGje0jRoa57tZza5PsG3LxvP"
    )
    anonymous = (
        "AgAB1dvK5nOgWKPivQAqcDyGAmngyyDzyFjYPnVJiIIrFRYbMtqX2ySAXdLLcEHA1FMiC6zvHRvPg9b_9lD3uQKyQdyc-eLYCqxVZBPk37k"
        "hZJkewZ-pWoTSO0Jo89lOaeCNGpW_b_Pf7NuH8JG-"
    )
    assert mint(codec, contact=42) == named
    assert mint(codec, contact=None) == anonymous
    assert codec.decode(named) == (URL, 7, 3, 42, 1_790_000_000, 1)
    assert codec.decode(anonymous) == (URL, 7, 3, None, 1_790_000_000, 1)


def test_padded_spellings_are_rejected(codec: TokenCodec) -> None:
    for n in range(4):
        token = mint(codec, URL + "x" * n)
        for pad in ("=", "==", "==="):
            with pytest.raises(TokenError) as err:
                codec.decode(token + pad)
            assert err.value.kind == MALFORMED


def test_non_canonical_spelling_is_rejected(codec: TokenCodec) -> None:
    # Two spellings differing only in the unused low bits of the last character decode to the same
    # bytes under a lenient decoder; only the canonical one may redirect.
    token = next(t for t in (mint(codec, URL + "x" * n) for n in range(3)) if len(t) % 4)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = token[:-1] + alphabet[alphabet.index(token[-1]) | 1]
    assert twin != token
    with pytest.raises(TokenError) as err:
        codec.decode(twin)
    assert err.value.kind == MALFORMED
    assert "canonical" in err.value.reason


def test_token_is_opaque(codec: TokenCodec) -> None:
    contact = 0x1122334455667788
    data = raw(codec.mint(URL, campaign_id=7, link_id=3, contact_id=contact, sent_at=1_790_000_000))
    assert contact.to_bytes(8, "big") not in data
    assert b"shop.example.com" not in data
    assert b"pricing" not in data


def test_anonymous_link_has_no_contact(codec: TokenCodec) -> None:
    assert codec.decode(mint(codec, contact=None)).contact_id is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/file", "http"),
        ("javascript:alert(1)", "http"),
        ("mailto:someone@example.com", "http"),
        ("//example.com/path", "http"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com/a\tb", "whitespace"),
        ("https://example.com/\r\nSet-Cookie: x=1", "whitespace"),
        ("https://example.com/\x00", "control"),
        ("https://example.com/\x7f", "control"),
        ("https:///no-host", "no host"),
        ("https://example.com/" + "a" * MAX_URL_BYTES, "limit is 2048"),
        ("https://[::1/", "not a valid URL: Invalid IPv6 URL"),
        ("https://" + "ü" * 64 + ".example/", "host cannot be encoded: .*label empty or too long"),
    ],
)
def test_bad_destinations_are_refused(codec: TokenCodec, url: str, reason: str) -> None:
    with pytest.raises(DestinationError, match=reason):
        codec.mint(url, campaign_id=1, link_id=1, contact_id=None, sent_at=0)


def test_a_destination_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(DestinationError, match="must be a string"):
        validate_destination(b"https://example.com/")  # type: ignore[arg-type]


def test_destination_kept_byte_for_byte_and_iri_encoded() -> None:
    assert validate_destination(URL) == URL
    assert (
        validate_destination("HTTPS://Example.com/A%20b?x=1&y=%2F#frag") == "HTTPS://Example.com/A%20b?x=1&y=%2F#frag"
    )
    assert validate_destination("https://bücher.example/straße?q=ä") == (
        "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4"
    )
    assert validate_destination("http://BÜCHER.example:8080/x") == "http://xn--bcher-kva.example:8080/x"
    # Only the host is IDNA: user information and port are kept as written.
    assert validate_destination("https://user:pw@bücher.example:8443/p?q=ä") == (
        "https://user:pw@xn--bcher-kva.example:8443/p?q=%C3%A4"
    )
    # An ASCII host is kept as written, even one IDNA would refuse (a label over 63 characters, an empty one):
    # only the path needs encoding, and the link is still tracked.
    for host in ("a" * 64 + ".example", "a..b.example"):
        assert validate_destination(f"http://{host}/ü") == f"http://{host}/%C3%BC"


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("campaign_id", -1, "campaign id"),
        ("campaign_id", 2**32, "campaign id"),
        ("link_id", -1, "link id"),
        ("link_id", 2**32, "link id"),
        ("contact_id", 0, "contact id"),
        ("contact_id", 2**63, "contact id"),
        ("sent_at", -1, "send time"),
        ("sent_at", 2**32, "send time"),
        # Not integers: a bool is an int to Python, and a float would reach struct.pack.
        ("campaign_id", True, "campaign id"),
        ("link_id", 3.0, "link id"),
        ("sent_at", "1790000000", "send time"),
    ],
)
def test_ids_out_of_range_are_refused(codec: TokenCodec, field: str, value: object, name: str) -> None:
    args: dict[str, Any] = {"campaign_id": 1, "link_id": 1, "contact_id": 1, "sent_at": 0, field: value}
    with pytest.raises(ValueError, match=f"^{name} must be an integer from"):
        codec.mint(URL, **args)


def test_key_ids_span_two_bytes() -> None:
    codec = TokenCodec({0: KEY_1, MAX_KEY_ID: KEY_2}, MAX_KEY_ID)
    assert codec.decode(mint(codec)).key_id == MAX_KEY_ID
    assert codec.decode(mint(TokenCodec({0: KEY_1}, 0))).key_id == 0


@pytest.mark.parametrize(
    ("keys", "active", "error"),
    [
        ({-1: KEY_1}, None, "key id -1 is out of range 0..65535"),
        ({MAX_KEY_ID + 1: KEY_1}, None, "key id 65536 is out of range 0..65535"),
        ({1: KEY_1[:31]}, None, "key 1 must be 32 bytes, not 31"),
        ({1: KEY_1}, 2, "active key 2 is not among the keys"),
    ],
)
def test_a_bad_key_ring_is_refused_saying_why(keys: dict[int, bytes], active: int | None, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        TokenCodec(keys, active)


def test_rotation_keeps_old_links_until_their_key_is_retired() -> None:
    old = TokenCodec({1: KEY_1}, 1)
    old_token = mint(old)
    rotated = TokenCodec({1: KEY_1, 2: KEY_2}, 2)
    new_token = mint(rotated)
    assert rotated.decode(old_token).key_id == 1
    assert rotated.decode(new_token).key_id == 2
    retired = TokenCodec({2: KEY_2}, 2)
    with pytest.raises(TokenError, match="key 1 is unknown or retired") as err:
        retired.decode(old_token)
    assert err.value.kind == INVALID
    assert "retired" in err.value.reason  # what `clickedge decode` looks for to explain it
    assert retired.decode(new_token).destination == URL


def test_key_id_is_authenticated() -> None:
    # Two keys in one ring: moving a token to the other key id must not verify.
    codec = TokenCodec({1: KEY_1, 2: KEY_2}, 1)
    data = bytearray(raw(mint(codec)))
    data[1:3] = (2).to_bytes(2, "big")
    with pytest.raises(TokenError, match="authentication"):
        codec.decode(encode(bytes(data)))


def test_no_active_key_cannot_mint() -> None:
    with pytest.raises(ValueError, match="no active key"):
        mint(TokenCodec({1: KEY_1}, None))


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=32, max_size=32))
def test_other_key_never_verifies(key: bytes) -> None:
    token = mint(TokenCodec({1: KEY_1}, 1))
    if key != KEY_1:
        with pytest.raises(TokenError):
            TokenCodec({1: key}, 1).decode(token)


def test_random_keys_give_distinct_tokens() -> None:
    a = TokenCodec({1: os.urandom(32)}, 1)
    b = TokenCodec({1: os.urandom(32)}, 1)
    assert mint(a) != mint(b)


@pytest.mark.parametrize("version", [FORMAT_VERSION, VERSION_1])
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://a.example/\r\nSet-Cookie: x=1", "line break"),
        ("https://a.example/\nx", "line break"),
        ("https://a.example/\rx", "line break"),
        ("https://a.example/é", "not ASCII"),
    ],
)
def test_a_destination_that_validation_would_refuse_never_decodes(url: str, reason: str, version: int) -> None:
    # Only a minter that skips validate_destination (and holds the key) could make one: the edge writes
    # the destination into a header, so it must not redirect with it.
    with pytest.raises(TokenError) as caught:
        TokenCodec({1: KEY_1}, 1).decode(seal(version, url))
    assert caught.value.kind == INVALID
    assert reason in caught.value.reason


def test_links_already_sent_in_format_version_1_still_verify(codec: TokenCodec) -> None:
    link = codec.decode(seal(VERSION_1, URL))
    assert (link.destination, link.campaign_id, link.link_id, link.contact_id) == (URL, 7, 3, 42)
    assert link.sent_at == 1_790_000_000 and link.key_id == 1
    assert raw(mint(codec))[0] == FORMAT_VERSION == 2  # what is minted now


@pytest.mark.parametrize(("sealed_as", "relabelled"), [(FORMAT_VERSION, VERSION_1), (VERSION_1, FORMAT_VERSION)])
def test_a_token_relabelled_to_the_other_format_version_never_verifies(
    codec: TokenCodec, sealed_as: int, relabelled: int
) -> None:
    data = bytearray(raw(seal(sealed_as, URL)))
    data[0] = relabelled
    with pytest.raises(TokenError, match="authentication") as caught:
        codec.decode(encode(bytes(data)))
    assert caught.value.kind == INVALID


def test_an_unknown_format_version_is_invalid(codec: TokenCodec) -> None:
    data = bytearray(raw(mint(codec)))
    data[0] = 3
    with pytest.raises(TokenError, match="unknown token format version 3") as caught:
        codec.decode(encode(bytes(data)))
    assert caught.value.kind == INVALID


def test_an_unsubscribe_token_round_trips_and_is_short(codec: TokenCodec) -> None:
    token = codec.mint_unsubscribe(campaign_id=MAX_ID, contact_id=MAX_CONTACT, sent_at=1_790_000_000)
    assert len(token) == UNSUBSCRIBE_TOKEN_CHARS
    assert codec.decode_unsubscribe(token) == Unsubscribe(MAX_ID, MAX_CONTACT, 1_790_000_000, 1)
    for bad in ({"contact_id": 0}, {"campaign_id": -1}, {"sent_at": MAX_ID + 1}):
        with pytest.raises(ValueError):
            codec.mint_unsubscribe(**{"campaign_id": 1, "contact_id": 1, "sent_at": 1, **bad})


def test_a_token_works_only_for_its_own_purpose(codec: TokenCodec) -> None:
    unsubscribe = codec.mint_unsubscribe(campaign_id=7, contact_id=42, sent_at=1_790_000_000)
    link = mint(codec)
    with pytest.raises(TokenError) as refused:
        codec.decode(unsubscribe)
    assert refused.value.kind == MALFORMED  # shorter than any link
    with pytest.raises(TokenError, match="an unsubscribe token is 54 characters") as refused:
        codec.decode_unsubscribe(link)
    assert refused.value.kind == INVALID
    # Sealed with the other purpose's flags, each is still refused after its tag checks out: the purpose is
    # in the authenticated bytes, not in the length alone.
    with pytest.raises(TokenError, match="not a link: a token for another purpose"):
        codec.decode(seal(FORMAT_VERSION, URL, flags=3))
    link_shaped = encode(
        struct.pack(">BH", FORMAT_VERSION, 1) + AESSIV(KEY_1).encrypt(struct.pack(">IIQIB", 7, 0, 42, 1, 1), None)
    )
    with pytest.raises(TokenError, match="not an unsubscribe token"):
        codec.decode_unsubscribe(link_shaped)


def test_a_changed_unsubscribe_token_is_refused(codec: TokenCodec) -> None:
    token = codec.mint_unsubscribe(campaign_id=7, contact_id=42, sent_at=1_790_000_000)
    data = raw(token)
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[i] ^= bit
            with pytest.raises(TokenError):
                codec.decode_unsubscribe(encode(bytes(flipped)))
    for bad in (token[:-1], token + "A", token.replace(token[5], "+" if token[5] != "+" else "-", 1), "=" * 54):
        with pytest.raises(TokenError):
            codec.decode_unsubscribe(bad)
    with pytest.raises(TokenError, match="or key 1"):
        TokenCodec({9: KEY_2}, 9).decode_unsubscribe(token)
