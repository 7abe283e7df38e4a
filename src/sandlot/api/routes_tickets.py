"""`POST /ws-tickets`: a single-use ticket that opens one WebSocket (`?ticket=`) in place of
the API key, so that a browser never puts its key in a URL (auth.Tickets)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from sandlot.api.auth import Tickets
from sandlot.api.deps import Who
from sandlot.models import ErrorBody, WsTicket

__all__ = ["router"]

router = APIRouter(tags=["auth"], responses={401: {"model": ErrorBody}})


@router.post("/ws-tickets", status_code=201, response_model=WsTicket)
async def ws_ticket(who: Who, request: Request) -> WsTicket:
    """A ticket for one WebSocket (a terminal: `WS /sandboxes/{id}/pty?ticket=...`), valid for 30 s."""
    tickets: Tickets = request.app.state.tickets
    return WsTicket(ticket=tickets.issue(who), expires_in=Tickets.TTL_S)
