"""The cgroup file readers the samplers share (node/cgroups.py): one `pread` of a kept descriptor."""

from __future__ import annotations

import os
from pathlib import Path

from sandlot.node import cgroups


def test_a_kept_descriptor_reads_what_the_file_holds_now(tmp_path: Path) -> None:
    f = tmp_path / "memory.usage_in_bytes"
    f.write_bytes(b"4096\n")
    fd = cgroups.open_file(f)
    try:
        assert cgroups.pread_int(fd) == 4096
        f.write_bytes(b"8192\n")  # rewritten in place (kernfs renders afresh at each read)
        assert cgroups.pread_int(fd) == 8192
        f.write_bytes(b"max\n")
        assert cgroups.pread_int(fd) is None
    finally:
        os.close(fd)


def test_a_missing_file_reads_as_absent(tmp_path: Path) -> None:
    fd = cgroups.open_file(tmp_path / "gone")
    assert fd == -1
    assert cgroups.pread(fd) == b""
    assert cgroups.pread_int(fd) is None


def test_fields_of_name_value_files() -> None:
    stat = b"cache 10\ntotal_cache 4096\ninactive_file 7\ntotal_inactive_file 99\n"
    assert cgroups.field(stat, b"total_cache") == 4096
    assert cgroups.field(stat, b"cache") == 10  # not the tail of total_cache
    assert cgroups.field(stat, b"inactive_file") == 7
    assert cgroups.field(stat, b"total_inactive_file") == 99
    assert cgroups.field(stat, b"missing") == 0
    assert cgroups.field(b"max 3", b"max") == 3  # pids.events, no trailing newline
    assert cgroups.field(b"max x\n", b"max") == 0
