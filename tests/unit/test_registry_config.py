"""Which registries get plain HTTP: the configured `insecure` ones, and the loopback by default."""

from __future__ import annotations

import pytest

from sandlot.node.oci.reference import Reference
from sandlot.node.oci.registry import RegistryClient, RegistryConfig, is_loopback


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("LOCALHOST:5000", True),
        ("registry.localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("10.0.0.1:5000", False),
        ("[::2]:5000", False),
        ("ghcr.io", False),
        ("localhost.example.com:5000", False),
        ("notlocalhost:5000", False),
    ],
)
def test_loopback_names(registry: str, loopback: bool) -> None:
    assert is_loopback(registry) is loopback


def test_scheme_follows_the_config_then_the_loopback() -> None:
    def base(ref: str, config: RegistryConfig | None = None) -> str:
        client = RegistryClient(Reference.parse(ref), config)
        client.close()
        return client.base

    assert base("127.0.0.1:5000/t/app:1").startswith("http://127.0.0.1:5000/")
    assert base("[::1]:5000/t/app:1").startswith("http://[::1]:5000/")
    assert base("localhost:5000/t/app:1").startswith("http://")
    assert base("localhost:5000/t/app:1", RegistryConfig(insecure=False)).startswith("https://")
    assert base("ghcr.io/t/app:1").startswith("https://")
    assert base("10.1.2.3:5000/t/app:1", RegistryConfig(insecure=True)).startswith("http://")
    # A registries.json entry without `insecure` leaves the default; an explicit one wins.
    assert RegistryConfig.from_dict({"username": "u"}).insecure is None
    assert RegistryConfig.from_dict({"insecure": False}).insecure is False
