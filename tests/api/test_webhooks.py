"""Webhooks: a real HTTP receiver on 127.0.0.1 gets the team's events, signed, retried with backoff, logged."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from sandlot.api.webhooks import sign
from tests.api.crash import ok

pytestmark = pytest.mark.integration


class Receiver:
    """Answers `fail_first` 500s, then 200s; keeps (arrival time, headers, body) of each request."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.got: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append((time.time(), {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(receiver.got) <= receiver.fail_first else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def test_webhook_signed_retried_and_logged(team: httpx.Client, receiver: Receiver) -> None:
    hook = ok(team.post("/webhooks", json={"url": receiver.url, "events": ["killed"]}), 201)
    assert hook["webhook_id"].startswith("wh-") and hook["secret"] and hook["events"] == ["killed"]
    assert "secret" not in ok(team.get(f"/webhooks/{hook['webhook_id']}"))
    sid = ok(team.post("/sandboxes", json={}), 201)["sandbox_id"]
    ok(team.delete(f"/sandboxes/{sid}"), 204)

    # two 500s, then a 200: three attempts of the one `killed` event (`created` was not asked for)
    wait_until("three attempts", lambda: len(receiver.got) >= 3)
    times = [t for t, _, _ in receiver.got]
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 1.9  # backoff: 1 s, then 2 s
    for _, headers, body in receiver.got:
        event = json.loads(body)
        assert event["sandbox_id"] == sid and event["type"] == "killed" and event["detail"] == "killed by request"
        assert headers["x-sandlot-event"] == "killed"
        assert headers["x-sandlot-delivery"] == f"{hook['webhook_id']}:{event['event_id']}"
        t = int(headers["x-sandlot-signature"].split(",")[0][2:])
        assert headers["x-sandlot-signature"] == sign(hook["secret"], t, body)  # HMAC-SHA256 of "<t>.<body>"
        assert sign("another secret", t, body) != headers["x-sandlot-signature"]

    log = wait_until(
        "the delivery logged",
        lambda: (
            (d := ok(team.get(f"/webhooks/{hook['webhook_id']}/deliveries"))["deliveries"])
            and d[0]["status"] == "delivered"
            and d
        ),
    )
    assert len(log) == 1 and log[0]["attempts"] == 3 and log[0]["last_status_code"] == 200
    assert log[0]["type"] == "killed" and log[0]["next_attempt_at"] is None
    time.sleep(1.5)  # nothing more is sent once delivered
    assert len(receiver.got) == 3

    # the webhook is the team's: listed, and gone once deleted
    assert [w["webhook_id"] for w in ok(team.get("/webhooks"))["webhooks"]] == [hook["webhook_id"]]
    ok(team.delete(f"/webhooks/{hook['webhook_id']}"), 204)
    r = team.get(f"/webhooks/{hook['webhook_id']}/deliveries")
    assert r.status_code == 404, r.text
    r = team.post("/webhooks", json={"url": "ftp://example.com/x"})
    assert r.status_code == 422 and r.json()["field"] == "url", r.text
