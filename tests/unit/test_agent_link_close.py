"""Closing the node's end of an agent link and waiting for the agent's (before a memory save)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from sandlot.agent import protocol as p
from sandlot.agent.client import AgentConnection


async def _connected(tmp_path: Path) -> tuple[AgentConnection, socket.socket]:
    conn = AgentConnection(str(tmp_path / "agent.sock"), "sb-test")
    await conn.listen()
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.setblocking(False)
    await asyncio.get_running_loop().sock_connect(agent, conn.socket_path)
    hello = {"type": "hello", "version": p.PROTOCOL_VERSION, "agent_pid": 1, "started_at_ms": 0}
    await asyncio.get_running_loop().sock_sendall(agent, p.encode_frame(0, p.FrameKind.EVENT, hello))
    await conn.wait_connected(5)
    return conn, agent


def test_close_waits_for_the_agent_to_close_its_end(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bytes]:
        conn, agent = await _connected(tmp_path)
        loop = asyncio.get_running_loop()

        async def agent_side() -> bytes:  # as the agent does: read to the end of input, then close
            got = await loop.sock_recv(agent, 100)
            await asyncio.sleep(0.2)
            agent.close()
            return got

        side = asyncio.ensure_future(agent_side())
        t0 = time.monotonic()
        closed = await conn.close(wait_agent_s=5)
        assert 0.15 < time.monotonic() - t0 < 4, "close must wait for the agent's end, and no longer"
        return closed, await side

    closed, got = asyncio.run(scenario())
    assert closed and got == b""
    assert not (tmp_path / "agent.sock").exists()


def test_close_gives_up_on_an_agent_that_keeps_its_end_open(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, float]:
        conn, agent = await _connected(tmp_path)
        t0 = time.monotonic()
        closed = await conn.close(wait_agent_s=0.3)
        took = time.monotonic() - t0
        agent.close()
        return closed, took

    closed, took = asyncio.run(scenario())
    assert not closed and 0.25 < took < 3
