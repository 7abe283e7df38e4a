"""The Connect framing and error mapping of the E2B facade, without a server."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

from sandlot import errors
from sandlot.api.e2b.connect import END_STREAM, STATUS_OF_CODE, connect_code, envelope


def test_envelope_is_flag_length_json() -> None:
    data = envelope({"event": {"start": {"pid": 7}}})
    flags, length = struct.unpack(">BI", data[:5])
    assert flags == 0 and length == len(data) - 5
    assert json.loads(data[5:]) == {"event": {"start": {"pid": 7}}}
    assert envelope({}, END_STREAM)[0] == END_STREAM


def test_sandlot_errors_map_to_the_connect_codes_the_sdk_branches_on() -> None:
    assert connect_code(errors.SandboxNotFoundError("x")) == "not_found"
    assert connect_code(errors.ProcessNotFoundError("x")) == "not_found"
    assert connect_code(errors.FileExistsError_("x")) == "already_exists"
    assert connect_code(errors.InvalidArgumentError("x")) == "invalid_argument"
    assert connect_code(errors.AuthenticationError("x")) == "unauthenticated"
    assert connect_code(errors.TimeoutError_("x")) == "deadline_exceeded"
    assert all(400 <= status < 600 for status in STATUS_OF_CODE.values())


def test_a_quiet_stream_gets_keepalives_and_a_closed_one_ends_its_source() -> None:
    from sandlot.api.e2b.connect import with_keepalive

    cleaned: list[str] = []

    async def slow() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"n": 1}
            await asyncio.sleep(0.35)
            yield {"n": 2}
            await asyncio.sleep(10)
            yield {"n": 3}
        finally:
            cleaned.append("done")

    async def scenario() -> list[dict[str, Any]]:
        got = []
        gen = with_keepalive(slow(), 0.1, {"ping": True})
        async for msg in gen:
            got.append(msg)
            if msg == {"n": 2}:
                break
        await gen.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        return got

    got = asyncio.run(scenario())
    assert got[0] == {"n": 1} and got[-1] == {"n": 2}
    assert 2 <= got.count({"ping": True}) <= 4
    assert cleaned == ["done"]
