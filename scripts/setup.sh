#!/usr/bin/env bash
# Install what Sandlot needs on Debian 12, as root, into ./.venv.
#   scripts/setup.sh          runtime dependencies
#   scripts/setup.sh --test   and the test and benchmark tools
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (sandboxes need mounts, cgroups and runsc)" >&2
  exit 1
fi

packages=(
  runsc crun            # the gvisor and container runtimes
  busybox-static        # the busybox test image
  debootstrap           # builds the Debian base image from Debian's packages
  golang-go gcc libc6-dev  # build the in-sandbox agent and the statx preload
  e2fsprogs mount util-linux procps iproute2 ca-certificates
  btrfs-progs           # the node's disk store: sandbox disks cloned by reflink (checkpoints, fork)
  nftables              # per-sandbox network policy (src/sandlot/node/network.py)
  conntrack             # a released sandbox address leaves no tracked flows to its next holder
  postgresql            # the API's PostgreSQL tests start a throwaway cluster
  bubblewrap            # a baseline of bench/run
  python3 python3-venv python3-pip
)
if [ "${1:-}" = "--test" ]; then
  packages+=(
    docker-registry apache2-utils  # a real registry on 127.0.0.1 for the image tests (htpasswd for its auth)
    skopeo umoci                   # push test images to it; the baseline of the pull benchmark
    openssl                        # signs the bearer tokens of the registry tests' token service
  )
  # The E2B JavaScript SDK's tests (tests/e2b_compat_js) need Node.js >= 20.18 and npm; a host that
  # already has them (from Debian or NodeSource) keeps its own: installing Debian's npm beside
  # NodeSource's nodejs would clash.
  command -v node >/dev/null || packages+=(nodejs)
  command -v npm >/dev/null || packages+=(npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test,bench]'
  scripts/e2b_sdks.sh install
else
  .venv/bin/python -m pip install -q -e .
fi
echo "[setup] done: $(.venv/bin/python -c 'import sandlot; print(sandlot.__file__)')"
