"""The dashboard in a real browser (headless chromium) against the live server and real sandboxes:
sign in, create a sandbox, use its terminal, upload a file, watch its CPU chart, kill it.

`SANDLOT_UI_SCREENSHOTS=docs` also saves the pages it passes as docs/dashboard-*.png (the README's).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.api.harness import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T = TypeVar("T")
#: generous: a loaded 2-core host runs the whole suite beside this test
WAIT_S = 60


def wait(driver: Any, until: Callable[[Any], T], timeout: float = WAIT_S, what: str = "") -> T:
    """Until `until(driver)` is truthy. An element the live page replaced between finding and
    reading it (a chart redrawn by a new sample) is looked for again on the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    waiting = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])
    return waiting.until(until, what)  # type: ignore[no-any-return]


def css(selector: str) -> Callable[[Any], Any]:
    """A condition: the first element the selector finds (falsy while there is none)."""
    from selenium.webdriver.common.by import By

    return lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, selector)), False)


def terminal_lines(driver: Any) -> list[str]:
    """The terminal's rendered rows, as a user sees them (xterm.js' DOM renderer)."""
    text: str = driver.execute_script(
        "return [...document.querySelectorAll('#terminal .xterm-rows > div')].map(r => r.textContent).join('\\n')"
    )
    return [line.rstrip() for line in text.splitlines()]


def shoot(driver: Any, name: str) -> None:
    where = os.environ.get("SANDLOT_UI_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.execute_script("document.getElementById('toasts').replaceChildren()")
        driver.save_screenshot(str(Path(where) / f"dashboard-{name}.png"))


def test_dashboard(browser: Any, api_server: Server, ui_key: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    # sign in: the key goes to sessionStorage, never into the URL
    d.get(api_server.url + "/ui")
    wait(d, css("#key")).send_keys(ui_key + "\n")
    wait(d, css("#new-sandbox"), what="the sandboxes page after sign-in")
    assert ui_key not in d.current_url
    assert d.execute_script("return sessionStorage.getItem('sandlot.key')") == ui_key
    wait(d, css(".state.empty"), what="the empty list")

    # create a sandbox from the dialog (the server's default template), with metadata
    d.find_element(By.ID, "new-sandbox").click()
    wait(d, css(".modal input[placeholder^='key=value']")).send_keys("suite=ui")
    d.find_element(By.ID, "create").click()
    wait(d, lambda d: "#/sandboxes/sb-" in d.current_url, what="the new sandbox's page")
    sandbox_id = d.current_url.rsplit("/", 1)[1]

    # its terminal: type, and read the answer from what the terminal rendered
    wait(d, css("#terminal[data-ready]"), what="the terminal connected")
    keys = wait(d, css("#terminal .xterm-helper-textarea"))
    keys.send_keys("echo $((6*7))\n")
    wait(d, lambda d: "42" in terminal_lines(d), what=f"42 in the terminal: {terminal_lines(d)}")

    # a busy process: the CPU chart climbs (the node samples every 5 s)
    cpu = "#cpu-card svg.chart"
    # a first sample (its boot's CPU) before the load, so that the one that counts is taken under it
    wait(d, lambda d: int(d.find_element(By.CSS_SELECTOR, cpu).get_attribute("data-count")) >= 1, what="a sample")
    before = int(d.find_element(By.CSS_SELECTOR, cpu).get_attribute("data-count"))
    keys.send_keys("yes > /dev/null &\n")

    def cpu_up(d: Any) -> bool:  # a sample taken since `yes` started, and it shows it busy
        chart = d.find_element(By.CSS_SELECTOR, cpu)
        return int(chart.get_attribute("data-count")) > before and float(chart.get_attribute("data-last")) > 20

    wait(d, cpu_up, what="the CPU chart up")
    shoot(d, "sandbox")

    # files: open /tmp, upload a file, see it listed
    d.find_element(By.CSS_SELECTOR, "[data-tab=files]").click()
    wait(d, css("#files tr[data-name=tmp] a.dir"), what="/ listed").click()
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, ".crumbs").text.startswith("/tmp"), what="/tmp opened")
    upload = tmp_path / "hello-ui.txt"
    upload.write_text("uploaded from the dashboard\n")
    d.find_element(By.ID, "upload").send_keys(str(upload))
    wait(d, css("#files tr[data-name='hello-ui.txt']"), what="the upload listed")
    shoot(d, "files")
    d.find_element(By.CSS_SELECTOR, "[data-tab=terminal]").click()  # the same terminal, not a new one
    assert "42" in terminal_lines(d)

    # the list: the sandbox, live, with its metadata and sparklines
    d.get(api_server.url + "/ui/#/sandboxes")
    row = f"#sandboxes tr[data-id='{sandbox_id}']"
    wait(d, css(row + "[data-state=running]"), what="the sandbox in the list")
    wait(d, css(row + " td.spark svg[data-count]:not([data-count='0'])"), what="its sparkline")
    assert "suite=ui" in d.find_element(By.CSS_SELECTOR, row).text
    shoot(d, "list")

    # back on its page, the terminal reattaches to the same shell; then kill it: it says killed,
    # and it leaves the list of live sandboxes
    d.find_element(By.CSS_SELECTOR, row + " a").click()
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, ".term-status").text.startswith("reattached"), what="reattached")
    wait(d, css("#kill")).click()
    wait(d, lambda d: d.switch_to.alert).accept()
    wait(d, css(".summary .badge.s-killed"), what="the sandbox killed")
    d.find_element(By.CSS_SELECTOR, "[data-tab=activity]").click()
    wait(d, css("#events .badge.s-killed"), what="its killed event")
    assert d.find_elements(By.CSS_SELECTOR, "#events .badge.s-created")
    # the key was in no URL the page requested (fetches; the terminal used a ticket)
    urls = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and not [u for u in urls if ui_key in u]
    d.find_element(By.CSS_SELECTOR, "a.back").click()
    wait(d, css(".state.empty"), what="no live sandbox left")


