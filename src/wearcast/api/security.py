"""API keys: sent in the ``X-API-Key`` header, stored only as SHA-256 hashes, each with a role.

``reader`` may predict and read; ``admin`` may also reload and promote models. With no keys
configured the API is open, which is refused outside development.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import IntEnum

__all__ = ["Role", "KeyRing", "hash_key", "new_key"]

HEADER = "X-API-Key"


class Role(IntEnum):
    reader = 1
    admin = 2


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


class KeyRing:
    """The configured keys; answers who a presented key belongs to."""

    def __init__(self, entries: list[str]):
        self._keys: list[tuple[str, Role]] = []
        for entry in entries:
            role, _, digest = entry.partition(":")
            if role not in Role.__members__ or len(digest) != 64:
                raise ValueError(
                    f"API key entry {entry[:12]!r}...: expected ROLE:SHA256HEX with ROLE one of "
                    f"{', '.join(Role.__members__)} (make one with `wearcast api-key ROLE`)"
                )
            self._keys.append((digest.lower(), Role[role]))

    @property
    def empty(self) -> bool:
        return not self._keys

    def role_of(self, key: str | None) -> Role | None:
        key = key.strip() if key else key  # spaces about a header value are not part of it
        if not key:
            return None
        digest = hash_key(key)
        found = None
        for stored, role in self._keys:  # compare with every entry: no timing hint
            if hmac.compare_digest(stored, digest):
                found = role
        return found
