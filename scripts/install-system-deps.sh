#!/usr/bin/env bash
# System packages Pylon's builds and tests need beyond the Python virtualenv.
# Idempotent: installs only what is missing, runs `apt-get update` at most once.
# Debian/Ubuntu (apt); elsewhere it says what to install and exits non-zero.
set -euo pipefail

missing=()

# Node.js 18+ (Debian `nodejs`): the registry runtime without the component
# model that runs the MicroPython static profile's legacy-EH flavour (V8
# implements the legacy exception proposal; node:wasi is WASI preview 1).
node_ok() {
  command -v node >/dev/null 2>&1 || return 1
  local major
  major=$(node --version 2>/dev/null | sed 's/^v//; s/\..*//')
  [ "${major:-0}" -ge 18 ]
}
node_ok || missing+=(nodejs)

# CNCF distribution (Debian `docker-registry`): tests/oci_registry.py starts
# private instances of it on loopback for the OCI registry tests and
# benchmarks/bench_registry.py. The package's postinst starts a system service
# on :5000; harmless, the tests never use it.
registry_ok() {
  [ -x /usr/bin/docker-registry ]
}
registry_ok || missing+=(docker-registry)

# GNU patch: applies the patches carried for pinned crates
# (scripts/patch-crates.sh) and for vendored C ([vendor.*].patches in a cap.toml).
command -v patch >/dev/null 2>&1 || missing+=(patch)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: please install: ${missing[*]}" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-system-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
