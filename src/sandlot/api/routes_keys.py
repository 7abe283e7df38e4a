"""API keys (admin only): create, list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from sandlot import errors
from sandlot.api.auth import create_key, require_admin
from sandlot.api.deps import Who
from sandlot.api.store import KeyRecord, Store
from sandlot.apikeys import e2b_form
from sandlot.models import ErrorBody, KeyCreate, KeyCreated, KeyInfo, KeyList

__all__ = ["router"]

router = APIRouter(
    prefix="/keys", tags=["keys"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)}
)


def _info(rec: KeyRecord) -> KeyInfo:
    return KeyInfo(
        key_id=rec.key_id,
        team=rec.team,
        name=rec.name,
        admin=rec.admin,
        created_at=rec.created_at,
        revoked=rec.revoked_at is not None,
    )


@router.post("", status_code=201, response_model=KeyCreated)
async def create(body: KeyCreate, who: Who, request: Request) -> KeyCreated:
    """Make a key for a team. The answer is the only time the key itself is shown."""
    require_admin(who)
    store: Store = request.app.state.store
    rec, key = await create_key(store, body.team, body.name, body.admin)
    return KeyCreated(**_info(rec).model_dump(), key=key, e2b_key=e2b_form(key))


@router.get("", response_model=KeyList)
async def list_keys(who: Who, request: Request) -> KeyList:
    require_admin(who)
    store: Store = request.app.state.store
    return KeyList(keys=[_info(r) for r in await store.list_keys()])


@router.delete("/{key_id}", status_code=204, response_class=Response)
async def revoke(key_id: Annotated[str, Path(max_length=64)], who: Who, request: Request) -> Response:
    """Revoke a key: it stops working at once."""
    require_admin(who)
    store: Store = request.app.state.store
    if not await store.revoke_key(key_id):
        raise errors.NotFoundError(f"key {key_id} not found (or already revoked)")
    return Response(status_code=204)
