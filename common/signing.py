"""Webhook signatures, for Clickedge and for receivers. Pure: standard library only.

Each webhook request carries ``Clickedge-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 over ``"<t>." + body`` keyed with the secret of the destination it is sent to, and
``Clickedge-Idempotency-Key``. A receiver recomputes the HMAC over the raw body, compares in constant
time, rejects timestamps older than a few minutes (replays), and drops a key it has already processed
(deliveries are at least once).

Each destination (webhook endpoint) has its own secret, derived from the collector's master webhook
secret (``endpoint_secret``), so a request made for one receiver does not verify at another: whoever
holds one endpoint's secret, or receives its requests, can neither forge nor replay requests for the
others. Deriving the secrets means none is stored in the database; rotating an endpoint moves it to the
next generation, and the old secret stops verifying at once.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Clickedge-Signature"
IDEMPOTENCY_HEADER = "Clickedge-Idempotency-Key"
DEFAULT_TOLERANCE = 300


SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every endpoint secret, not a secret


def endpoint_secret(master: bytes, endpoint_id: int, generation: int) -> str:
    """The signing secret of one webhook endpoint: ``whsec_`` + hex HMAC-SHA256(master,
    ``"endpoint:<id>:<generation>"``). Receivers key their HMAC with this string's bytes."""
    mac = hmac.new(master, f"endpoint:{endpoint_id}:{generation}".encode(), hashlib.sha256).hexdigest()
    return SECRET_PREFIX + mac


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(
    secret: bytes, body: bytes, header: str, *, tolerance: int = DEFAULT_TOLERANCE, now: int | None = None
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is no older than ``tolerance`` seconds."""
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    try:
        ts = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((int(time.time()) if now is None else now) - ts) > tolerance:
        return False
    expected = hmac.new(secret, str(ts).encode() + b"." + body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, fields.get("v1", "").encode("utf-8", "surrogateescape"))
