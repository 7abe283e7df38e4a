"""The port proxy's WebSocket frames: what it sends parses back, whatever size and however split."""

from __future__ import annotations

import os

import pytest

from sandlot.api.ws_relay import BINARY, CLOSE, TEXT, Frames, encode


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_frames_round_trip_across_length_forms_and_any_split(size: int) -> None:
    data = os.urandom(size)
    raw = encode(BINARY, data) + encode(TEXT, b"next")
    assert raw[1] & 0x80, "a client's frames are masked"
    frames = Frames()
    got = []
    for i in range(0, len(raw), 4093):  # arrives in pieces that cut headers and payloads anywhere
        frames.feed(raw[i : i + 4093])
        while (frame := frames.next()) is not None:
            got.append(frame)
    assert got == [(BINARY, True, data), (TEXT, True, b"next")]


def test_unmasked_server_frames_fragments_and_a_close() -> None:
    server = bytes([0x01, 3]) + b"abc" + bytes([0x80, 2]) + b"de" + bytes([0x88, 2]) + (1001).to_bytes(2, "big")
    frames = Frames(server)
    assert [frames.next(), frames.next(), frames.next(), frames.next()] == [
        (TEXT, False, b"abc"),
        (0, True, b"de"),
        (CLOSE, True, (1001).to_bytes(2, "big")),
        None,
    ]


def test_a_frame_with_an_rsv_bit_is_refused() -> None:
    with pytest.raises(ValueError, match="RSV"):
        Frames(bytes([0xC1, 1]) + b"x").next()  # RSV1: compressed, and no extension was agreed
