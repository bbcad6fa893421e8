#!/usr/bin/env bash
# The README's demo: each step prints what it shows. Run via `make demo`.
set -euo pipefail
cd "$(dirname "$0")"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
work=$(mktemp -d)

step "a script in pylon.wasm"
composectl run hello.py one --two

step "the standard library is all there"
composectl run stdlib_tour.py

step "embedded caps: crc32c, sqlite and zstd are plugged into the stock pylon.wasm (no blob staged)"
composectl run crc_anywhere.py
cp notes_db.py "$work/"
composectl run --dir "$work:rw" "$work/notes_db.py" "first note" "second note"

step "the same crc32c script on a lean pylon.wasm: crc32c now comes by runtime dynlink"
WITH_CRC32C=0 ../scripts/compose-python-component.sh "$work/lean.wasm" > /dev/null
composectl plan new "$work/lean-plan.json" --guest "$work/lean.wasm"
# A guest is trust-gated like a cap: this build is new, so allow its digest.
composectl trust allow --guest "sha256:$(sha256sum "$work/lean.wasm" | cut -d' ' -f1)"
composectl plan add "$work/lean-plan.json" crc32c "$(composectl cap build ../caps/crc32c | cut -d' ' -f2)"
composectl run --plan "$work/lean-plan.json" crc_anywhere.py

step "crc32c by runtime dynlink (resolve-by-id at import; fetched on first use)"
composectl run checksum.py -t 123456789 "hello world"

step "a CBOR cap the guest was never built with"
composectl run cbor_values.py

step "an untrusted cap is refused before it is instantiated"
composectl plan new "$work/plan.json"
composectl plan add "$work/plan.json" crc32c "$(composectl cap build ../tests/caps/misbehave | cut -d' ' -f2)"
composectl run --plan "$work/plan.json" checksum.py -t x || echo "(exit status $?, as expected)"

step "the MicroPython static profile: one flat wasi-p1 module with crc32c folded in"
composectl build --profile micropython-static --with crc32c -o "$work/pylon-mp.wasm"
composectl run --profile micropython-static crc_mp.py
