"""Behaviours of the current E2B SDKs that Sandlot once answered differently (issue 19).

Pause semantics and the lifecycle options, listing, file metadata, symlinks, watches,
commands in a sandbox that dies, and E2B's default template, each through the real
`e2b` SDK. The JavaScript SDK drives the same behaviours in tests/e2b_compat_js.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from e2b import AsyncSandbox, FileType, NotFoundException, Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import SandboxNotRunningException

from sandlot.sdk import Sandbox as SandlotSandbox
from tests.api.harness import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OFFLINE = {"allow_internet_access": False}  # no network to set up where none is needed


def _until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _state(sbx: Sandbox) -> str:
    return str(Sandbox.get_info(sbx.sandbox_id).state.value)


@pytest.fixture(scope="module")
def sbx(e2b_env: dict[str, str]) -> Iterator[Sandbox]:
    s = Sandbox.create(timeout=600, **OFFLINE)  # E2B's default template: `base`
    yield s
    s.kill()


# ---------------------------------------------------------------- the default template


def test_the_default_template_is_e2bs(sbx: Sandbox, api_server: Server, e2b_key: str) -> None:
    assert sbx.get_info().template_id == "base"
    r = sbx.commands.run(
        "whoami; pwd; echo $HOME; python -c 'print(6*7)'; pip --version >/dev/null && echo pip; "
        "node -e 'console.log(6*7)'; npm --version >/dev/null && echo npm; git --version >/dev/null && echo git; "
        "curl --version >/dev/null && echo curl; sudo whoami; sudo -n id -u; echo x | sudo tee /root/y >/dev/null; "
        "sudo cat /root/y"
    )
    assert r.stdout.split() == ["user", "/home/user", "/home/user", "42", "pip", "42", "npm", "git", "curl",
                                "root", "0", "x"]  # fmt: skip
    # pip installs as on E2B (Debian's "externally managed" refusal is lifted): a local package, offline
    sbx.files.write("pkg/setup.py", "from setuptools import setup\nsetup(name='e2bpkg', py_modules=['e2bpkg'])\n")
    sbx.files.write("pkg/e2bpkg.py", "VALUE = 7\n")
    install = "pip install --no-build-isolation --no-index -q ./pkg"
    r = sbx.commands.run(f"{install} && python -c 'import e2bpkg; print(e2bpkg.VALUE)'")
    assert r.stdout.strip().endswith("7")
    # relative paths and commands resolve against the user's home, as envd does
    assert sbx.files.write("rel/here.txt", "x").path == "/home/user/rel/here.txt"
    assert sbx.commands.run("cat here.txt", cwd="rel").stdout == "x"
    # Sandlot's own `base` is untouched: no `python` alias, root by default
    with SandlotSandbox.create(
        template="base", timeout=60, on_timeout="hibernate", auto_resume=True, api_url=api_server.url, api_key=e2b_key
    ) as own:
        res = own.commands.run("whoami; command -v python || echo no-python")
        assert res.stdout.split() == ["root", "no-python"]
        info = own.get_info()  # the lifecycle options are Sandlot's own too
        assert (info.on_timeout, info.auto_resume) == ("hibernate", True)


def test_a_login_shell_starts_no_program_and_sets_debians_path(sbx: Sandbox) -> None:
    """E2B runs each command as `bash -l -c`: the image's login files answer from bash itself
    (image_e2b.LOGIN_EDITS), and every shell and user still gets Debian's PATH."""
    spy = '#!/bin/sh\n/usr/bin/id -un >> /tmp/id-ran\nexec /usr/bin/id "$@"\n'
    sbx.files.write("/tmp/spy/id", spy)
    sbx.commands.run("chmod 755 /tmp/spy/id; rm -f /tmp/id-ran", user="root")
    spied = {"PATH": "/tmp/spy:/usr/bin:/bin"}  # what /etc/profile starts with, before it sets its own
    other_shell = "PATH=/tmp/spy:/usr/bin:/bin sh -l -c 'echo $PATH'"  # (the outer bash set its own PATH)
    user_path = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
    root_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert sbx.commands.run("echo $PATH", envs=spied).stdout.strip() == user_path
    assert sbx.commands.run("echo $PATH", envs=spied, user="root").stdout.strip() == root_path
    assert sbx.commands.run("test -e /tmp/id-ran || echo none", user="root").stdout.strip() == "none"
    # other shells still ask `id`, and get the same answers
    assert sbx.commands.run(other_shell).stdout.strip() == user_path
    assert sbx.commands.run(other_shell, user="root").stdout.strip() == root_path
    assert sbx.commands.run("cat /tmp/id-ran", user="root").stdout.split() == ["user", "root"]


