"""Passwords: scrypt hashes as stored, and the constant-time check (on the worker threads).

The standard library's ``hashlib.scrypt``: memory-hard, ``scrypt_n`` 16384, r
8, p 1 (16 MiB and ~30 ms a hash), a random salt per account, stored as
``scrypt$N$r$p$salt$hash`` in base64.  Nothing here touches the loop or the
store: :mod:`.queue` runs these on the worker threads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PASSWORD_MAX = 256
_SCRYPT_R, _SCRYPT_P = 8, 1
#: The largest scrypt cost accepted: 128 * N * r bytes = 256 MiB per hash.
SCRYPT_N_MAX = 2**18


def hash_password(password: str, n: int) -> str:
    """A new scrypt hash of ``password`` with a fresh salt, as stored."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, n, _SCRYPT_R, _SCRYPT_P)
    encode = base64.b64encode
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem above what N, r, p need (128 * N * r * p bytes, plus a little).
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=129 * n * r * p + 2**20, dklen=32)
