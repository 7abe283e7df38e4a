"""WebSocket tickets (api/auth.Tickets): single use, short-lived, bounded."""

from __future__ import annotations

import pytest

from sandlot import errors
from sandlot.api import auth
from sandlot.api.auth import Principal, Tickets

WHO = Principal("key-1", "team-a", admin=False)


def test_a_ticket_works_once() -> None:
    t = Tickets()
    ticket = t.issue(WHO)
    assert t.redeem(ticket) == WHO
    with pytest.raises(errors.AuthenticationError, match="used or expired"):
        t.redeem(ticket)
    with pytest.raises(errors.AuthenticationError):
        t.redeem("wst_never-issued")


def test_an_expired_ticket_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    t = Tickets()
    ticket = t.issue(WHO)
    now[0] += Tickets.TTL_S + 1
    with pytest.raises(errors.AuthenticationError):
        t.redeem(ticket)


def test_live_tickets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Tickets, "MAX", 3)
    t = Tickets()
    first = t.issue(WHO)
    rest = [t.issue(WHO) for _ in range(3)]
    with pytest.raises(errors.AuthenticationError):
        t.redeem(first)  # the oldest made room
    assert all(t.redeem(x) == WHO for x in rest)
