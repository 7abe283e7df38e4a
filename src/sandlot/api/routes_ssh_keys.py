"""SSH public keys of a team (the SSH gateway's logins): register, list, remove.

Any API key manages its own team's SSH keys; an admin key may name another team.
A key is accepted in OpenSSH's one-line form (`ssh-ed25519 AAAA... comment`) and
stored with its SHA-256 fingerprint, which is unique across teams.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Request, Response

from sandlot import errors
from sandlot.api.auth import Principal
from sandlot.api.deps import Who
from sandlot.api.store import SshKeyRecord, Store
from sandlot.models import ErrorBody, SshKeyCreate, SshKeyInfo, SshKeyList

if TYPE_CHECKING:
    import asyncssh

__all__ = ["parse_public_key", "router"]

router = APIRouter(
    prefix="/ssh-keys", tags=["ssh"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422)}
)


def parse_public_key(text: str) -> asyncssh.SSHKey:
    """One OpenSSH public key; InvalidArgumentError (field public_key) for anything else."""
    import asyncssh  # here, not at the top: a server start need not load the SSH library

    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise errors.InvalidArgumentError("public_key must be exactly one OpenSSH public key line", field="public_key")
    try:
        return asyncssh.import_public_key(lines[0])
    except (asyncssh.KeyImportError, ValueError, TypeError) as exc:
        raise errors.InvalidArgumentError(
            f"public_key is not an OpenSSH public key ({exc}); give the .pub file, e.g. ~/.ssh/id_ed25519.pub",
            field="public_key",
        ) from None


def _info(rec: SshKeyRecord) -> SshKeyInfo:
    algorithm = rec.public_key.split(" ", 1)[0]
    return SshKeyInfo(
        key_id=rec.key_id,
        team=rec.team,
        name=rec.name,
        fingerprint=rec.fingerprint,
        algorithm=algorithm,
        created_at=rec.created_at,
    )


def _team(who: Principal, team: str | None) -> str:
    if team is None or team == who.team:
        return who.team
    if not who.admin:
        raise errors.PermissionDeniedError("only an admin API key may register SSH keys for another team")
    return team


@router.post("", status_code=201, response_model=SshKeyInfo)
async def add(body: SshKeyCreate, who: Who, request: Request) -> SshKeyInfo:
    """Register a public key: `ssh -p PORT SANDBOX_ID@host` then logs in to the team's sandboxes."""
    key = parse_public_key(body.public_key)
    store: Store = request.app.state.store
    rec = SshKeyRecord(
        key_id="sshk-" + secrets.token_hex(8),
        team=_team(who, body.team),
        name=body.name or (key.get_comment() or ""),
        fingerprint=key.get_fingerprint("sha256"),
        public_key=key.export_public_key("openssh").decode().strip(),
        created_at=time.time(),
    )
    await store.add_ssh_key(rec)
    return _info(rec)


@router.get("", response_model=SshKeyList)
async def list_keys(who: Who, request: Request) -> SshKeyList:
    """The team's SSH keys (an admin key sees every team's)."""
    store: Store = request.app.state.store
    return SshKeyList(keys=[_info(r) for r in await store.ssh_keys(None if who.admin else who.team)])


@router.delete("/{key_id}", status_code=204, response_class=Response)
async def remove(key_id: Annotated[str, Path(max_length=64)], who: Who, request: Request) -> Response:
    """Remove a key: it stops logging in at once."""
    store: Store = request.app.state.store
    if not await store.remove_ssh_key(key_id, None if who.admin else who.team):
        raise errors.NotFoundError(f"SSH key {key_id} not found")
    return Response(status_code=204)
