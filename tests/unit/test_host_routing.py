"""`HostRoutes.locate`: the one place both port paths (uvicorn's fast path and ASGI) learn where a request goes."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from sandlot.api.host_routing import HostRoutes, PortRoute

SID = "sb-0123456789abcdef"


async def _nothing(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


def _routes() -> HostRoutes:
    routes = HostRoutes("sandbox.example", _nothing)
    routes.mount(49983, "/e2b/envd")
    routes.add_finder(lambda h: (h["e2b-sandbox-id"], int(h["e2b-sandbox-port"])) if "e2b-sandbox-id" in h else None)
    return routes


def _never() -> Mapping[str, str]:
    raise AssertionError("the path form needs no headers")


def test_the_path_form_is_found_without_reading_headers() -> None:
    route = _routes().locate(f"/sandboxes/{SID}/ports/8080/a/b", _never)
    assert route == PortRoute(SID, 8080, f"/sandboxes/{SID}/ports/8080/", "/a/b", None)
    bare = _routes().locate(f"/sandboxes/{SID}/ports/8080", _never)
    assert bare is not None and bare.path == "/"


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ({"host": f"3000-{SID}.sandbox.example"}, (SID, 3000)),
        ({"host": f"3000-{SID}.SANDBOX.example:8443"}, (SID, 3000)),
        ({"host": "api.example", "e2b-sandbox-id": SID, "e2b-sandbox-port": "5000"}, (SID, 5000)),
        ({"host": f"3000-{SID}.elsewhere.example"}, None),
        ({"host": "sandbox.example"}, None),
    ],
)
def test_host_names_and_finders(headers: dict[str, str], want: tuple[str, int] | None) -> None:
    route = _routes().locate("/x?y", lambda: headers)
    if want is None:
        assert route is None
    else:
        assert route == PortRoute(*want, "/", "/x?y", None)


def test_the_api_paths_are_not_ports() -> None:
    assert _routes().locate("/sandboxes", lambda: {"host": "localhost"}) is None
    assert _routes().locate(f"/sandboxes/{SID}/ports", lambda: {}) is None


def test_a_mounted_port_is_served_by_the_apis_own_route() -> None:
    route = _routes().locate("/files", lambda: {"host": f"49983-{SID}.sandbox.example"})
    assert route is not None and route.mounted == f"/e2b/envd/{SID}/49983/files"
    assert route.raw_path(b"/files") == route.mounted.encode()


def test_raw_paths_keep_the_clients_escapes() -> None:
    routes = _routes()
    path_form = routes.locate(f"/sandboxes/{SID}/ports/80/a b", _never)
    assert path_form is not None
    assert path_form.raw_path(f"/sandboxes/{SID}/ports/80/a%20b".encode()) == b"/a%20b"
    # the prefix written with escapes: the unescaped path is passed on
    assert path_form.raw_path(f"/sandboxes/{SID}/ports/8%30/a%20b".encode()) == b"/a b"
    host = routes.locate("/caf\u00e9", lambda: {"host": f"80-{SID}.sandbox.example"})
    assert host is not None
    assert host.raw_path(b"/caf%C3%A9") == b"/caf%C3%A9"
    assert host.raw_path(b"") == "/caf\u00e9".encode()
