"""Fuzz the API from its own OpenAPI document: no input may cause a 5xx.

A dedicated server (at most 2 sandboxes) takes a bounded number of generated
requests per operation, with the admin key, so they pass auth and reach the
handlers. Path ids are random (so mostly not found) except for file and
process operations, which also run against one real sandbox when the real
agent runs it (never with the test stand-in, which runs commands on the host).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from tests.api.harness import Server, agent_available

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[Server]:
    from tests.api.conftest import need_root

    need_root()
    d = Path(tempfile.mkdtemp(prefix="sandlot-fuzz-", dir="/var/tmp"))
    server = Server(d / "data", max_sandboxes=2).start()
    yield server
    server.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def real_sandbox(fuzz_server: Server) -> str | None:
    if not agent_available():
        return None
    r = httpx.post(fuzz_server.url + "/sandboxes", json={"timeout": 600}, headers={"X-API-Key": fuzz_server.admin_key})
    assert r.status_code == 201, r.text
    return str(r.json()["sandbox_id"])


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server) -> Any:
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


# Tar uploads are raw bytes, like application/octet-stream.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")

schema = schemathesis.pytest.from_fixture("api_schema")

# Streams that only end when the client leaves: fuzzed with random ids only.
_ENDLESS = ("/files/watch", "/output", "/commands")


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any, fuzz_server: Server, real_sandbox: str | None) -> None:
    path = case.operation.path
    if path == "/events/stream":  # valid filters open a stream that never ends; tests/api/test_events.py has it
        return
    if (
        real_sandbox
        and "sandbox_id" in (case.path_parameters or {})
        and path.startswith("/sandboxes/{sandbox_id}/")
        and not path.endswith(_ENDLESS)
        and random.random() < 0.5
    ):
        case.path_parameters["sandbox_id"] = real_sandbox
    response = case.call(base_url=fuzz_server.url, headers={"X-API-Key": fuzz_server.admin_key}, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