# ---------------------------------------------------------------- pause, connect, lifecycle


def test_pause_connect_and_the_class_forms(e2b_env: dict[str, str]) -> None:
    s = Sandbox.create(timeout=300, **OFFLINE)
    try:
        job = s.commands.run("sleep 600", background=True)
        assert s.pause() is True
        assert s.is_running() is False  # paused: not running until resumed
        assert _state(s) == "paused"
        with pytest.raises(SandboxNotRunningException):
            s.commands.run("echo no", request_timeout=30)
        assert s.pause() is False  # already paused
        Sandbox.connect(s.sandbox_id)  # connect resumes it
        assert s.is_running() is True and _state(s) == "running"
        assert job.pid in [p.pid for p in s.commands.list()]  # its processes carried on
        assert Sandbox.pause(s.sandbox_id) is True  # the class form
        assert s.is_running() is False
        s.connect()
        assert s.commands.run("echo back").stdout == "back\n"
    finally:
        s.kill()


def test_a_filesystem_only_pause_keeps_files_and_reboots(e2b_env: dict[str, str]) -> None:
    s = Sandbox.create(timeout=300, **OFFLINE)
    try:
        s.files.write("kept.txt", "kept")
        s.commands.run("sleep 600", background=True)
        assert s.pause(keep_memory=False) is True
        assert s.is_running() is False and _state(s) == "paused"
        s.connect()
        assert s.files.read("kept.txt") == "kept"
        assert s.commands.run("pgrep -x sleep || echo none").stdout == "none\n"  # booted afresh
    finally:
        s.kill()


def test_on_timeout_pause_with_and_without_auto_resume(e2b_env: dict[str, str], api_server: Server) -> None:
    waking = Sandbox.create(timeout=4, lifecycle={"on_timeout": "pause", "auto_resume": True}, **OFFLINE)
    asleep = Sandbox.create(timeout=4, lifecycle={"on_timeout": "pause"}, **OFFLINE)
    cold = Sandbox.create(timeout=4, lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}}, **OFFLINE)
    try:
        waking.commands.run("cd /tmp && echo awake > index.html && python3 -m http.server 8000", background=True)
        cold.files.write("kept.txt", "kept")
        host = waking.get_host(8000)
        page = f"{api_server.url}/index.html"
        _until("the server listens", lambda: httpx.get(page, headers={"Host": host}).status_code == 200)
        for s in (waking, asleep, cold):
            _until(f"{s.sandbox_id} to pause at its timeout", lambda s=s: _state(s) == "paused")
        info = Sandbox.get_info(waking.sandbox_id)
        assert info.lifecycle == {"on_timeout": "pause", "auto_resume": True}
        # HTTP to its port wakes the auto-resuming one, and the server it ran answers
        r = httpx.get(page, headers={"Host": host}, timeout=60)
        assert r.status_code == 200 and r.text == "awake\n"
        assert _state(waking) == "running"
        waking.pause()
        assert waking.is_running() is True  # any request wakes it, the health check too
        # without auto_resume it stays paused until connect()
        assert asleep.is_running() is False
        with pytest.raises(SandboxNotRunningException):
            asleep.commands.run("true", request_timeout=30)
        assert _state(asleep) == "paused"
        asleep.connect(timeout=60)
        assert asleep.commands.run("echo up").stdout == "up\n"
        # a filesystem-only auto-pause: paused, needs connect, boots afresh on its files
        assert cold.is_running() is False
        cold.connect(timeout=60)
        assert cold.files.read("kept.txt") == "kept"
    finally:
        for s in (waking, asleep, cold):
            s.kill()


