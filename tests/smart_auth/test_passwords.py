"""Password hashes verify what they were made from and nothing else; the policy is NIST SP 800-63B's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smart_auth import passwords
from smart_auth.passwords import (
    DEFAULT_COST,
    WeakPassword,
    burn,
    check_password_policy,
    hash_password,
    verify_password,
)

FAST = 2**4  # property tests: the same code path at a fraction of the work


def test_a_hash_verifies_its_password() -> None:
    stored = hash_password("correct horse battery staple")
    assert verify_password("correct horse battery staple", stored)
    assert not verify_password("correct horse battery stapler", stored)


def test_the_stored_form_carries_its_parameters() -> None:
    scheme, log_n, r, p, salt, key = hash_password("correct horse battery staple").split("$")
    assert (scheme, int(log_n), int(r), int(p)) == ("scrypt", 15, 8, 1)
    assert len(salt) == 22 and len(key) == 43  # 16 and 32 bytes, URL-safe base64 without padding


def test_a_hash_of_another_cost_still_verifies() -> None:
    stored = hash_password("correct horse battery staple", cost=2**10)
    assert stored.startswith("scrypt$10$8$1$")
    assert verify_password("correct horse battery staple", stored)


def test_the_same_password_hashes_differently_each_time() -> None:
    assert hash_password("correct horse battery staple", cost=FAST) != hash_password(
        "correct horse battery staple", cost=FAST
    )


def test_equivalent_unicode_forms_match() -> None:
    stored = hash_password("ｃｏｒｒｅｃｔ horse ﬁne", cost=FAST)  # fullwidth letters, a ligature
    assert verify_password("correct horse fine", stored)


@pytest.mark.parametrize("cost", [0, 1, 3, 2**10 + 1, 2**19])
def test_a_cost_out_of_range_is_refused(cost: int) -> None:
    with pytest.raises(ValueError):
        hash_password("correct horse battery staple", cost=cost)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt",
        "plain$password",
        "scrypt$4$8$1$AAAAAAAAAAAAAAAAAAAAAA",                                       # no key
        "scrypt$x$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$0$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   # N = 1
        "scrypt$4$0$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   # r = 0
        "scrypt$4$8$0$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   # p = 0
        "scrypt$40$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # terabytes
        "scrypt$4$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # impossible length
        "scrypt$4$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAA+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # not URL-safe
        "scrypt$4$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",  # trailing line break
        "scrypt$٤$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   # Arabic-Indic digit
        "scrypt$4$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$x",
    ],
)
def test_a_malformed_stored_value_verifies_nothing(stored: str) -> None:
    assert verify_password("correct horse battery staple", stored) is False


@settings(max_examples=25, deadline=None)
@given(password=st.text(max_size=300), other=st.text(max_size=300))
def test_only_the_hashed_password_verifies(password: str, other: str) -> None:
    stored = hash_password(password, cost=FAST)
    assert verify_password(password, stored)
    assert verify_password(other, stored) == (passwords._normalise(other) == passwords._normalise(password))


@settings(max_examples=25, deadline=None)
@given(stored=st.text(max_size=200))
def test_verifying_never_raises(stored: str) -> None:
    assert verify_password("correct horse battery staple", "scrypt$4$8$1$" + stored) in (True, False)
    assert verify_password("correct horse battery staple", stored) in (True, False)


def test_burn_does_the_work_of_a_default_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown username must cost what a wrong password costs: the same scrypt call, with the
    parameters of a hash made today (compared by the calls made, not by a clock)."""
    stored = hash_password("correct horse battery staple")
    calls: list[tuple[int, int, int, int, int]] = []
    real = passwords._derive

    def spy(password: str, salt: bytes, log_n: int, r: int, p: int, length: int) -> bytes:
        calls.append((len(salt), log_n, r, p, length))
        return real(password, salt, log_n, r, p, length)

    monkeypatch.setattr(passwords, "_derive", spy)
    verify_password("wrong horse battery staple", stored)
    burn("wrong horse battery staple")
    assert len(calls) == 2 and calls[0] == calls[1] == (16, DEFAULT_COST.bit_length() - 1, 8, 1, 32)


def test_burn_matches_no_password() -> None:
    assert not verify_password("", passwords._DUMMY)
    burn("")


@pytest.mark.parametrize(
    "password",
    [
        "twelve chars",                # exactly 12
        "abcdefghijkl",                # no composition rules: all lower case is fine
        "ééééééééééé\u0065\u0301",    # 12 code points after NFKC composes e + combining acute
        "x" * 256,
        "密码密码密码密码密码密码",      # any Unicode
    ],
)
def test_the_policy_admits(password: str) -> None:
    check_password_policy(password, "alice")


@pytest.mark.parametrize(
    ("password", "username", "reason"),
    [
        ("", "alice", "at least 12"),
        ("eleven char", "alice", "at least 12"),
        ("ééééééééééé", "alice", "at least 12"),
        ("e\u0301" * 11, "alice", "at least 12"),   # 22 code points typed, 11 after normalisation
        ("x" * 257, "alice", "at most 256"),
        ("alice.smith@example", "alice.smith@example", "username"),
        ("my name is ALICE.SMITH ok", "alice.smith", "username"),
        ("ａｌｉｃｅ-is-my-password", "alice", "username"),  # fullwidth letters normalise to ASCII
    ],
)
def test_the_policy_refuses(password: str, username: str, reason: str) -> None:
    with pytest.raises(WeakPassword, match=reason) as caught:
        check_password_policy(password, username)
    assert isinstance(caught.value, ValueError)
    assert not password or password not in str(caught.value)
