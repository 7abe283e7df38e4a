"""API keys: made, stored hashed, checked on every request.

A key is `sl_` + 32 random bytes (base32); the store keeps only its SHA-256, so
a leaked database leaks no usable key. Its E2B form (`e2b_` + hex, what the E2B
SDKs accept: `sandlot.apikeys`) is the same key and works wherever the key does. Every key belongs to one team and sees
only that team's sandboxes; an admin key may also manage keys.

Clients send the key as `X-API-Key: <key>` or `Authorization: Bearer <key>`
(a WebSocket may also pass `?api_key=`, since browsers cannot set its headers).
A browser that must not put the key in a URL (the dashboard at /ui) trades it for a
ticket instead (`POST /ws-tickets`): signed, single use, valid for `Tickets.TTL_S`,
passed as `?ticket=`; any replica of a fleet redeems it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, WebSocket

from sandlot import errors
from sandlot.api.store import KeyRecord, SandboxRecord, Store
from sandlot.apikeys import canonical

__all__ = [
    "ADMIN_TEAM",
    "Principal",
    "Tickets",
    "bootstrap_admin_key",
    "hash_key",
    "new_key",
    "principal",
    "principal_and_sandbox",
    "require_admin",
]

ADMIN_TEAM = "admin"
KEY_PREFIX = "sl_"


@dataclass(frozen=True)
class Principal:
    key_id: str
    team: str
    admin: bool


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=").lower()


async def create_key(store: Store, team: str, name: str = "", admin: bool = False) -> tuple[KeyRecord, str]:
    key = new_key()
    rec = KeyRecord(key_id="key-" + secrets.token_hex(8), team=team, name=name, admin=admin, created_at=time.time())
    await store.add_key(rec, hash_key(key))
    return rec, key


async def bootstrap_admin_key(store: Store, data_dir: Path) -> str | None:
    """On the first start (no key at all), make the admin key and write it to `admin.key` (0600).

    Returns the new key (to print once), or None when keys already exist.
    """
    if await store.count_keys() > 0:
        return None
    _, key = await create_key(store, ADMIN_TEAM, "admin (first start)", admin=True)
    path = Path(data_dir) / "admin.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key


def _key_from(headers: dict[str, str] | object, query_key: str | None) -> str | None:
    assert hasattr(headers, "get")
    key = headers.get("x-api-key")
    if not key:
        authz = headers.get("authorization") or ""
        scheme, _, token = authz.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
    return key or query_key or None


def _hash_of(key: str | None) -> str:
    """The stored hash of an API key as a request sent it (AuthenticationError: none, or not a key)."""
    if not key:
        raise errors.AuthenticationError("no API key: send it as the X-API-Key header (or Authorization: Bearer KEY)")
    if len(key) > 256:
        raise errors.AuthenticationError("this API key is not valid")
    return hash_key(canonical(key))


def _principal_of(rec: KeyRecord | None) -> Principal:
    if rec is None or rec.revoked_at is not None:
        raise errors.AuthenticationError("this API key is not valid (unknown or revoked)")
    return Principal(rec.key_id, rec.team, rec.admin)


async def _authenticate(store: Store, key: str | None) -> Principal:
    return _principal_of(await store.key_by_hash(_hash_of(key)))


async def authenticate_key(store: Store, key: str | None) -> Principal:
    """The principal of an API key given some other way (the SSH gateway's password)."""
    return await _authenticate(store, key)


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, from its API key."""
    store: Store = request.app.state.store
    return await _authenticate(store, _key_from(request.headers, None))


async def principal_and_sandbox(request: Request, sandbox_id: str) -> tuple[Principal, SandboxRecord | None]:
    """The caller, from its API key, and its team's record of `sandbox_id` (None: its team has no such
    sandbox), from one trip to the store instead of two."""
    store: Store = request.app.state.store
    rec, sandbox = await store.key_and_sandbox(_hash_of(_key_from(request.headers, None)), sandbox_id)
    return _principal_of(rec), sandbox


async def authenticated_key(request: Request) -> tuple[Principal, str]:
    """The caller and the key it sent (for a gateway that calls the API again on its behalf)."""
    key = _key_from(request.headers, None)
    store: Store = request.app.state.store
    who = await _authenticate(store, key)
    assert key is not None
    return who, key


class Tickets:
    """Single-use, short-lived stand-ins for a key in a WebSocket URL (`?ticket=`).

    A ticket is signed, not stored: `wst_` + base64(key id, team, admin, expiry, nonce) +
    `.` + its HMAC under a secret the fleet's replicas share (`use_secret`, from the
    store), so any replica redeems what another issued. Each replica remembers the nonces
    it redeemed until they expire: a ticket works once there, and nowhere after `TTL_S`.
    A key revoked after its ticket was issued still opens that one socket, within `TTL_S`.
    Invariant: `_used` maps a redeemed nonce to its expiry. One event loop uses it: no lock.
    """

    TTL_S = 30.0

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._used: dict[str, float] = {}

    def use_secret(self, secret: bytes) -> None:
        """Sign with the fleet's shared secret (tickets issued before no longer verify)."""
        self._secret = secret

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, b"ws-ticket\0" + body, hashlib.sha256).digest()

    def issue(self, who: Principal) -> str:
        # team names and key ids never hold "|" (their patterns), so the fields split back
        fields = [who.key_id, who.team, "1" if who.admin else "0", f"{time.time() + self.TTL_S:.3f}"]
        body = "|".join([*fields, secrets.token_urlsafe(12)]).encode()
        return "wst_" + _b64(body) + "." + _b64(self._mac(body))

    def redeem(self, ticket: str) -> Principal:
        refused = errors.AuthenticationError("this ticket is not valid (unknown, used or expired): ask for a new one")
        try:
            body_b64, mac_b64 = ticket.removeprefix("wst_").split(".")
            body = _unb64(body_b64)
            ok = hmac.compare_digest(self._mac(body), _unb64(mac_b64))
            key_id, team, admin, expires, nonce = body.decode().split("|")
            expiry = float(expires)
        except ValueError:  # also binascii.Error and UnicodeDecodeError
            raise refused from None
        now = time.time()
        self._used = {n: e for n, e in self._used.items() if e > now}
        if not ok or expiry <= now or nonce in self._used:
            raise refused
        self._used[nonce] = expiry
        return Principal(key_id, team, admin == "1")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def ws_principal(websocket: WebSocket) -> Principal:
    ticket = websocket.query_params.get("ticket")
    if ticket:
        tickets: Tickets = websocket.app.state.tickets
        return tickets.redeem(ticket)
    store: Store = websocket.app.state.store
    return await _authenticate(store, _key_from(websocket.headers, websocket.query_params.get("api_key")))


def require_admin(who: Principal, what: str = "manage keys") -> None:
    if not who.admin:
        raise errors.PermissionDeniedError(f"only an admin API key may {what}")
