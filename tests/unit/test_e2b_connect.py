"""The Connect framing and error mapping of the E2B facade, without a server."""

from __future__ import annotations

import json
import struct

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
