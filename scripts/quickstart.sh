#!/usr/bin/env bash
# Sandlot's main job on its embedded defaults (after scripts/setup.sh), as root:
# start `sandlot serve`, create a sandbox with the SDK, run Python in it, print
# the output, kill the sandbox and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
port="${SANDLOT_PORT:-7770}"
log="$(mktemp /tmp/sandlot-serve.XXXXXX)"
sandlot serve --port "$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
echo "[quickstart] starting the server (its first start builds the base image with debootstrap, about two minutes; log: $log)"
python - "$port" "$server" "$log" <<'PY'
import os, sys, time, urllib.request
port, server, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        break
    except OSError:
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            sys.exit("the server exited:\n" + open(log).read())
        time.sleep(1)
PY
export SANDLOT_API_URL="http://127.0.0.1:$port"
python - <<'PY'
from sandlot import Sandbox

with Sandbox.create() as sbx:
    print(f"[quickstart] sandbox {sbx.sandbox_id} is running")
    res = sbx.commands.run("python3 -c 'import platform, sys; print(\"hello from Python\", sys.version.split()[0], \"on\", platform.uname().release)'")
    print(res.stdout, end="")
PY
