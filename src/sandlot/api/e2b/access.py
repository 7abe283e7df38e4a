"""Who may use a sandbox's in-sandbox API: E2B's per-sandbox access token.

E2B hands each sandbox an `envdAccessToken` when it is created or connected
to, and the SDK sends it back as `X-Access-Token` (the code interpreter's
context calls send it as `E2B-Traffic-Access-Token` instead, which we hand out
too). Ours is HMAC-SHA256(server secret, sandbox id): nothing to store, valid
for that sandbox only. The secret lives in the database (`Store.secret`), so every
replica of a fleet checks the same tokens.
An API key of the sandbox's team is accepted as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from fastapi import Request

from sandlot import errors
from sandlot.api.auth import Principal, principal_and_sandbox
from sandlot.api.service import SandboxService
from sandlot.api.store import SandboxRecord, Store

__all__ = ["access_token", "load_secret", "sandbox_principal"]

_SECRET_FILE = "e2b-access.secret"


async def load_secret(store: Store, data_dir: Path) -> bytes:
    """The server's E2B access-token key, from the database (shared by a fleet's replicas); a
    server that kept it in its data directory before moves that one there, so tokens stay valid."""
    legacy = Path(data_dir) / _SECRET_FILE
    try:
        new = legacy.read_bytes()
    except FileNotFoundError:
        new = secrets.token_bytes(32)
    return await store.secret("e2b-access", new)


def _secret(request: Request) -> bytes:
    secret: bytes = request.app.state.e2b_secret
    return secret


def access_token(request: Request, sandbox_id: str) -> str:
    return hmac.new(_secret(request), sandbox_id.encode(), hashlib.sha256).hexdigest()


async def sandbox_principal(request: Request, sandbox_id: str) -> tuple[Principal, SandboxRecord]:
    """The caller of an in-sandbox request, as a principal of the sandbox's team."""
    svc: SandboxService = request.app.state.service
    token = request.headers.get("x-access-token") or request.headers.get("e2b-traffic-access-token")
    if token:
        rec = await svc.store.get_sandbox(sandbox_id)
        if rec is None or not hmac.compare_digest(token, access_token(request, sandbox_id)):
            raise errors.AuthenticationError(f"the access token is not valid for sandbox {sandbox_id}")
        return Principal("e2b-access-token", rec.team, False), rec
    who, team_rec = await principal_and_sandbox(request, sandbox_id)  # an API key, or AuthenticationError
    if team_rec is None:
        raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
    return who, team_rec
