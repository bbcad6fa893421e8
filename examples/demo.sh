#!/usr/bin/env bash
# The README's demo: each step prints what it shows. Run via `make demo`.
set -euo pipefail
cd "$(dirname "$0")"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a script in pylon.wasm"
composectl run hello.py one --two

step "the standard library is all there"
composectl run stdlib_tour.py

step "crc32c by runtime dynlink (resolve-by-id at import; fetched on first use)"
composectl run checksum.py -t 123456789 "hello world"

step "a CBOR cap the guest was never built with"
composectl run cbor_values.py

step "an untrusted cap is refused before it is instantiated"
plan=$(mktemp -d)/plan.json
composectl plan new "$plan"
composectl plan add "$plan" crc32c "$(composectl cap build ../tests/caps/misbehave | cut -d' ' -f2)"
composectl run --plan "$plan" checksum.py -t x || echo "(exit status $?, as expected)"
