"""A client for the distribution API v2 (Docker Registry HTTP API, OCI distribution).

Auth follows the registry's `WWW-Authenticate` challenge: anonymous first, then
HTTP Basic with the configured credentials, or a bearer token fetched from the
challenge's realm (anonymously or with those credentials). Everything fetched by
digest is verified against it before it is used; blobs are downloaded into a
`.partial` file that a later pull resumes with a `Range` request.

Plain HTTP is used for registries configured `insecure`, and by default for
ones on the loopback (`localhost`, 127.0.0.0/8, `[::1]`), as Docker does:
traffic that never leaves the host gains nothing from TLS, and a local
registry almost always speaks plain HTTP. `{"insecure": false}` keeps TLS for
a loopback registry that has it. Every other registry gets TLS.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sandlot import errors
from sandlot.node.oci.reference import Reference

__all__ = ["MANIFEST_TYPES", "RegistryClient", "RegistryConfig", "is_loopback"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MAX_MANIFEST_BYTES = 4 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RegistryConfig:
    """How to reach one registry (`host[:port]`): credentials and whether it is plain HTTP."""

    username: str | None = None
    password: str | None = None
    #: plain HTTP; None: only on the loopback (see the module docstring)
    insecure: bool | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegistryConfig:
        insecure = d.get("insecure")
        return cls(
            username=d.get("username"),
            password=d.get("password"),
            insecure=None if insecure is None else bool(insecure),
        )

    def plain_http(self, registry: str) -> bool:
        return is_loopback(registry) if self.insecure is None else self.insecure


def is_loopback(registry: str) -> bool:
    """Whether `host[:port]` names this machine's loopback: localhost, 127.0.0.0/8 or [::1]."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") and registry.count(":") == 1 else registry
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ByteProgress = Callable[[int, int], None]


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


