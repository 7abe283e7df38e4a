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
  libnss-myhostname     # resolves *.localhost (sandbox ports' host names: get_host) to ::1 and 127.0.0.1
  qemu-system-x86 linux-image-cloud-amd64  # the microvm runtime: QEMU and the guest's kernel
  erofs-utils lz4       # microvm: templates as read-only erofs disks; the kernel booted uncompressed
  python3 python3-venv python3-pip
)
if [ "${1:-}" = "--test" ]; then
  packages+=(
    docker-registry apache2-utils  # a real registry on 127.0.0.1 for the image tests (htpasswd for its auth)
    skopeo umoci                   # push test images to it; the baseline of the pull benchmark
    openssl                        # signs the bearer tokens of the registry tests' token service
    openssh-client                 # ssh, scp and sftp drive the SSH gateway's tests
    chromium chromium-driver       # tests/ui drives the dashboard in a real headless browser
  )
  # E2B's JavaScript SDK tests (tests/e2b_compat_js) run on Node.js with npm; a host that
  # already has a Node.js with npm (Debian's or another) keeps it.
  if ! command -v npm >/dev/null 2>&1; then
    packages+=(nodejs npm)
  fi
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

# glibc resolves `PORT-ID.localhost` (what get_host() answers) only through nss-myhostname.
if ! grep -Eq '^hosts:.*\bmyhostname\b' /etc/nsswitch.conf; then
  echo "[setup] /etc/nsswitch.conf: hosts: adding myhostname"
  if grep -Eq '^hosts:[[:space:]]*files\b' /etc/nsswitch.conf; then
    sed -i -E 's/^(hosts:[[:space:]]*files)/\1 myhostname/' /etc/nsswitch.conf   # after /etc/hosts
  elif grep -Eq '^hosts:' /etc/nsswitch.conf; then
    sed -i -E 's/^(hosts:[[:space:]]*)/\1myhostname /' /etc/nsswitch.conf
  else
    echo "hosts: files myhostname dns" >> /etc/nsswitch.conf
  fi
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[server,test,bench]'
  # E2B's JavaScript SDKs at the versions tests/e2b_compat_js pins, in a shared cache
  echo "[setup] E2B JavaScript SDKs in $(.venv/bin/python tests/e2b_compat_js/npm_cache.py)"
  scripts/e2b_sdks.sh install    # the Python E2B release with the client-side key check (tests/e2b_compat/test_keys.py)
else
  .venv/bin/python -m pip install -q -e '.[server]'
fi
echo "[setup] done: $(.venv/bin/python -c 'import sandlot; print(sandlot.__file__)')"
