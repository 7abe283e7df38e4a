"""Fast checks of the lifecycle's pure parts: spec round trips, volume paths, lifetimes, CLI parsing."""

from __future__ import annotations

import pytest

from sandlot import errors
from sandlot.api.lifecycle import check_lifetime
from sandlot.api.service import Quotas
from sandlot.cli.volume import parse_mount
from sandlot.node.checkpoints import spec_from_dict, spec_to_dict, validate_name
from sandlot.node.spec import Limits, SandboxSpec
from sandlot.node.volumes import VolumeMount
from sandlot.sdk import VolumeMount as MountRequest


def test_spec_round_trips_through_a_checkpoint_record() -> None:
    spec = SandboxSpec(
        image="debian",
        runtime="container",
        limits=Limits(cpu=0.5, memory_mb=256, disk_mb=64),
        env={"A": "1"},
        volumes=[VolumeMount("vol-0123456789abcdef", "/data", read_only=True)],
    )
    d = spec_to_dict(spec)
    d["field_of_a_newer_version"] = 1  # ignored, not an error
    assert spec_from_dict(d) == spec


@pytest.mark.parametrize("path", ["relative", "/a/../b", "/a/", "/proc", "/proc/x", "/dev/x", "/", "/.sandlot/run"])
def test_bad_volume_paths_are_refused(path: str) -> None:
    with pytest.raises(errors.InvalidArgumentError) as info:
        VolumeMount("vol-0123456789abcdef", path).validate()
    assert info.value.field == "volumes"


def test_good_volume_path() -> None:
    assert VolumeMount("vol-0123456789abcdef", "/home/user/data").validate().path == "/home/user/data"


@pytest.mark.parametrize("name", ["", "../x", "-x", "a" * 65, "a/b"])
def test_bad_checkpoint_names(name: str) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        validate_name(name)


def test_lifetime_limits() -> None:
    check_lifetime(100, "t", 1000.0, 1100.0, persistent=False)
    with pytest.raises(errors.InvalidArgumentError, match="at most 100 s") as info:
        check_lifetime(100, "t", 1000.0, 1101.0, persistent=False)
    assert info.value.field == "timeout"
    check_lifetime(1000, "long", 1000.0, 1900.0, persistent=False)
    check_lifetime(100, "t", 1000.0, 99999.0, persistent=True)  # persistent sandboxes have no timeout
    check_lifetime(0, "t", 0.0, 1e12, persistent=False)  # 0: no limit
    # The server's defaults, as every team without limits of its own gets them.
    assert Quotas(max_lifetime_s=100).defaults().max_lifetime_s == 100
    assert Quotas().defaults().max_lifetime_s == 0 and Quotas().defaults().checkpoint_retention_s == 7 * 24 * 3600


def test_volume_option_parsing() -> None:
    assert parse_mount("v:/data") == MountRequest(name="v", path="/data", read_only=False)
    assert parse_mount("v:/data:ro") == MountRequest(name="v", path="/data", read_only=True)
    for bad in ("v", "v:data", ":/d", "v:/d:rx"):
        with pytest.raises(errors.InvalidArgumentError, match="NAME:/path"):
            parse_mount(bad)
