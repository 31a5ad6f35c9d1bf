"""API keys: a key file holds only hashes, one a line (``partialface keys new FILE`` prints a new key once).

Keys are 256-bit random strings (:func:`secrets.token_urlsafe`), so a plain SHA-256 of a key is enough to store
it: a slow password hash (scrypt, bcrypt) protects guessable passwords against a stolen file, and a random
256-bit key has nothing to guess. A presented key is hashed and compared with every stored hash in constant
time (:func:`hmac.compare_digest`, no early exit), so timing says nothing about a hash. The file is re-read when
it changes, so a new key works without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from partialface.errors import PartialFaceError

#: the header that carries a key
HEADER = "X-API-Key"
_HEX = set("0123456789abcdef")


def key_hash(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(path: str | os.PathLike[str]) -> str:
    """A new random key; its hash is appended to ``path`` (created with mode 0600). The key itself is returned
    (to be shown once) and stored nowhere."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise PartialFaceError(f"{p}: not a file")
    key = secrets.token_urlsafe(32)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="ascii") as f:
        f.write(key_hash(key) + "\n")
    return key


def read_hashes(path: str | os.PathLike[str]) -> list[str]:
    """The hashes of a key file; PartialFaceError for a missing file or a line that is not a SHA-256 hex."""
    p = Path(path)
    if not p.is_file():
        raise PartialFaceError(f"--api-key-file {p}: no such file (make one: partialface keys new {p})")
    out = []
    for i, line in enumerate(p.read_text(encoding="ascii", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) != 64 or not set(line) <= _HEX:
            raise PartialFaceError(f"--api-key-file {p}: line {i} is not a key hash (the file holds hashes made by "
                                   "`partialface keys new`, never keys)")
        out.append(line)
    return out


class KeyRing:
    """The hashes of a key file, re-read when the file changes; :meth:`check` a presented key."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._hashes: list[str] = []
        self._reload()

    def _reload(self) -> None:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._hashes, self._stamp = read_hashes(self.path), stamp

    def check(self, key: str | None) -> bool:
        """Whether ``key`` is one of the file's keys (constant time in the key; False for None or empty)."""
        with self._lock:
            try:
                self._reload()
            except (OSError, PartialFaceError):
                self._hashes, self._stamp = [], None  # a missing or broken file lets nobody in (fail closed)
            hashes = list(self._hashes)
        if not key:
            return False
        presented = key_hash(key)
        ok = False
        for h in hashes:
            ok |= hmac.compare_digest(presented, h)
        return ok
