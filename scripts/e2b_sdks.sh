#!/usr/bin/env bash
# The Python E2B SDK release the compatibility tests need beside the ones pinned in pyproject's test extra.
#   scripts/e2b_sdks.sh install   (run by scripts/setup.sh --test)
#
# .e2b-sdks/py-keycheck: Python `e2b` 2.45.1, the newest PyPI release that checks an API key's
# form on the client (`e2b_` + hex) before sending it; tests/e2b_compat/test_keys.py drives a
# Sandlot key through it (PYTHONPATH, its own dependencies beside it). (The JavaScript SDKs,
# `e2b-keycheck` among them, are pinned in tests/e2b_compat_js/package.json and installed by
# tests/e2b_compat_js/npm_cache.py.)
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

case "${1:-}" in
  install)
    install_python
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
