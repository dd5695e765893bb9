#!/usr/bin/env bash
# Build or install, once per machine, the tools the real-server tests need:
#   kube-apiserver v1.20.2 (built from Debian bookworm's `kubernetes` source package), etcd (etcd-server),
#   crane (built from Debian's go-containerregistry source), redis-server, and a kubectl that can render
#   kustomize components.
#
# Everything lands in ${CANRUN_TOOLS_CACHE:-$HOME/.cache/canrun-tools}, which outlives the work tree, so a
# second run only checks. No step is fatal: a tool that cannot be had is written to
# $CACHE/status/<tool>.skip with the reason (tests/support/tools.py reads it and the tests that need the
# tool skip with that reason); the full log of each step is $CACHE/logs/<tool>.log.
#
# Usage: scripts/build-tools.sh [tool ...]      (default: all; tools: apt apiserver crane kubectl)
set -uo pipefail

CACHE=${CANRUN_TOOLS_CACHE:-$HOME/.cache/canrun-tools}
BIN=$CACHE/bin
mkdir -p "$BIN" "$CACHE/status" "$CACHE/logs" "$CACHE/build"

APISERVER_VERSION=v1.20.2
# bookworm's kubernetes source is upstream v1.20.2 (the +really suffix), vendor/ and staging/ complete. Later
# Debian suites ship a +ds repack that keeps only kubectl, so this exact version is the one to ask for.
APISERVER_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
log() { echo "build-tools: $*"; }
skip() { # tool reason...
  local tool=$1; shift
  echo "$*" >"$CACHE/status/$tool.skip"
  log "$tool unavailable: $* (log: $CACHE/logs/$tool.log)"
}
ok() { rm -f "$CACHE/status/$1.skip"; log "$1 ready: $2"; }

