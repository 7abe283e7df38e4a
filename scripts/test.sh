#!/usr/bin/env bash
# Run Sandlot's checks and tests (after scripts/setup.sh --test), as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
python scripts/gen_agent_protocol.py --check
python scripts/gen_sync_sdk.py --check
ruff check src tests scripts bench
(cd src/sandlot/agent/go && go vet ./... && go test ./...)
mypy
python -m pytest "$@"
