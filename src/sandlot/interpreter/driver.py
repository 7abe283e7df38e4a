# mypy: ignore-errors
# ruff: noqa: UP031 - plain %-formatting: this file runs on whatever python3 the image has
"""The code interpreter's driver: runs INSIDE a sandbox, under the image's python3.

It is not imported by Sandlot; the API writes this file into the sandbox and
starts it through the agent as a background process. It speaks JSON lines:
requests on stdin, replies on stdout, each tagged with the request's `req`.

- `{"op": "context", "req", "id", "language", "cwd"}` -> `{"type": "context", ...}`
- `{"op": "execute", "req", "context", "code", "env"}` -> `accepted`, `stdout`/`stderr`
  `{"text"}`, `result` `{"text", "png", ..., "is_main_result"}`, `error`
  `{"name", "value", "traceback"}`, `number_of_executions`, then `end`
- `{"op": "interrupt" | "restart" | "remove", "req", "context"}` -> `done`
- any failure of a request -> `{"type": "failed", "message"}`

Python contexts are real Jupyter kernels (ipykernel, started by
jupyter_client over IPC sockets: no network needed); bash contexts are
persistent bash processes. Each context has its own thread, so executions in
one context run in order and contexts run side by side. Standard library and
jupyter_client only: this file must run on the image's Python, not ours.
"""

import codecs
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

_out_lock = threading.Lock()
_real_stdout = sys.stdout
sys.stdout = sys.stderr  # nothing but replies may reach the real stdout


class NotFound(Exception):
    pass


def reply(req, type_, **fields):
    line = json.dumps({"req": req, "type": type_, **fields})
    with _out_lock:
        _real_stdout.write(line + "\n")
        _real_stdout.flush()


MIME = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}


class PythonContext:
    def __init__(self, cwd, run_dir):
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(run_dir, "k"))
        self.km.start_kernel(cwd=cwd, env=dict(os.environ))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def _silent(self, code):
        msg_id = self.kc.execute(code, silent=True, store_history=False)
        while True:
            msg = self.kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status":
                if msg["content"]["execution_state"] == "idle":
                    return

    def execute(self, req, code, env):
        if env:  # for this execution only: what they replace comes back afterwards
            self._silent(
                "import os as __o; __sandlot_env = {k: __o.environ.get(k) for k in %s}; "
                "__o.environ.update(%s); del __o" % (json.dumps(sorted(env)), json.dumps(env))
            )
        try:
            self._run(req, code)
        finally:
            if env and self.km.is_alive():
                self._silent(
                    "import os as __o\n"
                    "for __k, __v in __sandlot_env.items():\n"
                    "    __o.environ.pop(__k, None) if __v is None else __o.environ.__setitem__(__k, __v)\n"
                    "del __o, __k, __v, __sandlot_env"
                )

    def _run(self, req, code):
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False)
        count = None
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                if self.km.is_alive():
                    continue
                # Killed (the sandbox's memory limit kills the biggest process): say so, start afresh.
                reply(
                    req,
                    "error",
                    name="KernelDied",
                    value="the kernel died (out of memory?); it was restarted and its state is lost",
                    traceback="",
                )
                self.restart()
                return
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                reply(req, "stdout" if content["name"] == "stdout" else "stderr", text=content["text"])
            elif kind in ("execute_result", "display_data"):
                result = {MIME[k]: v for k, v in content.get("data", {}).items() if k in MIME}
                extra = {k: v for k, v in content.get("data", {}).items() if k not in MIME}
                if extra:
                    result["extra"] = extra
                reply(req, "result", is_main_result=kind == "execute_result", **result)
            elif kind == "error":
                reply(
                    req,
                    "error",
                    name=content["ename"],
                    value=content["evalue"],
                    traceback="\n".join(content["traceback"]),
                )
            elif kind == "execute_input":
                count = content.get("execution_count")
            elif kind == "status" and content["execution_state"] == "idle":
                break
        if count is not None:
            reply(req, "number_of_executions", execution_count=count)

    def interrupt(self):
        self.km.interrupt_kernel()

    def restart(self):
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=120)

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


