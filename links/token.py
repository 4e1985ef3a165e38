"""Link tokens: compact, authenticated, opaque, self-contained.

A token carries everything an edge needs to answer a click with no lookup. Byte layout (before base64url,
which is written without padding):

    offset  size  field
    0       1     format version (2), in clear
    1       2     key id, big-endian, in clear: picks the key that verifies the token
    3       16    synthetic IV (AES-SIV), which is also the authentication tag (128 bits)
    19      21    encrypted header: campaign u32 | link u32 | contact u64 | sent_at u32 | flags u8
    40      n     encrypted destination URL (ASCII bytes)

A token has one purpose, sealed in its flags: a link (``/c/``: redirects) or a one-click unsubscribe
(``/u/``, RFC 8058: carries a contact, link 0 and no destination, so n = 0). ``decode`` opens only links and
``decode_unsubscribe`` only unsubscribe tokens: neither works as the other, whatever its clear bytes say.

Overhead beyond the URL bytes: 40 bytes (3 clear + 16 tag + 21 fields); as base64url a token is
ceil((40 + n) * 4 / 3) characters. AES-SIV (RFC 5297) is a deterministic AEAD: it needs no nonce, so it
adds nothing beyond its tag, and it stays safe whatever is minted.

The clear bytes choose how to verify, and any change to them fails verification: the key id picks the key,
and a token sealed under one key never verifies under another; version 2 seals with no associated data,
version 1 (still verified, for links already sent) bound the clear bytes as associated data, so a token
moved from one version to the other fails its tag. Version 2 drops that associated data because it cost
a second S2V string on every click and protected nothing the key id and version did not already (the
measured choice: see loadtests/README.md, section "Results: token decode").

This module imports no framework: senders import it as a library to mint links.
"""

from __future__ import annotations

import base64
import string
import struct
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import pybase64
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from common.limits import MAX_CONTACT, MAX_ID, MAX_KEY_ID

FORMAT_VERSION = 2  # what mint writes
VERSION_1 = 1  # verified still: the clear header was associated data
LINK_PATH = "/c/"
UNSUBSCRIBE_PATH = "/u/"
KEY_BYTES = 32  # AES-128-SIV: 256 bits of key material, half for S2V/CMAC, half for CTR
TAG_BYTES = 16
MAX_URL_BYTES = 2048

