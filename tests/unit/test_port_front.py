"""The port proxy's fast path is on with the installed uvicorn, and off (not broken) with one it does not fit."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn
from uvicorn.server import ServerState

from sandlot.api import port_front
from sandlot.api.app import create_app
from sandlot.api.config import ApiConfig
from sandlot.api.port_front import PortHttpProtocol, uvicorn_fits


def test_the_api_is_served_with_the_fast_path_on(tmp_path: Path) -> None:
    app = create_app(ApiConfig(data_dir=tmp_path / "api"))
    assert app.uvicorn_protocol is PortHttpProtocol
    config = uvicorn.Config(app, http=app.uvicorn_protocol, log_level="warning")
    loop = asyncio.new_event_loop()  # (uvicorn's protocol takes the running loop's; none runs here)
    try:
        protocol = PortHttpProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()
    assert protocol._app is app, "this uvicorn's protocol has every part the fast path uses"


def test_a_uvicorn_without_a_part_turns_the_fast_path_off(caplog: pytest.LogCaptureFixture) -> None:
    port_front._warned = False
    parts = dict.fromkeys(port_front._UVICORN_PARTS)
    assert uvicorn_fits(SimpleNamespace(**parts))  # type: ignore[arg-type]
    del parts["pipeline"]
    with caplog.at_level(logging.WARNING, logger="sandlot.api.ports"):
        assert not uvicorn_fits(SimpleNamespace(**parts))  # type: ignore[arg-type]
        assert not uvicorn_fits(SimpleNamespace(**parts))  # type: ignore[arg-type]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["uvicorn's protocol lacks pipeline: the port proxy's fast path is off"], "warned once"
