"""The microVM control channel's client: a lost request is asked again, a reply left over from
an earlier request is passed over, an error names what failed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sandlot import errors
from sandlot.node.microvm import channels


async def _guest(sock: Path, replies: list[list[str]]) -> asyncio.AbstractServer:
    """A stand-in for QEMU's end of the control port: connection i answers with replies[i]
    (nothing at all for an empty list: the request was lost)."""
    calls = iter(replies)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        for line in next(calls, []):
            writer.write(line.encode() + b"\n")
        await writer.drain()
        await reader.read()  # until the client hangs up
        writer.close()

    return await asyncio.start_unix_server(serve, path=str(sock))


def _run(tmp_path: Path, replies: list[list[str]], request: str) -> None:
    async def main() -> None:
        server = await _guest(tmp_path / "ctl.sock", replies)
        try:
            await channels.guest_request(tmp_path / "ctl.sock", request, timeout=5)
        finally:
            server.close()

    asyncio.run(main())


def test_a_lost_request_is_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "GUEST_REQUEST_FIRST_TRY_S", 0.2)
    _run(tmp_path, [[], ["ok thaw"]], "thaw")


def test_a_reply_to_an_earlier_request_is_passed_over(tmp_path: Path) -> None:
    _run(tmp_path, [["ok thaw", "ok freeze"]], "freeze")
    _run(tmp_path, [["ok"]], "freeze")  # an agent from before replies named their request


def test_an_error_names_the_request(tmp_path: Path) -> None:
    with pytest.raises(errors.InternalError, match="could not freeze its disk: freeze: device busy"):
        _run(tmp_path, [["error freeze: device busy"]], "freeze")


def test_no_answer_at_all_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "GUEST_REQUEST_FIRST_TRY_S", 0.5)
    with pytest.raises(errors.InternalError, match="did not answer 'thaw' within 5s"):
        _run(tmp_path, [[]] * 10, "thaw")