def test_listing_newest_first_across_states_and_filters(e2b_env: dict[str, str]) -> None:
    tag = {"listing": uuid.uuid4().hex}
    made = []
    try:
        for _ in range(3):
            made.append(Sandbox.create(timeout=120, metadata=tag, **OFFLINE))
            time.sleep(0.05)  # distinct start times
        made[1].pause()
        pages, paginator = [], Sandbox.list(query=SandboxQuery(metadata=tag), limit=1)
        while paginator.has_next:
            pages.append([s.sandbox_id for s in paginator.next_items()])
        newest_first = [s.sandbox_id for s in reversed(made)]
        assert [i for page in pages for i in page] == newest_first and all(len(p) == 1 for p in pages)
        oldest_first = Sandbox.list(query=SandboxQuery(metadata=tag), order="asc").next_items()
        assert [s.sandbox_id for s in oldest_first] == [s.sandbox_id for s in made]
        paused = Sandbox.list(query=SandboxQuery(metadata=tag, state=[SandboxState.PAUSED])).next_items()
        assert [s.sandbox_id for s in paused] == [made[1].sandbox_id]
        since = made[1].get_info().started_at
        later = Sandbox.list(query=SandboxQuery(metadata=tag, started_after=since)).next_items()
        assert [s.sandbox_id for s in later] == newest_first[:2]
        assert len(Sandbox.list(query=SandboxQuery(metadata=tag, template="base")).next_items()) == 3
        assert Sandbox.list(query=SandboxQuery(metadata=tag, template="code-interpreter-v1")).next_items() == []
        future = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
        assert Sandbox.list(query=SandboxQuery(metadata=tag, started_after=future)).next_items() == []
    finally:
        for s in made:
            s.kill()


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("where", ["/home/user/meta", "/tmp/meta"])  # the root filesystem, and a tmpfs
def test_file_metadata(sbx: Sandbox, where: str) -> None:
    written = sbx.files.write(f"{where}/a.txt", "x", metadata={"Owner": "ana", "stage": "raw"})
    assert written.metadata == {"owner": "ana", "stage": "raw"}  # keys lowercased, as envd does
    assert sbx.files.get_info(f"{where}/a.txt").metadata == {"owner": "ana", "stage": "raw"}
    assert {e.name: e.metadata for e in sbx.files.list(where)} == {"a.txt": {"owner": "ana", "stage": "raw"}}
    moved = sbx.files.rename(f"{where}/a.txt", f"{where}/b.txt")
    assert moved.metadata == {"owner": "ana", "stage": "raw"}
    sbx.commands.run(f"mv {where}/b.txt {where}/c.txt")  # a move inside the sandbox keeps them too
    assert sbx.files.get_info(f"{where}/c.txt").metadata == {"owner": "ana", "stage": "raw"}
    sbx.files.write(f"{where}/c.txt", "y", metadata={"stage": "done"})
    assert sbx.files.get_info(f"{where}/c.txt").metadata == {"stage": "done"}  # replaced, not merged
    sbx.files.write(f"{where}/c.txt", "z")
    assert sbx.files.get_info(f"{where}/c.txt").metadata is None  # an overwrite without metadata clears it
    sbx.files.remove(where)


def test_symlinks_say_so_and_where_they_point(sbx: Sandbox) -> None:
    sbx.commands.run("mkdir -p /tmp/links && echo hi > /tmp/links/f && ln -sfn /tmp/links/f /tmp/links/to-file "
                     "&& ln -sfn /tmp/links /tmp/links/to-dir")  # fmt: skip
    for name in ("to-file", "to-dir"):
        info = sbx.files.get_info(f"/tmp/links/{name}")
        assert info.type == FileType.SYMLINK, info
    assert sbx.files.get_info("/tmp/links/to-file").symlink_target == "/tmp/links/f"
    assert sbx.files.get_info("/tmp/links/to-dir").symlink_target == "/tmp/links"
    listed = {e.name: (e.type, e.symlink_target) for e in sbx.files.list("/tmp/links")}
    assert listed == {
        "f": (FileType.FILE, None),
        "to-dir": (FileType.SYMLINK, "/tmp/links"),
        "to-file": (FileType.SYMLINK, "/tmp/links/f"),
    }


def test_removing_a_missing_file_is_not_found(sbx: Sandbox) -> None:
    with pytest.raises(NotFoundException):
        sbx.files.remove("/tmp/never-there")


