"""The two written forms of one Sandlot API key.

A key is minted as `sl_` + base32 (`sandlot.api.auth.new_key`). The E2B SDKs
check a key's form on the client before sending it (`e2b_` followed by hex
characters; E2B's own keys look like `e2b_985895e3...`), so every key also has
an E2B form: `e2b_` + the hex of the key's UTF-8 bytes. Both forms are the same
key: the server accepts either wherever it takes a key (`canonical` turns the
E2B form back into the minted one before the key is looked up), and the clients
(Sandlot's SDK and CLI, `sandlot e2b-env`) send whichever they were given.

Shared by the server and the clients: no server imports here.
"""

from __future__ import annotations

import re

__all__ = ["E2B_PREFIX", "SANDLOT_PREFIX", "canonical", "e2b_form", "is_e2b_form"]

SANDLOT_PREFIX = "sl_"
E2B_PREFIX = "e2b_"
#: What E2B's SDKs accept (case-insensitive in some releases, lowercase in others: we write lowercase).
_E2B_FORM = re.compile(r"\Ae2b_(?:[0-9a-fA-F]{2})+\Z")


def e2b_form(key: str) -> str:
    """The E2B form of a Sandlot key (`sl_...` -> `e2b_<hex>`); a key already in that form is returned as is.

    >>> e2b_form("sl_abc")
    'e2b_736c5f616263'
    """
    if is_e2b_form(key):
        return key.lower()
    return E2B_PREFIX + key.encode().hex()


def is_e2b_form(key: str) -> bool:
    """Whether `key` is written in the E2B form of a Sandlot key."""
    if not _E2B_FORM.match(key):
        return False
    try:
        return bytes.fromhex(key[len(E2B_PREFIX) :]).decode().startswith(SANDLOT_PREFIX)
    except UnicodeDecodeError:
        return False


def canonical(key: str) -> str:
    """The minted form (`sl_...`) of a key given in either form; anything else is returned unchanged
    (and will simply not match a key)."""
    if is_e2b_form(key):
        return bytes.fromhex(key[len(E2B_PREFIX) :]).decode()
    return key
