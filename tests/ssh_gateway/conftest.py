"""SSH gateway tests run against the same live server as the API tests (it serves SSH too)."""

from tests.api.conftest import admin, api_server  # noqa: F401 - fixtures
