"""The `e2b-code-interpreter` SDK against Sandlot: a real ipykernel in the code-interpreter template.

One sandbox (its default template, `code-interpreter-v1`) serves every test here.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from e2b_code_interpreter import Sandbox

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ci(e2b_env: dict[str, str]) -> Iterator[Sandbox]:
    s = Sandbox.create(timeout=900)  # the SDK's default template, code-interpreter-v1
    yield s
    s.kill()


def test_state_persists_and_last_expression_is_the_result(ci: Sandbox) -> None:
    ci.run_code("x = 40")
    ex = ci.run_code("x + 2")
    assert ex.error is None
    assert ex.text == "42"
    assert ex.results[0].is_main_result
    assert ex.execution_count is not None and ex.execution_count >= 2


def test_stdout_stderr_stream_through_callbacks(ci: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    code = "import sys\nprint('to out')\nprint('to err', file=sys.stderr)"
    ex = ci.run_code(code, on_stdout=lambda m: out.append(m.line), on_stderr=lambda m: err.append(m.line))
    assert "".join(out) == "to out\n" and "".join(err) == "to err\n"
    assert ex.logs.stdout == ["to out\n"] and ex.logs.stderr == ["to err\n"]


def test_error_has_name_value_traceback(ci: Sandbox) -> None:
    ex = ci.run_code("def f():\n    raise ValueError('bad value')\nf()")
    assert ex.error is not None
    assert ex.error.name == "ValueError"
    assert ex.error.value == "bad value"
    plain = re.sub(r"\x1b\[[0-9;]*m", "", ex.error.traceback)  # Jupyter colours tracebacks, as on E2B
    assert "----> 3 f()" in plain and "ValueError: bad value" in plain


def test_matplotlib_figure_is_png(ci: Sandbox) -> None:
    ex = ci.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.show()")
    assert ex.error is None, ex.error
    pngs = [r.png for r in ex.results if r.png]
    assert pngs, ex.results
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_contexts_have_own_state_and_cwd(ci: Sandbox) -> None:
    ci.files.make_dir("/tmp/ctxdir")
    ctx = ci.create_code_context(cwd="/tmp/ctxdir")
    assert ctx.cwd == "/tmp/ctxdir" and ctx.language == "python"
    ci.run_code("secret = 'mine'", context=ctx)
    assert ci.run_code("secret", context=ctx).text == "'mine'"
    assert ci.run_code("import os; os.getcwd()", context=ctx).text == "'/tmp/ctxdir'"
    default = ci.run_code("secret")
    assert default.error is not None and default.error.name == "NameError"


def test_bash(ci: Sandbox) -> None:
    ex = ci.run_code("GREETING=hello; cd /tmp; echo $GREETING from $(pwd)", language="bash")
    assert ex.logs.stdout == ["hello from /tmp\n"] or "".join(ex.logs.stdout) == "hello from /tmp\n"
    again = ci.run_code("echo $GREETING again", language="bash")
    assert "".join(again.logs.stdout) == "hello again\n"
    failed = ci.run_code("exit_with() { return 4; }; exit_with", language="bash")
    assert failed.error is not None and "4" in failed.error.value
