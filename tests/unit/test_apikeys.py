"""The E2B form of a Sandlot API key: one key, two spellings."""

from __future__ import annotations

import re

from sandlot.api.auth import new_key
from sandlot.apikeys import canonical, e2b_form, is_e2b_form

#: E2B's client-side check, as its SDKs write it (Python 2.30-2.45: `\Ae2b_[0-9a-f]+\Z`;
#: the JS SDK 2.35-2.45 and both SDKs' main branches: the same, some case-insensitive).
#: The integration tests drive keys through the SDKs' own functions; this is the fast mirror.
E2B_CHECK = re.compile(r"\Ae2b_[0-9a-f]+\Z")


def test_every_minted_key_has_an_e2b_form_that_round_trips() -> None:
    for _ in range(50):
        key = new_key()
        e2b = e2b_form(key)
        assert E2B_CHECK.match(e2b), e2b
        assert is_e2b_form(e2b) and not is_e2b_form(key)
        assert canonical(e2b) == key and canonical(key) == key
        assert e2b_form(e2b) == e2b  # idempotent


def test_uppercase_hex_is_the_same_key() -> None:
    key = new_key()
    assert canonical(e2b_form(key).upper().replace("E2B_", "e2b_")) == key


def test_other_strings_are_not_e2b_forms_of_sandlot_keys() -> None:
    real_e2b_key = "e2b_985895e32046e1404d05adfb33614a3026de2cb6"  # an E2B cloud key: not ours
    for text in (real_e2b_key, "e2b_", "e2b_abc", "e2b_zz", "e2b_" + b"sl_\xff".hex(), "sl_abc", ""):
        assert not is_e2b_form(text), text
        assert canonical(text) == text
