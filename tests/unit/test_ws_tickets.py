"""WebSocket tickets (api/auth.Tickets): signed, single use, short-lived, good on any replica."""

from __future__ import annotations

import pytest

from sandlot import errors
from sandlot.api import auth
from sandlot.api.auth import Principal, Tickets

WHO = Principal("key-1", "team-a", admin=False)
ADMIN = Principal("key-2", "admin", admin=True)


def test_a_ticket_works_once() -> None:
    t = Tickets()
    ticket = t.issue(WHO)
    assert t.redeem(ticket) == WHO
    assert t.redeem(t.issue(ADMIN)) == ADMIN
    with pytest.raises(errors.AuthenticationError, match="used or expired"):
        t.redeem(ticket)


@pytest.mark.parametrize("bad", ["", "wst_", "wst_never-issued", "wst_a.b", "wst_a.b.c", "x" * 300, "wst_\u00e9.e"])
def test_garbage_is_refused(bad: str) -> None:
    with pytest.raises(errors.AuthenticationError):
        Tickets().redeem(bad)


def test_a_tampered_ticket_is_refused() -> None:
    t = Tickets()
    body, mac = t.issue(WHO).removeprefix("wst_").split(".")
    forged = auth._b64(auth._unb64(body).replace(b"team-a", b"team-b"))
    with pytest.raises(errors.AuthenticationError):
        t.redeem(f"wst_{forged}.{mac}")


def test_replicas_sharing_the_secret_redeem_each_others_tickets() -> None:
    a, b, stranger = Tickets(b"s" * 32), Tickets(), Tickets(b"t" * 32)
    b.use_secret(b"s" * 32)
    assert b.redeem(a.issue(WHO)) == WHO
    with pytest.raises(errors.AuthenticationError):
        stranger.redeem(a.issue(WHO))


def test_an_expired_ticket_is_refused_and_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "time", lambda: now[0])
    t = Tickets()
    used, late = t.issue(WHO), t.issue(WHO)
    t.redeem(used)
    now[0] += Tickets.TTL_S + 1
    with pytest.raises(errors.AuthenticationError):
        t.redeem(late)
    assert not t._used  # the nonces it remembers expire with their tickets