def test_checkpoint_fork_and_the_other_pages(browser: Any, api_server: Server, ui_key: str) -> None:
    import httpx
    from selenium.webdriver.common.by import By

    d = browser
    with httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {ui_key}"}, timeout=60) as c:
        r = c.post("/sandboxes", json={"metadata": {"suite": "ui"}})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["sandbox_id"]
    d.get(api_server.url + "/ui/")
    wait(d, css("#key")).send_keys(ui_key + "\n")
    wait(d, css(f"#sandboxes tr[data-id='{sandbox_id}'] a")).click()

    # a checkpoint, then a fork of it: the page moves to the new sandbox
    wait(d, css("[data-tab=checkpoints]")).click()
    wait(d, css("input[placeholder^='name']")).send_keys("clean\n")
    fork = wait(d, css("#checkpoints tr button.fork"), what="the checkpoint listed")
    fork.click()
    wait(d, lambda d: "#/sandboxes/sb-" in d.current_url and sandbox_id not in d.current_url, what="the fork's page")
    wait(d, css(".summary .badge.s-running"), what="the fork running")

    # the other pages load, each into a table, with no error shown
    for page, row in (("templates", "busybox"), ("volumes", None), ("keys", "dashboard test"), ("teams", "ui-")):
        d.get(f"{api_server.url}/ui/#/{page}")
        wait(d, css(f"a.nav.active[data-page={page}]"), what=page)  # routed: main holds this page now
        shown = wait(d, css("main table.grid, main .state.empty, main .state.error"), what=page)
        assert "error" not in (shown.get_attribute("class") or ""), shown.text
        if row:
            assert row in shown.text, (page, shown.text)
    assert not d.find_elements(By.CSS_SELECTOR, "a.nav[data-page=nodes]")  # one node: no Nodes page


def test_build_a_template(browser: Any, api_server: Server, ui_key: str, tmp_path: Path) -> None:
    """Build a template from the Templates page: its steps' output streams into the log, it is
    listed when it is made; a failing step shows its error and output in place."""
    import uuid

    import httpx
    from selenium.webdriver.common.by import By

    d = browser
    name = f"ui-built-{uuid.uuid4().hex[:8]}"
    greeting = tmp_path / "greeting.txt"
    greeting.write_text("hello from the build context\n")
    d.get(api_server.url + "/ui/#/templates")
    wait(d, css("#key")).send_keys(ui_key + "\n")
    wait(d, css("main table.grid"), what="the templates listed")

    def build(dockerfile: str) -> None:
        area = wait(d, css("#build-dockerfile"))
        d.execute_script("arguments[0].value = arguments[1]", area, dockerfile)
        d.find_element(By.ID, "build").click()

    def log() -> str:
        return str(d.find_element(By.ID, "build-log").text)

    try:
        wait(d, css("#build-template")).click()
        wait(d, css("#build-name")).send_keys(name)
        d.find_element(By.CSS_SELECTOR, "#build-network option[value=none]").click()
        d.find_element(By.ID, "build-files").send_keys(str(greeting))
        build(
            "FROM busybox\nCOPY greeting.txt /greeting.txt\n"
            # its name in the step: not cached from an earlier run, so its output streams
            f"RUN echo built-$((6*7)) > /built.txt && cat /built.txt /greeting.txt && echo {name}\n"
        )
        wait(d, lambda d: "built-42" in log(), 120, what="the step's output in the log")
        state = wait(d, css("#build-state[data-state=ok], #build-state[data-state=failed]"), 120, what="the end")
        assert state.get_attribute("data-state") == "ok", state.text
        assert name in state.text and "hello from the build context" in log()
        assert "Step 3/3 : RUN" in log()
        shoot(d, "build")
        d.find_element(By.CSS_SELECTOR, ".modal .buttons button[type=button]").click()  # Close
        wait(d, lambda d: name in d.find_element(By.CSS_SELECTOR, "main").text, what="the template listed")

        # a failing step: the error, with the step's output, in place
        wait(d, css("#build-template")).click()
        wait(d, css("#build-name")).send_keys(name + "-broken")
        d.find_element(By.CSS_SELECTOR, "#build-network option[value=none]").click()
        build(f"FROM busybox\nRUN echo about-to-fail {name} && exit 3\n")
        failed = wait(d, css("#build-state[data-state=failed]"), 120, what="the build failed")
        assert "exit code 3" in failed.text and "about-to-fail" in failed.find_element(By.TAG_NAME, "pre").text
        assert "about-to-fail" in log()

        # a name the archive cannot hold: refused before anything is sent
        long_name = tmp_path / ("n" * 101)
        long_name.write_text("x")
        d.find_element(By.ID, "build-files").send_keys(str(long_name))
        d.find_element(By.ID, "build").click()
        wait(d, lambda d: "at most 100 bytes" in d.find_element(By.ID, "build-state").text, what="the name refused")
    finally:
        with httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {ui_key}"}, timeout=60) as c:
            for tpl in (name, name + "-broken"):
                r = c.delete(f"/templates/{tpl}")
                assert r.status_code in (204, 404), r.text