def test_watch_with_entries_and_new_folders_polled(sbx: Sandbox) -> None:
    """The polling form (the sync SDK's watch handle, read with get_new_events)."""
    sbx.files.make_dir("/home/user/w")
    sbx.files.write("/home/user/w/seed.txt", "s", metadata={"k": "v"})
    handle = sbx.files.watch_dir("/home/user/w", recursive=True, include_entry=True)
    sbx.commands.run("mkdir -p /home/user/w/new/deeper && echo hi > /home/user/w/new/deeper/f.txt")
    sbx.files.rename("/home/user/w/seed.txt", "/home/user/w/new/seed.txt")
    events = []

    def seen() -> bool:
        events.extend(handle.get_new_events())
        names = {e.name for e in events}
        return {"new/deeper/f.txt", "new/seed.txt"} <= names

    try:
        _until("the events", seen, 30)
    except AssertionError:
        raise AssertionError(f"events seen: {[(e.name, e.type.name) for e in events]}") from None
    handle.stop()
    created = {e.name: e.entry for e in events if e.type.name == "CREATE"}
    assert {"new", "new/deeper", "new/deeper/f.txt"} <= set(created)
    assert created["new/deeper"] is not None and created["new/deeper"].type == FileType.DIR
    moved = [e.entry for e in events if e.name == "new/seed.txt" and e.entry is not None]
    assert moved and moved[0].metadata == {"k": "v"} and moved[0].path == "/home/user/w/new/seed.txt"


def test_watch_with_entries_and_new_folders_streamed(sbx: Sandbox, e2b_env: dict[str, str]) -> None:
    """The streaming form (the async SDK's watch_dir with a callback)."""

    async def scenario() -> dict[str, object]:
        a = await AsyncSandbox.connect(sbx.sandbox_id)
        await a.files.make_dir("/tmp/ws")
        got: dict[str, object] = {}
        done = asyncio.Event()

        def on_event(e: object) -> None:
            got[e.name] = e.entry  # type: ignore[attr-defined]
            if "a/b/c.txt" in got:
                done.set()

        handle = await a.files.watch_dir("/tmp/ws", on_event, recursive=True, include_entry=True)
        await a.commands.run("mkdir -p /tmp/ws/a/b && echo x > /tmp/ws/a/b/c.txt")
        await asyncio.wait_for(done.wait(), 30)
        await handle.stop()
        return got

    got = asyncio.run(scenario())
    entry = got["a/b/c.txt"]
    assert entry is not None and entry.type == FileType.FILE and entry.path == "/tmp/ws/a/b/c.txt"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- commands


def test_envs_of_one_command_stay_with_it(sbx: Sandbox) -> None:
    assert sbx.commands.run("echo ${ONLY_HERE-unset}", envs={"ONLY_HERE": "1"}).stdout == "1\n"
    assert sbx.commands.run("echo ${ONLY_HERE-unset}").stdout == "unset\n"
    job = sbx.commands.run("echo ${ONLY_HERE-unset}", envs={"ONLY_HERE": "2"}, background=True)
    assert job.wait().stdout == "2\n"
    assert sbx.commands.run("echo ${ONLY_HERE-unset}").stdout == "unset\n"


def test_a_sandbox_killed_mid_command_ends_its_handles_at_once(e2b_env: dict[str, str]) -> None:
    s = Sandbox.create(timeout=300, **OFFLINE)
    job = s.commands.run("sleep 600", background=True)
    failures: list[BaseException] = []

    def foreground() -> None:
        try:
            s.commands.run("sleep 600")
        except BaseException as exc:  # what it raised is the point
            failures.append(exc)

    runner = threading.Thread(target=foreground)
    runner.start()
    _until("both commands", lambda: len([p for p in s.commands.list() if p.cmd == "/bin/bash"]) >= 2, 30)
    started = time.monotonic()
    Sandbox.kill(s.sandbox_id)
    with pytest.raises(SandboxNotRunningException):
        job.wait()
    runner.join(60)
    assert time.monotonic() - started < 20, "the handles must end when the sandbox dies, not at a timeout"
    assert len(failures) == 1 and isinstance(failures[0], SandboxNotRunningException), failures


def test_control_plane_errors_in_e2bs_form(api_server: Server, e2b_env: dict[str, str]) -> None:
    """E2B's `Error`: `code` is the HTTP status, which the SDKs compare (the JS SDK: 404, 409)."""
    headers = {"X-API-Key": e2b_env["E2B_API_KEY"]}
    r = httpx.get(f"{api_server.url}/e2b/sandboxes/sb-00000000000000", headers=headers)
    assert r.status_code == 404 and r.json()["code"] == 404 and "not found" in r.json()["message"]
    r = httpx.post(f"{api_server.url}/e2b/sandboxes", headers=headers, json={"templateID": 5})
    assert r.status_code == 422 and r.json()["code"] == 422 and r.json()["field"] == "templateID"
    assert httpx.get(f"{api_server.url}/e2b/sandboxes").json()["code"] == 401  # no key