_CLEAR = struct.Struct(">BH")
_FIELDS = struct.Struct(">IIQIB")
_FLAG_CONTACT = 0x01
_FLAG_UNSUBSCRIBE = 0x02  # a one-click unsubscribe token, never a link
_UNSUBSCRIBE_FLAGS = _FLAG_CONTACT | _FLAG_UNSUBSCRIBE
_FIELDS_SIZE = _FIELDS.size
_unpack_fields = _FIELDS.unpack_from
_unpack_clear = _CLEAR.unpack_from
_b64decode = pybase64.b64decode
_new_tuple = tuple.__new__
OVERHEAD_BYTES = _CLEAR.size + TAG_BYTES + _FIELDS.size
MIN_TOKEN_BYTES = OVERHEAD_BYTES + len("http://a")
MAX_TOKEN_BYTES = OVERHEAD_BYTES + MAX_URL_BYTES
MAX_TOKEN_CHARS = -(-MAX_TOKEN_BYTES * 4 // 3)
MIN_TOKEN_CHARS = -(-MIN_TOKEN_BYTES * 4 // 3)
UNSUBSCRIBE_TOKEN_CHARS = -(-OVERHEAD_BYTES * 4 // 3)  # no destination: every one is this long
_B64URL_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
_URLSAFE = b"-_"
# By the length of the token modulo 4: the padding base64 wants back, and the characters that may end the
# token. The last character's unused low bits must be zero, so each token has exactly one spelling; '='
# is never among them (tokens carry no padding). A length of 1 modulo 4 is impossible in base64.
_TAILS = {
    0: ("", frozenset(_B64URL_ALPHABET)),
    2: ("==", frozenset(c for i, c in enumerate(_B64URL_ALPHABET) if not i & 0x0F)),
    3: ("=", frozenset(c for i, c in enumerate(_B64URL_ALPHABET) if not i & 0x03)),
}
# Everything printable in ASCII except space stays as written; the rest is percent-encoded as UTF-8.
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


class TokenError(ValueError):
    """A token that must not redirect. ``kind`` is one of OVERSIZED, MALFORMED (garbled: not a token at
    all) or INVALID (well-formed, but forged, altered, or from an unknown or retired key)."""

    def __init__(self, reason: str, *, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


OVERSIZED = "oversized"
MALFORMED = "malformed"
INVALID = "invalid"


class DestinationError(ValueError):
    """A destination URL that may not be put in a link."""


class Link(NamedTuple):
    # A NamedTuple rather than a frozen dataclass: built once per click, and a frozen dataclass sets each
    # field through object.__setattr__.
    destination: str
    campaign_id: int
    link_id: int
    contact_id: int | None
    sent_at: int  # Unix seconds
    key_id: int


class Unsubscribe(NamedTuple):
    """What a one-click unsubscribe token names: who, from which campaign's message, sent when."""

    campaign_id: int
    contact_id: int
    sent_at: int  # Unix seconds
    key_id: int


def validate_destination(url: str) -> str:
    """Return the destination as it will be redirected to, or raise DestinationError saying why not.

    Only absolute http(s) URLs with a host; no whitespace or control characters anywhere. Non-ASCII
    characters are encoded the way browsers do (IDNA for the host, UTF-8 percent-encoding elsewhere), so
    the Location header stays ASCII; an ASCII URL is kept byte for byte.
    """
    if not isinstance(url, str):
        raise DestinationError("destination must be a string")
    for ch in url:
        if ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise DestinationError(f"destination contains whitespace or a control character ({ch!r})")
    if not url.isascii():
        url = _encode_iri(url)
    if len(url) > MAX_URL_BYTES:
        raise DestinationError(f"destination is {len(url)} bytes long; the limit is {MAX_URL_BYTES}")
    scheme, sep, _ = url.partition(":")
    if not sep or scheme.lower() not in ("http", "https"):
        raise DestinationError("destination must be an absolute http:// or https:// URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise DestinationError(f"destination is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise DestinationError("destination has no host")
    return url


def _encode_iri(url: str) -> str:
    try:
        parts = urlsplit(url)
        userinfo, at, hostport = parts.netloc.rpartition("@")
        host, colon, port = hostport.partition(":")
        ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise DestinationError(f"destination host cannot be encoded: {exc}") from None
    netloc = f"{userinfo}{at}{ascii_host}{colon}{port}"
    return quote(parts._replace(netloc=netloc).geturl(), safe=_URL_SAFE)


class TokenCodec:
    """Mints with the active key; verifies with every key it holds (active or not yet retired)."""

    __slots__ = ("_active", "_active_id", "_ciphers", "_decrypt")

    def __init__(self, keys: dict[int, bytes], active_key_id: int | None) -> None:
        self._ciphers: dict[int, AESSIV] = {}
        for key_id, secret in keys.items():
            if not 0 <= key_id <= MAX_KEY_ID:
                raise ValueError(f"key id {key_id} is out of range 0..{MAX_KEY_ID}")
            if len(secret) != KEY_BYTES:
                raise ValueError(f"key {key_id} must be {KEY_BYTES} bytes, not {len(secret)}")
            self._ciphers[key_id] = AESSIV(secret)
        self._decrypt = {key_id: cipher.decrypt for key_id, cipher in self._ciphers.items()}
        if active_key_id is not None and active_key_id not in self._ciphers:
            raise ValueError(f"active key {active_key_id} is not among the keys")
        self._active_id = active_key_id
        self._active = self._ciphers.get(active_key_id) if active_key_id is not None else None

    @property
    def key_ids(self) -> frozenset[int]:
        return frozenset(self._ciphers)

    def mint(self, destination: str, *, campaign_id: int, link_id: int, contact_id: int | None, sent_at: int) -> str:
        """Return the token (base64url, no padding) for one placement of a link for one recipient."""
        if self._active is None or self._active_id is None:
            raise ValueError("no active key: create and activate one first")
        url = validate_destination(destination)
        _check_range("campaign id", campaign_id, 0, MAX_ID)
        _check_range("link id", link_id, 0, MAX_ID)
        _check_range("send time", sent_at, 0, MAX_ID)
        if contact_id is not None:
            _check_range("contact id", contact_id, 1, MAX_CONTACT)
        flags = _FLAG_CONTACT if contact_id is not None else 0
        plain = _FIELDS.pack(campaign_id, link_id, contact_id or 0, sent_at, flags) + url.encode("ascii")
        return self._seal(plain)

    def mint_unsubscribe(self, *, campaign_id: int, contact_id: int, sent_at: int) -> str:
        """Return the one-click unsubscribe token (``/u/``) for one recipient of a campaign's message."""
        _check_range("campaign id", campaign_id, 0, MAX_ID)
        _check_range("contact id", contact_id, 1, MAX_CONTACT)
        _check_range("send time", sent_at, 0, MAX_ID)
        return self._seal(_FIELDS.pack(campaign_id, 0, contact_id, sent_at, _UNSUBSCRIBE_FLAGS))

    def _seal(self, plain: bytes) -> str:
        if self._active is None or self._active_id is None:
            raise ValueError("no active key: create and activate one first")
        clear = _CLEAR.pack(FORMAT_VERSION, self._active_id)
        sealed = self._active.encrypt(plain, None)
        return base64.urlsafe_b64encode(clear + sealed).rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> Link:
        """Verify and open a token, or raise TokenError. The tag check is constant-time (OpenSSL CMAC)."""
        # The hot path of every redirect, written for it: one pass of each C routine, one cipher lookup by
        # the two key id bytes (the measured choices: see loadtests/README.md, section "Results: token decode").
        size = len(token)
        if size > MAX_TOKEN_CHARS:
            raise TokenError(f"token is {size} characters; the longest valid is {MAX_TOKEN_CHARS}", kind=OVERSIZED)
        if size < MIN_TOKEN_CHARS:
            raise TokenError(f"token is {size} characters; the shortest valid is {MIN_TOKEN_CHARS}", kind=MALFORMED)
        # pybase64 (SIMD) with validation refuses every character outside base64url and '=' anywhere but
        # at the end, but still takes '+' and '/' as twins of '-' and '_' (deprecated there): refused first.
        if "+" in token or "/" in token:
            raise TokenError(_malformed(token), kind=MALFORMED)
        try:
            pad, last_chars = _TAILS[size & 3]
            raw = _b64decode(token + pad, _URLSAFE, True)
        except (KeyError, ValueError):  # binascii.Error is a ValueError; so is a non-ASCII str
            raise TokenError(_malformed(token), kind=MALFORMED) from None
        if token[-1] not in last_chars:
            raise TokenError("token is not canonical base64url", kind=MALFORMED)
        # At least MIN_TOKEN_CHARS characters: raw holds at least MIN_TOKEN_BYTES.
        version, key_id = _unpack_clear(raw)
        if version != FORMAT_VERSION and version != VERSION_1:
            raise TokenError(f"unknown token format version {version}", kind=INVALID)
        decrypt = self._decrypt.get(key_id)
        if decrypt is None:
            raise TokenError(f"key {key_id} is unknown or retired", kind=INVALID)
        try:
            plain = decrypt(raw[3:], None if version == FORMAT_VERSION else [raw[:3]])
        except InvalidTag:
            raise TokenError("authentication tag does not match: altered or forged token", kind=INVALID) from None
        url = plain[_FIELDS_SIZE:]
        # Only a minter that skipped validate_destination (and holds the key) could put a line break or
        # non-ASCII here; the destination goes into a header line. (Integer membership is one memchr; a
        # bytes needle is first tried as an integer, an exception raised and cleared, then searched for.)
        if 10 in url or 13 in url:
            raise TokenError("destination holds a line break", kind=INVALID)
        try:
            destination = url.decode("ascii")
        except UnicodeDecodeError:
            raise TokenError("destination is not ASCII", kind=INVALID) from None
        campaign_id, link_id, contact_id, sent_at, flags = _unpack_fields(plain)
        if flags > _FLAG_CONTACT:
            raise TokenError("not a link: a token for another purpose", kind=INVALID)
        # tuple.__new__ skips the NamedTuple's Python-level __new__: one Python call fewer per click.
        return _new_tuple(
            Link,
            (
                destination,
                campaign_id,
                link_id,
                contact_id if flags & _FLAG_CONTACT else None,
                sent_at,
                key_id,
            ),
        )

    def decode_unsubscribe(self, token: str) -> Unsubscribe:
        """Verify and open a one-click unsubscribe token, or raise TokenError (a link never opens here)."""
        size = len(token)
        if size != UNSUBSCRIBE_TOKEN_CHARS:
            kind = OVERSIZED if size > MAX_TOKEN_CHARS else INVALID if size >= MIN_TOKEN_CHARS else MALFORMED
            raise TokenError(f"an unsubscribe token is {UNSUBSCRIBE_TOKEN_CHARS} characters, not {size}", kind=kind)
        if "+" in token or "/" in token or token[-1] not in _TAILS[size & 3][1]:
            raise TokenError(_malformed(token), kind=MALFORMED)
        try:
            raw = _b64decode(token + _TAILS[size & 3][0], _URLSAFE, True)
        except ValueError:
            raise TokenError(_malformed(token), kind=MALFORMED) from None
        version, key_id = _unpack_clear(raw)
        decrypt = self._decrypt.get(key_id) if version == FORMAT_VERSION else None
        if decrypt is None:
            raise TokenError(f"unknown token format version {version} or key {key_id}", kind=INVALID)
        try:
            plain = decrypt(raw[3:], None)
        except InvalidTag:
            raise TokenError("authentication tag does not match: altered or forged token", kind=INVALID) from None
        campaign_id, _link, contact_id, sent_at, flags = _unpack_fields(plain)
        if flags != _UNSUBSCRIBE_FLAGS:
            raise TokenError("not an unsubscribe token: a token for another purpose", kind=INVALID)
        return Unsubscribe(campaign_id, contact_id, sent_at, key_id)


def _malformed(token: str) -> str:
    if len(token) & 3 == 1:
        return "token length is impossible in base64url: truncated or extended"
    return "token has characters outside base64url (or padding)"


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")
