"""Pure functions over bytes and keys: canonical JSON, envelope encryption, signatures, key stores."""

from ehr.crypto.canonical import InvalidJSON, canonical_json, parse_json
from ehr.crypto.envelope import DecryptionError, Sealed, open_sealed, rewrap, seal
from ehr.crypto.keys import FileKeyStore, KeyStore, KeyStoreError, MemoryKeyStore, UnknownKey
from ehr.crypto.signing import Signer, verify_signature

__all__ = [
    "DecryptionError",
    "FileKeyStore",
    "InvalidJSON",
    "KeyStore",
    "KeyStoreError",
    "MemoryKeyStore",
    "Sealed",
    "Signer",
    "UnknownKey",
    "canonical_json",
    "open_sealed",
    "parse_json",
    "rewrap",
    "seal",
    "verify_signature",
]