# apt with the lock shared by several setup runs on one machine: wait for it rather than fail.
apt() { DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 -qq "$@"; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# --- apt sources -------------------------------------------------------------------------------------------
# deb-src for bookworm (to fetch the kubernetes source package) and bookworm-backports (for
# go-containerregistry's source, packaged as a Go library). Both derived from the URI the machine's own
# bookworm entry already uses, so no new host is named.
ensure_sources() {
  local changed=0 main=/etc/apt/sources.list.d/debian.sources
  if [ ! -f "$main" ]; then
    log "no $main (deb822 sources); leaving apt sources as they are"
    return 0
  fi
  local uri
  uri=$(awk '/^URIs:/{print $2; exit}' "$main")
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src ' /etc/apt/sources.list; then
    printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" | as_root tee /etc/apt/sources.list.d/canrun-bookworm-src.sources >/dev/null
    changed=1
  fi
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list.d/ /etc/apt/sources.list; then
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" | as_root tee /etc/apt/sources.list.d/canrun-bookworm-backports.sources >/dev/null
    changed=1
  fi
  SOURCES_CHANGED=$changed
}

APT_UPDATED=0
SOURCES_CHANGED=0
apt_update_once() { ((APT_UPDATED)) || { apt update && APT_UPDATED=1; }; }

# Debian's maintainer scripts would start etcd and redis as system services; the tests start their own on
# loopback ports they choose, so keep the packages from starting daemons while they install.
apt_install_quiet() {
  local policy=/usr/sbin/policy-rc.d made=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && made=1
  fi
  apt install -y --no-install-recommends "$@"
  local rc=$?
  ((made)) && as_root rm -f "$policy"
  return $rc
}

step_apt() {
  local logf=$CACHE/logs/apt.log
  {
    ensure_sources
    # prometheus: for promtool, which checks and unit-tests the shipped alert rules
    local want=(openssl curl ca-certificates etcd-server redis-server prometheus golang-go dpkg-dev
                golang-github-modern-go-reflect2-dev)
    local missing=() p
    for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
    if ((${#missing[@]})) || ((SOURCES_CHANGED)) || ! installed golang-github-google-go-containerregistry-dev; then
      apt_update_once
    fi
    if ((${#missing[@]})); then
      log "apt-get install ${missing[*]}"
      apt_install_quiet "${missing[@]}"
    fi
    if ! installed golang-github-google-go-containerregistry-dev; then
      log "apt-get install -t bookworm-backports golang-github-google-go-containerregistry-dev"
      apt_install_quiet -t bookworm-backports golang-github-google-go-containerregistry-dev
    fi
  } >>"$logf" 2>&1
  for t in etcd redis-server promtool; do
    local path=/usr/bin/$t
    if [ -x "$path" ]; then ok "$t" "$path"; else skip "$t" "Debian package for $t could not be installed"; fi
  done
}

# --- kube-apiserver ----------------------------------------------------------------------------------------
# The recipe, and the three traps on the way (each costs a build to discover):
#  * Kubernetes 1.20 builds in GOPATH mode, as its own hack/ scripts and Debian's rules do. Module mode with
#    -mod=vendor refuses ("updates to go.mod needed") and tidying would need the network.
#  * The tarball lacks pkg/generated/openapi/zz_generated.openapi.go, which upstream's make generates. We
#    build openapi-gen from the vendor tree and run it over every package that carries a
#    +k8s:openapi-gen tag (the list upstream's make computes); the API-rule report it writes then matches
#    api/api-rules/violation_exceptions.list line for line, which is how we know the output is upstream's.
#  * The vendored modern-go/reflect2 1.0.1 reads Go runtime map internals that changed in Go 1.18: the
#    binary builds, then dies with SIGSEGV in mapiterinit on the first response json-iterator encodes with
#    a map in it (pretty JSON, which curl's User-Agent asks for, or YAML). Debian's reflect2 1.0.2 is fixed;
#    it replaces the vendored copy. Bookworm has no Go older than 1.18 to avoid this another way.
# On 2 cores with a cold build cache the compile takes about 5 minutes and 1.5 GB of cache; the build tree
# is removed afterwards, only the binary is kept.
step_apiserver() {
  local out=$BIN/kube-apiserver logf=$CACHE/logs/kube-apiserver.log
  if [ -x "$out" ] && "$out" --version 2>/dev/null | grep -qx "Kubernetes $APISERVER_VERSION"; then
    ok kube-apiserver "$out (cached)"; return 0
  fi
  if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]; then
    skip kube-apiserver "Debian's golang-go or golang-github-modern-go-reflect2-dev is not installed"; return 0
  fi
  log "building kube-apiserver $APISERVER_VERSION from Debian's kubernetes source (about 6 minutes on 2 cores)"
  local started=$SECONDS
  # The compile cache outlives a failed or interrupted run (the next one resumes where it stopped); the source
  # tree is this run's own, so nothing another run is using is ever removed.
  local W
  W=$(mktemp -d "$CACHE/build/apiserver.XXXXXX")
  if ( build_apiserver "$W" ) >"$logf" 2>&1; then
    ok kube-apiserver "$out (built in $((SECONDS - started)) s)"
    rm -rf "$W" "$CACHE/build/apiserver-gocache"
  else
    rm -rf "$W"
    skip kube-apiserver "the kube-apiserver build failed (last line: $(tail -n1 "$logf"))"
  fi
}

build_apiserver() {
  set -euo pipefail
  local W=$1
  cd "$W"
  apt-get source -qq "kubernetes=$APISERVER_SRC_VERSION"
  local SRC
  SRC=$(find "$W" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  export GOPATH=$W/gopath GOCACHE=$CACHE/build/apiserver-gocache CGO_ENABLED=0 GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOFLAGS=
  mkdir -p "$GOPATH/src/k8s.io" "$GOPATH/bin"
  ln -sfn "$SRC" "$GOPATH/src/k8s.io/kubernetes"
  cd "$GOPATH/src/k8s.io/kubernetes"

  rm -rf vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2

  go build -o "$GOPATH/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # Every Go package (staging/ seen through vendor/) with a +k8s:openapi-gen tag, as upstream's make lists them.
  local inputs
  inputs=$(find -H . \( -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \) -type f -name '*.go' \
    | sed 's|^./staging/src|vendor|; s|/[^/]*$||; s|^./||' | LC_ALL=C sort -u \
    | while read -r d; do find "$d" -maxdepth 1 -type f -name '*.go'; done \
    | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
    | xargs grep -l '^// *+k8s:' | xargs grep -l '+k8s:openapi-gen=' \
    | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  "$GOPATH/bin/openapi-gen" -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$W/openapi-violations.report"
  diff "$W/openapi-violations.report" api/api-rules/violation_exceptions.list

  local V=$APISERVER_VERSION P=k8s.io/kubernetes/vendor/k8s.io
  go build -trimpath -o "$W/kube-apiserver" -ldflags "-s -w \
    -X $P/component-base/version.gitVersion=$V -X $P/client-go/pkg/version.gitVersion=$V \
    -X $P/component-base/version.gitMajor=1 -X $P/component-base/version.gitMinor=20 \
    -X $P/component-base/version.gitTreeState=archive" ./cmd/kube-apiserver
  "$W/kube-apiserver" --version
  mv -f "$W/kube-apiserver" "$BIN/kube-apiserver"
}

# --- crane -------------------------------------------------------------------------------------------------
step_crane() {
  local out=$BIN/crane logf=$CACHE/logs/crane.log
  local src=/usr/share/gocode/src/github.com/google/go-containerregistry
  if [ -x "$out" ] && "$out" version >/dev/null 2>&1; then ok crane "$out (cached)"; return 0; fi
  if ! command -v go >/dev/null || [ ! -d "$src/cmd/crane" ]; then
    skip crane "Debian's golang-go or golang-github-google-go-containerregistry-dev (bookworm-backports) is not installed"
    return 0
  fi
  log "building crane from Debian's go-containerregistry source (about a minute)"
  local started=$SECONDS
  # GOPATH mode over /usr/share/gocode: every dependency is a Debian golang-*-dev package there.
  if (cd "$src" && CGO_ENABLED=0 GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$CACHE/build/crane-gocache \
        GOFLAGS= GOTOOLCHAIN=local go build -trimpath -o "$out.tmp" ./cmd/crane && mv "$out.tmp" "$out") >"$logf" 2>&1; then
    ok crane "$out (built in $((SECONDS - started)) s)"
    rm -rf "$CACHE/build/crane-gocache"
  else
    skip crane "the crane build failed (last line: $(tail -n1 "$logf"))"
  fi
}

# --- kubectl -----------------------------------------------------------------------------------------------
# The manifests are a kustomize base with components. kubectl renders kustomize itself, but components need
# the kustomize kubectl 1.21 brought (v4); bookworm's kubernetes-client is 1.20 with kustomize v2, which
# rejects `components:`. Debian's later suites ship kubectl only as a kubectl-only repack built against
# their own Go libraries, which bookworm lacks. So: a kubectl >= 1.21 already on PATH is used as it is
# (this machine kind installs one); failing that, bookworm's kubernetes-client is installed so the tests
# that apply plain YAML still run, and the `apply -k` tests skip, naming the version they found.
step_kubectl() {
  local logf=$CACHE/logs/kubectl.log
  if ! command -v kubectl >/dev/null; then
    ensure_sources >>"$logf" 2>&1
    apt_update_once >>"$logf" 2>&1
    apt_install_quiet kubernetes-client >>"$logf" 2>&1 || true
  fi
  local k minor
  k=$(command -v kubectl || true)
  if [ -z "$k" ]; then skip kubectl "no kubectl on PATH and Debian's kubernetes-client did not install"; return 0; fi
  minor=$("$k" version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n1)
  ln -sfn "$k" "$BIN/kubectl"
  ok kubectl "$k (client 1.${minor:-?})"
}

# Several work trees on one machine share the cache: one build at a time, the others wait and then find it.
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null && ! flock -w 1800 9; then
  log "another build-tools run holds $CACHE/.lock for 30 minutes; giving up for now"
  exit 0
fi

steps=("$@")
((${#steps[@]})) || steps=(apt apiserver crane kubectl)
for s in "${steps[@]}"; do
  case $s in
    apt) step_apt ;;
    apiserver) step_apiserver ;;
    crane) step_crane ;;
    kubectl) step_kubectl ;;
    *) log "unknown step $s" ;;
  esac
done
exit 0
