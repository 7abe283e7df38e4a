"""Run inside the tests' "internet" namespace: HTTP on :80 and DNS on ADDR:53.

    python lab_server.py ADDR NAMES_FILE

HTTP answers every GET with `hello from <the address it was reached on>`;
port 9000 counts the bytes it receives until EOF and answers the count.
DNS answers A queries for the names in NAMES_FILE (JSON {name: address},
read again for every query, so a test can change an answer); NXDOMAIN for the rest.
Prints `ready` once both listen.
"""

from __future__ import annotations

import asyncio
import json
import sys

from dnslib import QTYPE, RCODE, RR, A, DNSRecord


class Dns(asyncio.DatagramProtocol):
    def __init__(self, names_file: str) -> None:
        self.names_file = names_file

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            q = DNSRecord.parse(data)
        except Exception:
            return
        reply = q.reply()
        name = str(q.q.qname).rstrip(".").lower()
        with open(self.names_file) as f:
            names = json.load(f)
        if name in names and q.q.qtype == QTYPE.A:
            reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(names[name]), ttl=5))
        elif name not in names:
            reply.header.rcode = RCODE.NXDOMAIN
        self.transport.sendto(reply.pack(), addr)


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            body = f"hello from {writer.get_extra_info('sockname')[0]}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Port 9000: count what arrives until EOF, answer the count."""
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
    writer.write(str(total).encode())
    await writer.drain()
    writer.close()


async def main() -> None:
    addr, names_file = sys.argv[1], sys.argv[2]
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: Dns(names_file), local_addr=(addr, 53))
    server = await asyncio.start_server(http, "0.0.0.0", 80)
    await asyncio.start_server(sink, "0.0.0.0", 9000)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
