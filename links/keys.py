"""The key file: which link keys exist, which one mints, which still verify.

A key is created ``verifying`` (it opens links but does not mint yet), so it can be rolled out to every
edge before it is activated; activating it moves the previous active key to ``verifying``; ``retired``
keys are kept in the file only so that their ids are never reused, and no longer verify anything.
The file holds secrets: it is written atomically with mode 0600.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common.files import write_private
from common.limits import MAX_KEY_ID
from links.token import KEY_BYTES, TokenCodec

ACTIVE = "active"
VERIFYING = "verifying"
RETIRED = "retired"
STATES = (ACTIVE, VERIFYING, RETIRED)


class KeyFileError(ValueError):
    """The key file is missing, unreadable or inconsistent, or a key operation is not allowed."""


@dataclass(frozen=True)
class Key:
    id: int
    secret: str  # base64url of KEY_BYTES random bytes
    state: str
    created_at: int
    changed_at: int

    def secret_bytes(self) -> bytes:
        return base64.urlsafe_b64decode(self.secret)

    def describe(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "secret"}


class KeyRing:
    def __init__(self, keys: list[Key]) -> None:
        self.keys = sorted(keys, key=lambda k: k.id)
        active = [k for k in self.keys if k.state == ACTIVE]
        if len(active) > 1:
            raise KeyFileError(f"more than one active key: {[k.id for k in active]}")
        self.active = active[0] if active else None

    def codec(self) -> TokenCodec:
        usable = {k.id: k.secret_bytes() for k in self.keys if k.state != RETIRED}
        return TokenCodec(usable, self.active.id if self.active else None)

    def get(self, key_id: int) -> Key:
        for key in self.keys:
            if key.id == key_id:
                return key
        raise KeyFileError(f"there is no key {key_id}")

    def create(self, *, activate: bool = False) -> KeyRing:
        next_id = max((k.id for k in self.keys), default=0) + 1
        if next_id > MAX_KEY_ID:
            raise KeyFileError("all key ids are used")
        now = int(time.time())
        secret = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
        ring = KeyRing([*self.keys, Key(next_id, secret, VERIFYING, now, now)])
        return ring.activate(next_id) if activate or self.active is None else ring

    def activate(self, key_id: int) -> KeyRing:
        target = self.get(key_id)
        if target.state == RETIRED:
            raise KeyFileError(f"key {key_id} is retired and cannot be used again")
        now = int(time.time())
        keys = []
        for key in self.keys:
            if key.id == key_id:
                key = replace(key, state=ACTIVE, changed_at=now)
            elif key.state == ACTIVE:
                key = replace(key, state=VERIFYING, changed_at=now)
            keys.append(key)
        return KeyRing(keys)

    def retire(self, key_id: int) -> KeyRing:
        target = self.get(key_id)
        if target.state == ACTIVE:
            raise KeyFileError(f"key {key_id} is the active key: activate another key before retiring it")
        now = int(time.time())
        return KeyRing([replace(k, state=RETIRED, changed_at=now) if k.id == key_id else k for k in self.keys])


def load(path: Path) -> KeyRing:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist: run `clickedge keys create`") from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc}") from None
    try:
        keys = [
            Key(int(k["id"]), str(k["secret"]), str(k["state"]), int(k["created_at"]), int(k["changed_at"]))
            for k in doc["keys"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"key file {path} is not a Clickedge key file ({exc!r})") from None
    for key in keys:
        if not 1 <= key.id <= MAX_KEY_ID:
            raise KeyFileError(f"key id {key.id} in {path} is out of range 1..{MAX_KEY_ID}")
        if key.state not in STATES:
            raise KeyFileError(f"key {key.id} in {path} has unknown state {key.state!r}")
        try:
            if len(key.secret_bytes()) != KEY_BYTES:
                raise ValueError
        except ValueError:
            raise KeyFileError(f"key {key.id} in {path} is not {KEY_BYTES} bytes of base64url") from None
    return KeyRing(keys)


def load_or_create(path: Path) -> KeyRing:
    """Load the ring; on first use create the file with one active key."""
    if path.exists():
        return load(path)
    ring = KeyRing([]).create(activate=True)
    save(ring, path)
    return ring


def save(ring: KeyRing, path: Path) -> None:
    body = json.dumps({"version": 1, "keys": [asdict(k) for k in ring.keys]}, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, body)
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc} ({path.parent} must be writable)") from None
