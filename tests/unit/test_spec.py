from __future__ import annotations

import pytest

from sandlot import errors
from sandlot.node.spec import SANDBOX_ID_RE, Limits, SandboxSpec, new_sandbox_id


def test_ids_have_one_length_so_none_prefixes_another() -> None:
    ids = {new_sandbox_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(SANDBOX_ID_RE.match(i) for i in ids)
    assert len({len(i) for i in ids}) == 1


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (Limits(cpu=0), "cpu"),
        (Limits(memory_mb=1), "memory_mb"),
        (Limits(pids=1), "pids"),
        (Limits(disk_mb=0), "disk_mb"),
    ],
)
def test_bad_limits_name_their_field(limits: Limits, field: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match=field) as info:
        limits.validate()
    assert info.value.field == field


def test_bad_spec_fields() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="network"):
        SandboxSpec(network="open").validate()
    with pytest.raises(errors.InvalidArgumentError, match="environment"):
        SandboxSpec(env={"A=B": "x"}).validate()
