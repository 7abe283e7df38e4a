"""JS E2B tests share the Python E2B tests' server, key and environment (what `sandlot e2b-env` prints)."""

from tests.api.conftest import admin, api_server  # noqa: F401 - fixtures
from tests.e2b_compat.conftest import e2b_env, e2b_key, pytest_collection_modifyitems  # noqa: F401 - fixtures, hook
