#!/usr/bin/env bash
# Install everything canrun's demo, tests and benchmarks need on a fresh Debian machine.
# Idempotent: a second run only checks. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium (~80 MB download, ~350 MB installed): tests/audit opens the HTML audit report in headless Chromium.
APT_PACKAGES=(docker-registry skopeo umoci busybox-static gcc libc6-dev apache2-utils curl chromium)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Foreign architecture so the tests can `apt-get download busybox-static:arm64` (real arm64 code).
need_update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  as_root dpkg --add-architecture arm64
  need_update=1
fi
if ((${#missing[@]})) || ((need_update)); then
  echo "setup: apt-get install ${missing[*]:-(none; refreshing lists for arm64)}"
  as_root apt-get update -qq
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.canrun-installed
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ] \
   || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  touch "$stamp"
fi
# Tools for the tests against real servers (kube-apiserver + etcd, crane, redis-server, kubectl), built once
# per machine into ${CANRUN_TOOLS_CACHE:-~/.cache/canrun-tools}. Never fatal: what cannot be had is recorded
# and the tests that need it skip with the reason.
bash scripts/build-tools.sh || echo "setup: scripts/build-tools.sh failed; tests needing its tools will skip"
echo "setup: ready (.venv)"
