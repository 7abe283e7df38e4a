from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sandlot.agent import protocol as p

ROOT = Path(__file__).resolve().parents[2]


def test_frames_round_trip_when_fed_byte_by_byte() -> None:
    frames = [
        p.encode_frame(1, p.FrameKind.OPEN, {"method": "ping", "params": {}}),
        p.encode_frame(7, p.FrameKind.DATA, {"fd": 2}, b"\x00\xffbinary"),
        p.encode_frame(7, p.FrameKind.END, {"ok": True, "result": {"x": 1}}),
    ]
    dec = p.FrameDecoder()
    got: list[p.Frame] = []
    for b in b"".join(frames):
        got += dec.feed(bytes([b]))
    assert [(f.stream, f.kind, f.header, f.payload) for f in got] == [
        (1, p.FrameKind.OPEN, {"method": "ping", "params": {}}, b""),
        (7, p.FrameKind.DATA, {"fd": 2}, b"\x00\xffbinary"),
        (7, p.FrameKind.END, {"ok": True, "result": {"x": 1}}, b""),
    ]


def test_large_frames_round_trip_in_uneven_pieces() -> None:
    import random

    payloads = [bytes([i]) * n for i, n in enumerate([0, 1, 3 << 20, 70000, p.MAX_FRAME - 64, 5])]
    raw = b"".join(p.encode_frame(i + 1, p.FrameKind.DATA, {"fd": 0}, x) for i, x in enumerate(payloads))
    rng = random.Random(7)
    dec = p.FrameDecoder()
    got: list[p.Frame] = []
    pos = 0
    while pos < len(raw):
        n = rng.choice([1, 13, 4096, 262144, 1 << 20, 5 << 20])
        got += dec.feed(raw[pos : pos + n])
        pos += n
    assert [(f.stream, f.header, f.payload) for f in got] == [(i + 1, {"fd": 0}, x) for i, x in enumerate(payloads)]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x00\x01x",  # shorter than a frame header
        b"\xff\xff\xff\xff",  # longer than MAX_FRAME
        p.encode_frame(1, p.FrameKind.OPEN, {})[:8] + b"\x09" + p.encode_frame(1, p.FrameKind.OPEN, {})[9:],
        b"\x00\x00\x00\x0c\x00\x00\x00\x01\x02\x00\x00\x00\x03[1]",  # header not an object
    ],
)
def test_bad_frames_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.FrameDecoder().feed(raw)


def test_oversized_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        p.encode_frame(1, p.FrameKind.DATA, {}, b"x" * p.MAX_FRAME)


def test_untrusted_agent_data_is_validated() -> None:
    exit_ = p.ProcessExit.model_validate({"pid": 3, "exit_code": 0, "surprise": "ignored"})
    assert exit_.pid == 3
    with pytest.raises(ValueError):
        p.ProcessExit.model_validate({"pid": "not a number"})


@pytest.mark.skipif(shutil.which("gofmt") is None, reason="the Go toolchain (golang-go) is not installed")
def test_generated_go_protocol_is_current() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_agent_protocol.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
