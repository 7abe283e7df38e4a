#!/usr/bin/env bash
# The E2B SDK releases the compatibility tests need beside the ones pinned in pyproject's test extra.
#   scripts/e2b_sdks.sh install   (run by scripts/setup.sh --test)
#
# - .e2b-sdks/py-keycheck: Python `e2b` 2.45.1, the newest PyPI release that checks an API key's
#   form on the client (`e2b_` + hex) before sending it; tests/e2b_compat/test_keys.py drives a
#   Sandlot key through it (PYTHONPATH, its own dependencies beside it).
# - tests/e2b_compat_js/node_modules: the JavaScript SDK (package.json pins the newest `e2b`, and
#   `e2b-keycheck`, the newest JS release with the same client-side check), from package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYCHECK_PY=2.45.1

install_python() {
  local dir=.e2b-sdks/py-keycheck
  if [ -f "$dir/.installed-$KEYCHECK_PY" ]; then
    return
  fi
  rm -rf "$dir"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-warn-conflicts --target "$dir" "e2b==$KEYCHECK_PY"
  touch "$dir/.installed-$KEYCHECK_PY"
}

install_js() {
  local dir=tests/e2b_compat_js lock
  lock=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  # npm ci starts from an empty node_modules: only when the lock file changed since the last install.
  if [ "$(cat "$dir/node_modules/.sandlot-lock" 2>/dev/null)" = "$lock" ]; then
    return
  fi
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock" >"$dir/node_modules/.sandlot-lock"
}

case "${1:-}" in
  install)
    install_python
    install_js
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
