"""Passwords of people who sign in: a memory-hard hash (scrypt, RFC 7914) and the NIST SP 800-63B policy.

Stored form: ``scrypt$<log2 N>$<r>$<p>$<salt>$<key>`` (URL-safe base64 without padding). The
parameters travel with each hash, so raising the cost later leaves older hashes verifiable.

Passwords are NFKC-normalised before they are measured or hashed (SP 800-63B §5.1.1.2: "the
verifier SHOULD apply the Normalization Process for Stabilized Strings using either the NFKC or
NFKD normalization"), so the same password typed on another keyboard still matches.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import unicodedata

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

DEFAULT_COST = 2**15      # N: 32 MiB and about 0.1 s per hash at r=8
MIN_LENGTH = 12           # code points, after normalisation
MAX_LENGTH = 256

_R, _P = 8, 1
_SALT_BYTES, _KEY_BYTES = 16, 32
_MAX_MEMORY = 2**28       # 128 * r * N bytes: a damaged stored value cannot ask for more
_STORED = re.compile(r"scrypt\$([0-9]{1,2})\$([0-9]{1,2})\$([0-9])\$([A-Za-z0-9_-]{11,88})\$([A-Za-z0-9_-]{22,88})")


class WeakPassword(ValueError):
    """The password breaks the policy; the message says how, in plain words, without echoing it."""


def hash_password(password: str, *, cost: int = DEFAULT_COST) -> str:
    """A new salted scrypt hash of ``password``; ``cost`` is N, a power of two."""
    log_n = cost.bit_length() - 1
    if cost < 2 or cost != 1 << log_n or 128 * _R * cost > _MAX_MEMORY:
        raise ValueError("cost must be a power of two from 2 to 2**18")
    salt = os.urandom(_SALT_BYTES)
    return _format(log_n, _R, _P, salt, _derive(password, salt, log_n, _R, _P, _KEY_BYTES))


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored``, in constant time; False for a malformed ``stored``."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    log_n, r, p, salt, key = parsed
    return hmac.compare_digest(_derive(password, salt, log_n, r, p, len(key)), key)


def burn(password: str) -> None:
    """The work of one verification against a hash of the default cost, for an unknown username: a
    missing account then takes as long to refuse as a wrong password (no enumeration by timing)."""
    verify_password(password, _DUMMY)  # _DUMMY: at the end of the module


def check_password_policy(password: str, username: str) -> None:
    """SP 800-63B §5.1.1.2 memorized secrets: a minimum and a maximum length, not the username; no
    composition rules ("Verifiers SHOULD NOT impose other composition rules")."""
    normalised = _normalise(password)
    if len(normalised) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(normalised) > MAX_LENGTH:
        raise WeakPassword(f"a password may have at most {MAX_LENGTH} characters")
    name = _normalise(username).casefold()
    if name and name in normalised.casefold():
        raise WeakPassword("a password must not contain the username")


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _derive(password: str, salt: bytes, log_n: int, r: int, p: int, length: int) -> bytes:
    # surrogatepass: a lone surrogate (a form decoder can produce one) is hashed, not an exception
    material = _normalise(password).encode("utf-8", "surrogatepass")
    return Scrypt(salt=salt, length=length, n=1 << log_n, r=r, p=p).derive(material)


def _format(log_n: int, r: int, p: int, salt: bytes, key: bytes) -> str:
    return f"scrypt${log_n}${r}${p}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    match = _STORED.fullmatch(stored) if isinstance(stored, str) else None
    if match is None:
        return None
    log_n, r, p = (int(group) for group in match.group(1, 2, 3))
    if not (1 <= log_n and 1 <= r and 1 <= p <= 4 and 128 * r << log_n <= _MAX_MEMORY):
        return None
    try:
        salt, key = _unb64(match[4]), _unb64(match[5])
    except binascii.Error:
        return None
    return log_n, r, p, salt, key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


# What burn() verifies against: the default parameters, a salt and a key of zeros that no password matches.
_DUMMY = _format(DEFAULT_COST.bit_length() - 1, _R, _P, bytes(_SALT_BYTES), bytes(_KEY_BYTES))
