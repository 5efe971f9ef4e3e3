"""Blind index keys: what the search index stores instead of names, identifiers and codes
(docs/adr/0008-search-index.md).

A key is BLAKE2b-128 keyed with the installation's index key (keyed BLAKE2 is a MAC, RFC 7693 §2.9)
over ``form || type || param || value``, with unit separators between the fields. Binding the
resource type and parameter into every key means equal values in two parameters (a family name that
is also a city) do not show as equal rows. Without the key nothing can be tested against the index,
not even a guessed common name.

String values are normalised as FHIR string search wants (accent- and case-insensitive, whitespace
collapsed) and stored as one key per prefix up to :data:`MAX_PREFIX` characters plus one for the
exact text; a search value longer than that is matched on its first MAX_PREFIX characters, which can
only over-match (the store says so in the ADR; names that long are rare).
"""

from __future__ import annotations

import unicodedata
from hashlib import blake2b

MAX_PREFIX = 48
_SEP = b"\x1f"

# Forms, one byte each: which question a key answers.
PREFIX, EXACT, CODE, SYSTEM_CODE, SYSTEM, URI = b"p", b"x", b"c", b"k", b"s", b"u"


def normalise(text: str) -> str:
    """Case folded, accents removed (NFKD, combining marks dropped), whitespace collapsed."""
    if text.isascii():  # NFKD leaves ASCII as it is, and it has no combining marks
        return " ".join(text.casefold().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


class BlindIndex:
    """Computes index keys under one secret key; the repr shows nothing of it."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an index key is 32 bytes")
        self._key = key

    def key(self, form: bytes, res_type: str, param: str, value: str) -> bytes:
        material = self._header(form, res_type, param) + value.encode()
        return blake2b(material, key=self._key, digest_size=16).digest()

    @staticmethod
    def _header(form: bytes, res_type: str, param: str) -> bytes:
        return form + _SEP + res_type.encode() + _SEP + param.encode() + _SEP

    def string_keys(self, res_type: str, param: str, text: str) -> set[bytes]:
        """Every key a stored string answers to: its normalised prefixes and its exact text. The
        prefixes' keys come from one running hash (the value is the material's last field, so the
        key of each prefix is the running state's digest), not one keyed hash each."""
        running = blake2b(self._header(PREFIX, res_type, param), key=self._key, digest_size=16)
        keys = {self.key(EXACT, res_type, param, text)}
        for char in normalise(text)[:MAX_PREFIX]:
            running.update(char.encode())
            keys.add(running.copy().digest())
        return keys

    def string_query(self, res_type: str, param: str, text: str, *, exact: bool) -> bytes:
        if exact:
            return self.key(EXACT, res_type, param, text)
        return self.key(PREFIX, res_type, param, normalise(text)[:MAX_PREFIX])

    def token_keys(self, res_type: str, param: str, system: str | None, code: str | None) -> set[bytes]:
        """Keys for ``code``, ``system|code`` (``|code`` when there is no system) and ``system|``."""
        keys: set[bytes] = set()
        if code is not None:
            keys.add(self.key(CODE, res_type, param, code))
            keys.add(self.key(SYSTEM_CODE, res_type, param, f"{system or ''}|{code}"))
        if system is not None:
            keys.add(self.key(SYSTEM, res_type, param, system))
        return keys

    def token_query(self, res_type: str, param: str, system: str | None, code: str | None) -> bytes:
        if system is None:
            return self.key(CODE, res_type, param, code or "")
        if code is None:
            return self.key(SYSTEM, res_type, param, system)
        return self.key(SYSTEM_CODE, res_type, param, f"{system}|{code}")

    def __repr__(self) -> str:
        return "BlindIndex(...)"
