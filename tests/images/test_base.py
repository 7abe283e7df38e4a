"""The `base` template holds what agents expect: Python 3 with pip and venv, git, curl, a C toolchain."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.timeout(900)


def test_base_has_the_tools_agents_expect(debian_image: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("base", limits=None)
    script = (
        "set -e; cd /tmp; python3 -m venv v; v/bin/pip --version; git --version; curl --version | head -1;"
        "printf '#include <stdio.h>\\nint main(void){puts(\"compiled\");return 0;}' > c.c; gcc -o c c.c; ./c;"
        "git init -q r && git -C r config user.email a@b && git -C r config user.name a && "
        "git -C r commit -q --allow-empty -m x && git -C r log --oneline | wc -l"
    )
    res = aio(sbx.run(["/bin/sh", "-c", script], timeout=120))
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    assert "pip " in out and "git version" in out and "curl " in out and "compiled\n1\n" in out
