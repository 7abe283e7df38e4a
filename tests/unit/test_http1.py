"""The port proxy's HTTP/1.1 client (api/http1.py) against scripted answers, and the path form's routing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sandlot.api import http1
from sandlot.api.host_routing import PREFIX_KEY, SCOPE_KEY, HostRoutes, HostRoutingMiddleware


class Scripted:
    """A pipe whose server answers with fixed pieces of bytes, then closes."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)
        self.sent = b""
        self.closed = False

    async def send(self, data: bytes) -> None:
        self.sent += data

    async def recv(self) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    async def close(self) -> None:
        self.closed = True

    @property
    def stale(self) -> bool:
        return self.closed


async def answer(pipe: Scripted, head_only: bool = False) -> tuple[http1.Exchange, bytes]:
    ex = http1.Exchange(pipe, head_only)
    await ex.start()
    return ex, b"".join([c async for c in ex.body()])


def test_a_chunked_answer_in_pieces_is_dechunked_and_keeps_the_connection() -> None:
    pipe = Scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhel", b"lo\r\n", b"0\r\n\r\n")
    ex, body = asyncio.run(answer(pipe))
    assert ex.status == 200 and (b"X-A", b"1") in ex.headers and body == b"hello" and ex.reusable


def test_informational_answers_are_skipped_and_close_ends_reuse() -> None:
    pipe = Scripted(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    ex, body = asyncio.run(answer(pipe))
    assert ex.status == 201 and body == b"ok" and not ex.reusable


def test_a_body_delimited_by_the_close_and_a_head_answer() -> None:
    ex, body = asyncio.run(answer(Scripted(b"HTTP/1.0 200 OK\r\n\r\nall of ", b"it")))
    assert body == b"all of it" and not ex.reusable
    ex, body = asyncio.run(answer(Scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"), head_only=True))
    assert ex.status == 200 and body == b"" and not ex.reusable


def test_a_server_that_closes_or_talks_nonsense_is_a_protocol_error() -> None:
    with pytest.raises(http1.ProtocolError, match="before it answered"):
        asyncio.run(answer(Scripted()))
    with pytest.raises(http1.ProtocolError, match="before it answered"):
        asyncio.run(answer(Scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")))
    with pytest.raises(http1.ProtocolError, match="malformed"):
        asyncio.run(answer(Scripted(b"NOT HTTP AT ALL\r\n\r\n")))


def test_the_path_form_goes_to_the_port_handler_with_its_prefix_stripped() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append({"app": scope["path"]})

    mw = HostRoutingMiddleware(app, HostRoutes("localhost", handler))
    for path in ("/sandboxes/sb-x/ports/8080/a/b", "/sandboxes/sb-x/ports/8080", "/sandboxes/sb-x/files"):
        asyncio.run(mw({"type": "http", "path": path, "headers": []}, None, None))  # type: ignore[arg-type]
    assert [(s.get(SCOPE_KEY), s.get("path"), s.get(PREFIX_KEY)) for s in seen[:2]] == [
        (("sb-x", 8080), "/a/b", "/sandboxes/sb-x/ports/8080/"),
        (("sb-x", 8080), "/", "/sandboxes/sb-x/ports/8080/"),
    ]
    assert seen[2] == {"app": "/sandboxes/sb-x/files"}
