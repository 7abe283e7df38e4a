"""The `e2b-code-interpreter` SDK against Sandlot: a real ipykernel in the code-interpreter template.

One sandbox (its default template, `code-interpreter-v1`) serves every test here.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from e2b.exceptions import TimeoutException
from e2b_code_interpreter import Sandbox

import sandlot
import sandlot.errors
from sandlot.node.images import ImageStore
from tests.api.harness import IMAGE_CACHE

# The first test here may build the code-interpreter image (debootstrap + apt: minutes, once per cache).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def ci(e2b_env: dict[str, str]) -> Iterator[Sandbox]:
    # Built here, not inside Sandbox.create, whose HTTP request would time out first.
    ImageStore(IMAGE_CACHE).ensure("code-interpreter")
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


def test_timeout_interrupts_the_kernel(ci: Sandbox) -> None:
    ci.run_code("kept = 'still here'")
    with pytest.raises(TimeoutException):
        ci.run_code("import time\nfor i in range(600): time.sleep(0.1)", timeout=2)
    # The abandoned execution was interrupted: the kernel answers at once, its state intact.
    after = ci.run_code("kept", timeout=20)
    assert after.text == "'still here'"


def test_context_management_and_envs(ci: Sandbox) -> None:
    ctx = ci.create_code_context()
    assert ctx.id in [c.id for c in ci.list_code_contexts()]
    ci.run_code("n = 1", context=ctx)
    ci.restart_code_context(ctx)
    assert ci.run_code("n", context=ctx).error.name == "NameError"  # type: ignore[union-attr]
    assert ci.run_code("import os; os.environ['GREETING']", context=ctx, envs={"GREETING": "hi"}).text == "'hi'"
    # envs hold for that execution only (E2B's interpreter): none is left for the next one
    assert ci.run_code("os.environ.get('GREETING', 'gone')", context=ctx).text == "'gone'"
    ci.run_code("os.environ['KEPT'] = 'mine'", context=ctx)
    assert ci.run_code("os.environ['KEPT']", context=ctx, envs={"KEPT": "theirs"}).text == "'theirs'"
    assert ci.run_code("os.environ['KEPT']", context=ctx).text == "'mine'"  # the code's own value comes back
    ci.remove_code_context(ctx)
    sh = ci.create_code_context(language="bash")
    ci.run_code("export KEPT=mine", context=sh)
    assert ci.run_code("echo $GREETING $KEPT", context=sh, envs={"GREETING": "hi", "KEPT": "theirs"}).logs.stdout == [
        "hi theirs\n"
    ]
    assert ci.run_code('echo "${GREETING-gone}" $KEPT', context=sh).logs.stdout == ["gone mine\n"]
    ci.remove_code_context(sh)
    assert ctx.id not in [c.id for c in ci.list_code_contexts()]


def test_a_dead_kernel_is_reported_and_restarted(ci: Sandbox) -> None:
    ctx = ci.create_code_context()
    pid = ci.run_code("import os; os.getpid()", context=ctx).text
    ci.commands.run(f"kill -9 {pid}", user="root")
    died = ci.run_code("1", context=ctx, timeout=60)
    assert died.error is not None and died.error.name == "KernelDied"
    assert ci.run_code("2 + 2", context=ctx, timeout=60).text == "4"
    ci.remove_code_context(ctx)


def test_bash(ci: Sandbox) -> None:
    ex = ci.run_code("GREETING=hello; cd /tmp; echo $GREETING from $(pwd)", language="bash")
    assert ex.logs.stdout == ["hello from /tmp\n"] or "".join(ex.logs.stdout) == "hello from /tmp\n"
    again = ci.run_code("echo $GREETING again", language="bash")
    assert "".join(again.logs.stdout) == "hello again\n"
    failed = ci.run_code("exit_with() { return 4; }; exit_with", language="bash")
    assert failed.error is not None and "4" in failed.error.value


# ---------------------------------------------------------------- the same interpreter from Sandlot's SDK


@pytest.fixture(scope="module")
def own(ci: Sandbox, e2b_env: dict[str, str], e2b_key: str) -> Iterator[sandlot.Sandbox]:
    """Sandlot's own SDK, attached to the same sandbox (and so the same kernels)."""
    s = sandlot.Sandbox.connect(ci.sandbox_id, api_url=e2b_env["E2B_SANDBOX_URL"], api_key=e2b_key)
    yield s
    s.close()


def test_sandlot_sdk_run_code(own: sandlot.Sandbox) -> None:
    own.run_code("y = 6 * 7")
    out: list[str] = []
    ex = own.run_code("print('y is', y)\ny", on_stdout=out.append)
    assert ex.text == "42" and ex.stdout == ["y is 42\n"] and out == ["y is 42\n"]
    err = own.run_code("1 / 0")
    assert err.error is not None and err.error.name == "ZeroDivisionError"
    fig = own.run_code("import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4])\nplt.show()")
    assert any(r.png and base64.b64decode(r.png).startswith(b"\x89PNG") for r in fig.results)
    assert own.run_code("echo $((2 + 3))", language="bash").stdout == ["5\n"]


def test_sandlot_sdk_contexts_and_errors(own: sandlot.Sandbox) -> None:
    ctx = own.create_code_context(cwd="/tmp")
    assert ctx.cwd == "/tmp"
    own.run_code("z = 'ctx'", context=ctx)
    assert own.run_code("z", context=ctx).text == "'ctx'"
    assert own.run_code("import os; os.getcwd()", context=ctx).text == "'/tmp'"
    with pytest.raises(sandlot.errors.NotFoundError):
        own.run_code("1", context="no-such-context")
    with pytest.raises(sandlot.errors.InvalidArgumentError):
        own.run_code("1", language="cobol")
