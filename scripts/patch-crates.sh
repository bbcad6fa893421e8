#!/usr/bin/env bash
# Carries Pylon's patches to pinned dependency crates (engine/patches/, see
# docs/patches.md), the way distributions carry patches:
#
#   1. the pristine crate comes from the registry through cargo itself
#      (`cargo vendor` in a throwaway manifest in the cache folder: cargo checks
#      the registry checksum), and its .crate checksum must also match the one
#      recorded in engine/patches/SHA256SUMS;
#   2. its files are checked against cargo's per-file checksums, copied, and
#      the patches applied, into
#      <cache>/patched-crates/<crate>-<version>-<hash of its patches>;
#   3. engine/patched/<crate> (gitignored) is pointed at that copy, which
#      engine/Cargo.toml's [patch.crates-io] names.
#
# Idempotent and quick when nothing changed; bootstrap.sh and the Makefile's
# cargo targets run it first. Patch files are named
# <crate>-<version>-<what>.patch, unified diffs (-p1) against the pristine crate.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cache="${PYLON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pylon}"
store="$cache/patched-crates"
patches_dir="$root/engine/patches"

log() { printf 'patch-crates: %s\n' "$*" >&2; }

mkdir -p "$store" "$root/engine/patched"
shopt -s nullglob
crates=$(for p in "$patches_dir"/*.patch; do
  basename "$p" | sed -nE 's/^(.+-[0-9]+\.[0-9]+\.[0-9]+)-[^/]+\.patch$/\1/p'
done | sort -u)

for cv in $crates; do
  crate=${cv%-*}
  version=${cv##*-}
  patches=("$patches_dir/$cv"-*.patch)
  # The key covers the patches' names and contents (and their order).
  key=$( (for p in "${patches[@]}"; do basename "$p"; sha256sum < "$p"; done) | sha256sum | cut -c1-16)
  dest="$store/$cv-$key"
  if [ ! -f "$dest/.pylon-patched" ]; then
    expected=$(awk -v f="$cv.crate" '$2 == f { print $1 }' "$patches_dir/SHA256SUMS")
    if [ -z "$expected" ]; then
      log "no checksum for $cv.crate in engine/patches/SHA256SUMS"; exit 1
    fi
    work="$store/.vendor-$cv"
    if [ ! -f "$work/vendor/$cv/.cargo-checksum.json" ]; then
      log "fetching $cv with cargo"
      rm -rf "$work"
      mkdir -p "$work/src"
      printf '[package]\nname = "pylon-fetch"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\n%s = "=%s"\n' \
        "$crate" "$version" > "$work/Cargo.toml"
      : > "$work/src/lib.rs"
      # The engine's lock file keeps the rest of the tree at the versions
      # already downloaded for the engine (cargo prunes what is unused).
      cp "$root/engine/Cargo.lock" "$work/Cargo.lock"
      (cd "$work" && CARGO_TARGET_DIR="$work/target" cargo vendor --quiet --versioned-dirs vendor > /dev/null)
    fi
    # The .crate cargo downloaded (and checked against the registry index)
    # must be the one the patch was written against, and the unpacked files
    # must still be what cargo unpacked.
    python3 - "$work/vendor/$cv" "$expected" <<'PY'
import hashlib, json, pathlib, sys
root, expected = pathlib.Path(sys.argv[1]), sys.argv[2]
sums = json.loads((root / ".cargo-checksum.json").read_text())
if sums.get("package") != expected:
    sys.exit(f"patch-crates: {root.name}: .crate checksum {sums.get('package')} != {expected}")
for name, digest in sums["files"].items():
    if hashlib.sha256((root / name).read_bytes()).hexdigest() != digest:
        sys.exit(f"patch-crates: {root.name}: {name} differs from the registry's crate")
PY
    log "applying ${#patches[@]} patch(es) to $cv"
    rm -rf "$dest.partial"
    cp -R "$work/vendor/$cv" "$dest.partial"
    # The checksums describe the pristine crate; a path dependency needs none.
    rm -f "$dest.partial/.cargo-checksum.json"
    for p in "${patches[@]}"; do
      patch --quiet --forward --no-backup-if-mismatch -p1 -d "$dest.partial" < "$p"
    done
    touch "$dest.partial/.pylon-patched"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
  fi
  link="$root/engine/patched/$crate"
  if [ "$(readlink "$link" 2>/dev/null || true)" != "$dest" ]; then
    ln -sfn "$dest" "$link"
  fi
done