class BashContext:
    """A persistent bash: variables, functions and `cd` carry over between executions."""

    def __init__(self, cwd, run_dir):
        self.cwd = cwd
        self.count = 0
        self._start()

    def _start(self):
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            start_new_session=True,
        )

    def _pump(self, stream, kind, req, marker, done):
        # stdout's marker follows a newline of ours (so it starts a line): hold that back too.
        if kind == "stdout":
            marker = b"\n" + marker
        buf = b""
        text = codecs.getincrementaldecoder("utf-8")("replace")  # a character may straddle two reads
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                done.put((kind, None))
                return
            buf += chunk
            at = buf.find(marker)
            if at >= 0:
                tail = text.decode(buf[:at], final=True)
                if tail:
                    reply(req, kind, text=tail)
                rest = buf[at + len(marker) :]
                done.put((kind, rest.split(b"\n", 1)[0].strip()))
                return
            keep = len(marker)
            if len(buf) > keep:
                out = text.decode(buf[:-keep])
                if out:
                    reply(req, kind, text=out)
                buf = buf[-keep:]

    def execute(self, req, code, env):
        marker = ("__sandlot_done_%s__" % uuid.uuid4().hex).encode()
        # The variables hold for this execution only: each one's previous value (or its
        # absence) comes back afterwards, as the rest of the shell's state carries over.
        save, restore = [], []
        for k, v in (env or {}).items():
            if not _NAME.match(k):
                raise ValueError("not a shell variable name: %r" % k)
            saved = "__sandlot_had_{k}=${{{k}+1}} __sandlot_old_{k}=${{{k}-}}; export {k}={v}"
            save.append(saved.format(k=k, v=_shell_quote(v)))
            restore.append(
                f'if [ -n "$__sandlot_had_{k}" ]; then export {k}="$__sandlot_old_{k}"; else unset {k}; fi; '
                f"unset __sandlot_had_{k} __sandlot_old_{k}"
            )
        script = "%s\n%s\n__sandlot_rc=$?\n%s\nprintf '\\n%s %%d\\n' $__sandlot_rc\nprintf '%s\\n' >&2\n" % (
            "\n".join(save),
            code,
            "\n".join(restore),
            marker.decode(),
            marker.decode(),
        )
        done = queue.Queue()
        threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "stdout", req, marker, done), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "stderr", req, marker, done), daemon=True),
        ]
        for t in threads:
            t.start()
        self.proc.stdin.write(script.encode())
        self.proc.stdin.flush()
        results = dict(done.get() for _ in threads)
        self.count += 1
        rc = results.get("stdout")
        if rc is None:  # bash exited (the code ran `exit`): start a new one
            self._start()
            reply(req, "error", name="BashExited", value="bash exited; the context was restarted", traceback="")
        elif rc not in (b"0", b""):
            code_ = rc.decode()
            reply(req, "error", name="ExitCodeError", value="exit code %s" % code_, traceback="exit code " + code_)
        reply(req, "number_of_executions", execution_count=self.count)

    def interrupt(self):
        os.killpg(self.proc.pid, signal.SIGINT)

    def restart(self):
        self.close()
        self._start()

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()


_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")


def _shell_quote(value):
    return "'" + str(value).replace("'", "'\\''") + "'"


class Worker:
    """One context and the thread that runs its requests in order."""

    def __init__(self, cid, language, cwd, run_dir):
        self.id, self.language, self.cwd = cid, language, cwd
        self.queue = queue.Queue()
        self.ctx = None
        self.error = None
        self.ready = threading.Event()
        threading.Thread(target=self._run, args=(run_dir,), daemon=True).start()

    def _run(self, run_dir):
        try:
            cls = PythonContext if self.language == "python" else BashContext
            self.ctx = cls(self.cwd, tempfile.mkdtemp(dir=run_dir))
        except Exception as exc:
            self.error = "%s: %s" % (type(exc).__name__, exc)
        self.ready.set()
        while True:
            req, op, msg = self.queue.get()
            try:
                if self.error:
                    raise RuntimeError("the %s context failed to start: %s" % (self.language, self.error))
                if op == "execute":
                    self.ctx.execute(req, msg.get("code", ""), msg.get("env") or {})
                    reply(req, "end")
                elif op == "restart":
                    self.ctx.restart()
                    reply(req, "done")
            except Exception as exc:
                traceback.print_exc()
                reply(req, "failed", message="%s: %s" % (type(exc).__name__, exc))


def main():
    run_dir = tempfile.mkdtemp(prefix="sandlot-kernels-")
    workers = {}
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        req, op = msg.get("req"), msg.get("op")
        try:
            if op == "context":
                cid = msg.get("id") or uuid.uuid4().hex
                language = msg.get("language") or "python"
                if language not in ("python", "bash"):
                    raise ValueError("language must be python or bash, got %r" % language)
                cwd = msg.get("cwd") or os.getcwd()
                if not os.path.isdir(cwd):
                    raise ValueError("cwd %s is not a directory" % cwd)
                if cid in workers:
                    raise ValueError("context %s already exists" % cid)
                workers[cid] = w = Worker(cid, language, cwd, run_dir)
                if msg.get("wait", True):
                    w.ready.wait()
                    if w.error:
                        del workers[cid]
                        raise RuntimeError("the %s context failed to start: %s" % (language, w.error))
                reply(req, "context", id=cid, language=language, cwd=cwd)
            elif op in ("execute", "restart"):
                w = workers.get(msg.get("context"))
                if w is None:
                    raise NotFound("context %s not found" % msg.get("context"))
                if op == "execute":
                    reply(req, "accepted")  # the request is good: the API may start its response
                w.queue.put((req, op, msg))
            elif op == "interrupt":
                w = workers.get(msg.get("context"))
                if w is not None and w.ctx is not None:
                    w.ctx.interrupt()
                reply(req, "done")
            elif op == "remove":
                w = workers.pop(msg.get("context"), None)
                if w is None:
                    raise NotFound("context %s not found" % msg.get("context"))
                if w.ctx is not None:
                    w.ctx.close()
                reply(req, "done")
            elif op == "list":
                contexts = [{"id": w.id, "language": w.language, "cwd": w.cwd} for w in workers.values()]
                reply(req, "contexts", contexts=contexts)
            else:
                raise ValueError("unknown op %r" % op)
        except NotFound as exc:
            reply(req, "failed", message=str(exc), not_found=True)
        except Exception as exc:
            reply(req, "failed", message=str(exc) if isinstance(exc, (ValueError, RuntimeError)) else repr(exc))
    for w in workers.values():
        if w.ctx is not None:
            try:
                w.ctx.close()
            except Exception:
                pass


if __name__ == "__main__":
    time.tzset()
    main()