class RegistryClient:
    """One repository of one registry; reusable across requests, not thread-hostile (httpx.Client)."""

    def __init__(self, ref: Reference, config: RegistryConfig | None = None, *, timeout: float = 30.0) -> None:
        self.ref = ref
        self.config = config or RegistryConfig()
        self.plain_http = self.config.plain_http(ref.registry)
        scheme = "http" if self.plain_http else "https"
        self.base = f"{scheme}://{ref.registry}/v2/{ref.repository}"
        self._auth: str | None = None  # the Authorization header that worked
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, read=timeout), follow_redirects=True)

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ auth

    def _basic(self) -> str | None:
        c = self.config
        if c.username is None:
            return None
        raw = f"{c.username}:{c.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _login(self, challenge: str) -> None:
        scheme, params = _challenge(challenge)
        if scheme == "basic":
            basic = self._basic()
            if basic is None:
                raise errors.RegistryAuthError(
                    f"registry {self.ref.registry} wants a username and password for {self.ref.repository}; "
                    "configure them for this registry (or pass them with the pull)"
                )
            self._auth = basic
            return
        if scheme != "bearer" or "realm" not in params:
            raise errors.RegistryError(f"registry {self.ref.registry} asks for unsupported auth {challenge!r}")
        query = {"scope": params.get("scope") or f"repository:{self.ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        headers = {}
        if (basic := self._basic()) is not None:
            headers["Authorization"] = basic
        try:
            r = self._http.get(params["realm"], params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise errors.RegistryUnreachableError(
                f"token service {params['realm']} of registry {self.ref.registry}: {exc}"
            ) from None
        if r.status_code in (401, 403):
            raise errors.RegistryAuthError(
                f"registry {self.ref.registry} refused the credentials for {self.ref.repository} (token service)"
                if self.config.username
                else f"registry {self.ref.registry} wants credentials for {self.ref.repository} "
                "(its token service gives anonymous callers no token)"
            )
        if r.status_code != 200:
            raise errors.RegistryError(f"token service of {self.ref.registry} answered {r.status_code}")
        body = r.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            raise errors.RegistryError(f"token service of {self.ref.registry} returned no token")
        self._auth = f"Bearer {token}"

    def _send(
        self, method: str, url: str, headers: dict[str, str] | None = None, stream: bool = False
    ) -> httpx.Response:
        """A request with auth; a 401 triggers one login and one retry."""
        for attempt in (0, 1):
            h = dict(headers or {})
            if self._auth:
                h["Authorization"] = self._auth
            try:
                req = self._http.build_request(method, url, headers=h)
                r = self._http.send(req, stream=stream)
            except httpx.HTTPError as exc:
                hint = "" if self.plain_http else " (if it serves plain HTTP, configure it as insecure)"
                raise errors.RegistryUnreachableError(
                    f"cannot reach registry {self.ref.registry}: {exc or type(exc).__name__}{hint}"
                ) from None
            if r.status_code != 401:
                return r
            r.close()
            if attempt == 1 or "www-authenticate" not in r.headers:
                break
            self._login(r.headers["www-authenticate"])
        raise errors.RegistryAuthError(
            f"registry {self.ref.registry} refused the credentials for {self.ref.repository}"
            if self.config.username
            else f"registry {self.ref.registry} wants credentials for {self.ref.repository}"
        )

    # ------------------------------------------------------------ manifests

    def manifest(self, reference: str) -> tuple[str, bytes, str]:
        """(media type, raw bytes, digest) of a manifest or index; verified when asked by digest."""
        r = self._send("GET", f"{self.base}/manifests/{reference}", {"Accept": ", ".join(MANIFEST_TYPES)})
        if r.status_code == 404:
            raise errors.ImageNotFoundError(f"image {self.ref.registry}/{self.ref.repository}:{reference} not found")
        if r.status_code != 200:
            raise errors.RegistryError(
                f"registry {self.ref.registry} answered {r.status_code} for manifest {reference}: {r.text[:200]}"
            )
        raw = r.content
        if len(raw) > MAX_MANIFEST_BYTES:
            raise errors.ImageCorruptError(f"manifest {reference} is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise errors.ImageCorruptError(f"manifest {reference} does not match its digest (got {digest})")
        media = r.headers.get("content-type", "").split(";")[0].strip()
        if media not in MANIFEST_TYPES:
            media = str(json.loads(raw).get("mediaType") or media)
        if media not in MANIFEST_TYPES:
            raise errors.RegistryError(f"manifest {reference} has unsupported media type {media!r}")
        return media, raw, digest

    # ------------------------------------------------------------ blobs

    def blob_bytes(self, digest: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        r = self._send("GET", f"{self.base}/blobs/{digest}")
        if r.status_code == 404:
            raise errors.ImageNotFoundError(f"blob {digest} of {self.ref.repository} not found")
        if r.status_code != 200:
            raise errors.RegistryError(f"registry {self.ref.registry} answered {r.status_code} for blob {digest}")
        data = r.content[: limit + 1]
        if len(data) > limit or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise errors.ImageCorruptError(f"blob {digest} of {self.ref} does not match its digest")
        return data

    def download(self, digest: str, size: int, dest: Path, progress: ByteProgress | None = None) -> None:
        """Fetch a blob into `dest`, resuming `dest.partial`; verified before `dest` appears."""
        if dest.exists():
            return
        partial = dest.with_name(dest.name + ".partial")
        h = hashlib.sha256()
        have = 0
        if partial.exists():
            with open(partial, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    have += len(chunk)
            if have > size:
                partial.unlink()
                h, have = hashlib.sha256(), 0
        headers = {"Range": f"bytes={have}-"} if 0 < have < size else {}
        if have < size or size == 0:
            r = self._send("GET", f"{self.base}/blobs/{digest}", headers, stream=True)
            try:
                if r.status_code == 404:
                    raise errors.ImageNotFoundError(f"layer {digest} of {self.ref} not found in the registry")
                if r.status_code == 200 and have:  # the registry ignored the Range: start over
                    h, have = hashlib.sha256(), 0
                elif r.status_code not in (200, 206):
                    raise errors.RegistryError(
                        f"registry {self.ref.registry} answered {r.status_code} for layer {digest}"
                    )
                last = 0.0
                with open(partial, "ab" if have else "wb") as f:
                    for chunk in r.iter_bytes(_CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        have += len(chunk)
                        if have > size:
                            break
                        if progress and time.monotonic() - last > 0.5:
                            last = time.monotonic()
                            progress(have, size)
            except httpx.HTTPError as exc:
                raise errors.RegistryUnreachableError(
                    f"download of layer {digest} from {self.ref.registry} broke off at {have} bytes: {exc}; "
                    "pull again to resume"
                ) from None
            finally:
                r.close()
        if have != size or "sha256:" + h.hexdigest() != digest:
            partial.unlink(missing_ok=True)
            raise errors.ImageCorruptError(
                f"layer {digest} of {self.ref} does not match its digest or size ({have} of {size} bytes); "
                "it was discarded"
            )
        if progress:
            progress(have, size)
        os.rename(partial, dest)
