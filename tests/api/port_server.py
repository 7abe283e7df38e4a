"""A small server run INSIDE a sandbox by the port tests (python3 only, no packages).

    python3 port_server.py PORT

GET /sse streams three server-sent events 0.7 s apart; GET /big?n=N streams N
bytes (chunked, 64 KiB at a time); POST /echo answers its body; /ws is a
WebSocket that answers every message with "echo: " + it (text) or the same
bytes reversed (binary); any other GET answers "hello <target>". Every answer
names the address the connection came from (X-Peer): 127.0.0.1 through the
agent's tunnel, the sandbox's gateway over the direct route.
"""

import asyncio
import base64
import hashlib
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def read_frame(reader):
    b1, b2 = await reader.readexactly(2)
    n = b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack(">Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if b2 & 0x80 else b"\0\0\0\0"
    data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
    return b1 & 0x0F, data


def frame(opcode, data):
    n = len(data)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + data


async def websocket(reader, writer, headers):
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    while True:
        opcode, data = await read_frame(reader)
        if opcode == 8:
            writer.write(frame(8, data[:2]))
            await writer.drain()
            return
        if opcode == 1:
            writer.write(frame(1, b"echo: " + data))
        elif opcode == 2:
            writer.write(frame(2, data[::-1]))
        elif opcode == 9:
            writer.write(frame(10, data))
        await writer.drain()


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            if headers.get("upgrade", "").lower() == "websocket":
                await websocket(reader, writer, headers)
                return
            body = b""
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    chunk = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    body += chunk[:-2]
            peer = writer.get_extra_info("peername")[0]
            if target.startswith("/big?n="):
                left = int(target.split("=", 1)[1])
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Peer: %s\r\n\r\n" % peer.encode())
                while left > 0:
                    n = min(left, 1 << 16)
                    writer.write(b"%x\r\n%s\r\n" % (n, b"b" * n))
                    await writer.drain()
                    left -= n
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                continue
            if target == "/dated":  # the headers a real server adds (http.server, nginx, ...)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nServer: in-sandbox/1.0\r\n"
                    b"Content-Length: 2\r\n\r\nok"
                )
                await writer.drain()
                continue
            if target == "/sse":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for i in range(3):
                    ev = f"data: event {i}\n\n".encode()
                    writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    await writer.drain()
                    await asyncio.sleep(0.7)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                continue
            out = body if method == "POST" else f"hello {target} host={headers.get('host', '')}".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Server: in-sandbox\r\nX-Peer: %s\r\n\r\n"
                % (len(out), peer.encode())
                + out
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
