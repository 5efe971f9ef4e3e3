"""Blind index keys (ehr/crypto/blind.py): prefixes and exact text, tokens' forms, separation."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from ehr.crypto.blind import MAX_PREFIX, BlindIndex, normalise

BLIND = BlindIndex(bytes(range(32)))
texts = st.text(min_size=1, max_size=70)


@given(texts)
def test_every_prefix_of_a_stored_string_finds_it(text: str) -> None:
    stored = BLIND.string_keys("Patient", "family", text)
    norm = normalise(text)
    for n in range(1, min(len(norm), MAX_PREFIX) + 1):
        assert BLIND.string_query("Patient", "family", norm[:n], exact=False) in stored
    assert BLIND.string_query("Patient", "family", text, exact=True) in stored


@given(texts)
def test_the_running_prefix_keys_equal_one_keyed_hash_each(text: str) -> None:
    norm = normalise(text)[:MAX_PREFIX]
    one_each = {BLIND.key(b"p", "Patient", "family", norm[:n]) for n in range(1, len(norm) + 1)}
    assert one_each <= BLIND.string_keys("Patient", "family", text)


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_the_ascii_shortcut_normalises_like_the_general_path(text: str) -> None:
    decomposed = unicodedata.normalize("NFKD", text)
    general = " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).casefold().split())
    assert normalise(text) == general


def test_case_and_accents_do_not_matter_for_prefixes() -> None:
    stored = BLIND.string_keys("Patient", "family", "Müller-Lüdenscheidt")
    assert BLIND.string_query("Patient", "family", "MULLER-lu", exact=False) in stored
    assert BLIND.string_query("Patient", "family", "muller", exact=True) not in stored


def test_keys_are_bound_to_type_and_parameter() -> None:
    assert BLIND.string_keys("Patient", "family", "Smith").isdisjoint(BLIND.string_keys("Patient", "given", "Smith"))
    assert BLIND.string_keys("Patient", "family", "Smith").isdisjoint(
        BLIND.string_keys("Practitioner", "family", "Smith")
    )
    assert BlindIndex(bytes(32)).string_keys("Patient", "family", "Smith").isdisjoint(
        BLIND.string_keys("Patient", "family", "Smith")
    )


def test_token_forms() -> None:
    stored = BLIND.token_keys("Patient", "identifier", "urn:x", "42")
    for system, code in (("urn:x", "42"), (None, "42"), ("urn:x", None)):
        assert BLIND.token_query("Patient", "identifier", system, code) in stored
    assert BLIND.token_query("Patient", "identifier", "", "42") not in stored  # |42: no system
    assert BLIND.token_query("Patient", "identifier", "", "42") in BLIND.token_keys("Patient", "identifier", None, "42")


def test_repr_shows_nothing_of_the_key() -> None:
    assert repr(BLIND) == "BlindIndex(...)"
