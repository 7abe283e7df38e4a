"""A lean HTTP/1.1 client for the port proxy: one exchange at a time over any byte pipe.

The proxy forwards a request that uvicorn has already parsed; all it needs is
to write the request's head and body to the sandbox's server and to parse the
answer's head, passing the body on as it arrives. httptools (the C parser
uvicorn itself uses) parses the answer: chunked bodies come out decoded, and
what ends a body (length, chunks, close) is the parser's business. Measured on
the port proxy's bench row, this replaced httpcore+h11, whose pure-Python state
machine was the largest part of the proxy's own time per request.

A `Pipe` is where the bytes go: a TCP connection to the sandbox's own address,
or an agent tunnel (`port.connect`); see port_proxy.

Invariant: a Pipe is handed back for reuse (`Exchange.reusable`) only after a
complete answer that keeps the connection alive, with no bytes beyond it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

import httptools

__all__ = ["Exchange", "Pipe", "ProtocolError", "encode_head"]


class ProtocolError(Exception):
    """The sandbox's server broke the HTTP exchange (garbage, or it closed mid-answer)."""


class Pipe(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes:
        """The next bytes the server sent; b"" once it closed its side."""
        ...

    async def close(self) -> None: ...

    @property
    def stale(self) -> bool:
        """Known to be closed by the far end (so not worth reusing)."""
        ...


def encode_head(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1")]
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def send_body(pipe: Pipe, body: AsyncIterable[bytes]) -> None:
    """A body of unknown length, chunked."""
    async for chunk in body:
        if chunk:
            await pipe.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await pipe.send(b"0\r\n\r\n")


class Exchange:
    """The answer to one request on `pipe`: `await start()` for its head, then `body()`.

    `reusable` is true once the body was read to its end and the server keeps
    the connection open.
    """

    def __init__(self, pipe: Pipe, head_only: bool) -> None:
        self.pipe = pipe
        self.head_only = head_only  # a HEAD request: the answer has no body, whatever its headers say
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.reusable = False
        self.got_bytes = False
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._head_done = False
        self._complete = False
        self._keep_alive = False
        self._delimited = False  # the answer says where its body ends (a length, or chunks)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # informational (100 Continue): the real answer follows
            self.headers = []
            return
        self.status = status
        self._head_done = True
        self._keep_alive = self._parser.should_keep_alive()  # (the parser forgets it once the answer is over)
        self._delimited = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in self.headers)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._head_done:
            self._complete = True

    async def _feed(self) -> bool:
        data = await self.pipe.recv()
        if not data:
            if self._head_done and not self._complete and not self._delimited:
                self._complete = True  # a body that ends with the connection
                return False
            raise ProtocolError("the server closed the connection before it answered in full")
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            if not (self.head_only and self._head_done):
                raise ProtocolError(f"malformed answer: {exc}") from None
        return True

    @property
    def finished(self) -> bool:
        """The whole answer is in, and every chunk of its body was taken."""
        return self._complete and not self._chunks

    async def start(self) -> None:
        """Read until the answer's head is complete."""
        while not self._head_done:
            await self._feed()

    async def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives (already de-chunked): what one read brought, as one piece (every piece
        costs its relay a send)."""
        async for pieces in self.pieces():
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def pieces(self) -> AsyncIterator[list[bytes]]:
        """The body as it arrives: the pieces one read brought (a relay that writes them with `writelines`
        copies none of them)."""
        if self.head_only:
            self.reusable = False  # its parser may still wait for a body that will not come
            return
        keep = True
        while True:
            if self._chunks:
                chunks, self._chunks = self._chunks, []
                yield chunks
            if self._complete:
                break
            keep = await self._feed() and keep
        self.reusable = keep and self._keep_alive and not self._chunks
