"""HTTP to the API: one client per sandbox handle, errors mapped through one table.

Error bodies are `{"code", "message", "field"}`; `code` becomes the matching
exception of `sandlot.errors` through `error_from_code` (ERROR_CODES), the only
mapping there is. Connection failures are retried (nothing reached the server
yet); nothing else is.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from sandlot import errors
from sandlot.paths import default_data_dir

__all__ = ["DEFAULT_API_URL", "Transport", "default_api_key", "iter_events", "raise_for_error"]

DEFAULT_API_URL = "http://127.0.0.1:7770"
#: the HTTP timeout of one request (not of a command, which has its own `timeout`)
DEFAULT_REQUEST_TIMEOUT = 60.0


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The trusted certificates every client of this process shares. A client given none loads
    them itself: ~20 ms (far more on a busy host) on each sandbox handle, i.e. on every create."""
    return httpx.create_ssl_context()


def default_api_key() -> str | None:
    """$SANDLOT_API_KEY, else the admin key a local server wrote to its data dir (when readable)."""
    key = os.environ.get("SANDLOT_API_KEY")
    if key:
        return key
    try:
        return (default_data_dir() / "admin.key").read_text().strip() or None
    except OSError:
        return None


def error_from_response(status: int, body: bytes) -> errors.SandlotError:
    try:
        data = json.loads(body)
        code, message = str(data["code"]), str(data["message"])
        field = data.get("field")
    except (ValueError, KeyError, TypeError):
        text = body[:500].decode(errors="replace").strip()
        return errors.InternalError(f"the API answered HTTP {status}: {text or '(no body)'}")
    exc = errors.error_from_code(code, message)
    exc.field = field if isinstance(field, str) else None
    return exc


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        exc = error_from_response(response.status_code, response.content)
        if isinstance(exc, errors.ServerBusyError):
            with contextlib.suppress(ValueError):
                exc.retry_after = max(1, int(response.headers.get("Retry-After", "1")))
        raise exc


class Transport:
    def __init__(self, api_url: str | None, api_key: str | None, request_timeout: float | None) -> None:
        self.api_url = (api_url or os.environ.get("SANDLOT_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.api_key = api_key or default_api_key()
        self.headers = {"X-API-Key": self.api_key} if self.api_key else {}
        self.timeout = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else request_timeout
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        # streams opened after close() each get a client of their own, closed with the stream
        self._one_shot: dict[int, httpx.AsyncClient] = {}

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url,
            headers=self.headers,
            timeout=httpx.Timeout(self.timeout, connect=10.0),
            transport=httpx.AsyncHTTPTransport(verify=_tls_context(), retries=2),  # retries: connect failures only
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled HTTP client, made on first use (and again for a stream after `close`)."""
        if self._client is None or self._client.is_closed:
            self._client = self._new_client()
        return self._client

    async def close(self) -> None:
        """Close pooled connections; later plain requests (e.g. get_info after kill) use one-shot clients."""
        self._closed = True
        if self._client is not None:
            await self._client.aclose()

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            if self._closed:
                async with self._new_client() as once:
                    response = await once.request(method, path, **kw)
            else:
                response = await self.client.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise errors.TimeoutError_(f"{method} {path}: the API did not answer in time ({exc})") from None
        except httpx.TransportError as exc:
            raise errors.InternalError(f"cannot reach the Sandlot API at {self.api_url}: {exc}") from None
        raise_for_error(response)
        return response

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self.request(method, path, **kw)).json()

    async def open_stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send a request whose response streams; return once its status (checked) arrived.

        The caller must `close_stream()` the response.
        """
        client = self._new_client() if self._closed else self.client
        kw.setdefault("timeout", httpx.Timeout(10.0, read=None, write=None, pool=None))
        try:
            response = await client.send(client.build_request(method, path, **kw), stream=True)
        except httpx.TimeoutException as exc:
            await self._discard(client)
            raise errors.TimeoutError_(f"{method} {path}: the API did not answer in time ({exc})") from None
        except httpx.TransportError as exc:
            await self._discard(client)
            raise errors.InternalError(f"cannot reach the Sandlot API at {self.api_url}: {exc}") from None
        if client is not self._client:
            self._one_shot[id(response)] = client
        if response.status_code >= 400:
            body = await response.aread()
            await self.close_stream(response)
            raise error_from_response(response.status_code, body)
        return response

    async def close_stream(self, response: httpx.Response) -> None:
        await response.aclose()
        client = self._one_shot.pop(id(response), None)
        if client is not None:
            await client.aclose()

    async def _discard(self, client: httpx.AsyncClient) -> None:
        if client is not self._client:
            await client.aclose()

    async def stream(self, method: str, path: str, **kw: Any) -> AsyncIterator[bytes]:
        """The body of a streamed response, chunk by chunk (no read timeout: streams can idle)."""
        response = await self.open_stream(method, path, **kw)
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise errors.InternalError(f"the stream from {self.api_url}{path} broke: {exc}") from None
        finally:
            await self.close_stream(response)

    async def lines(self, method: str, path: str, **kw: Any) -> AsyncIterator[dict[str, Any]]:
        """NDJSON events of a streamed response; an `error` event raises its exception."""
        response = await self.open_stream(method, path, **kw)
        try:
            async for event in iter_events(response):
                yield event
        finally:
            await self.close_stream(response)

    def ws_url(self, path: str) -> str:
        base = self.api_url
        if base.startswith("https://"):
            return "wss://" + base[len("https://") :] + path
        return "ws://" + base.removeprefix("http://") + path


async def iter_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse NDJSON lines from an open streamed response."""
    buf = b""
    try:
        async for chunk in response.aiter_bytes():
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for line in complete:
                if line.strip():
                    yield _event(line)
    except httpx.TransportError as exc:
        raise errors.InternalError(f"the stream from {response.url} broke: {exc}") from None
    if buf.strip():
        yield _event(buf)


def _event(line: bytes) -> dict[str, Any]:
    event = json.loads(line)
    if not isinstance(event, dict):
        raise errors.InternalError("the API sent a malformed stream event")
    if event.get("type") == "error":
        raise errors.error_from_code(str(event.get("code", "internal")), str(event.get("message", "")))
    return event
