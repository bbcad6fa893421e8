#!/usr/bin/env bash
# Makes a working Pylon install from a fresh clone, fast when nothing changed.
#
#   1. a virtualenv in the cache folder (outside the clone) with Pylon's
#      Python dependencies and build tools from the registries;
#   2. the engine wheel, built by maturin only when its sources changed
#      (keyed by their hash, engine/patches/ included), with cargo's target
#      dir in the cache too, after scripts/patch-crates.sh has prepared the
#      patched crates engine/Cargo.toml's [patch] section points at;
#   3. that wheel installed into the virtualenv.
#
# Prints the virtualenv's bin folder on the last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cache="${PYLON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pylon}"
venv="$cache/venv"
export CARGO_TARGET_DIR="$cache/cargo-target"
# wasmtime captures a backtrace on every trap when this is set: noisy and slow.
unset RUST_BACKTRACE

log() { printf 'bootstrap: %s\n' "$*" >&2; }

hash_of() { (cd "$root" && git ls-files -z --cached --others --exclude-standard -- "$@" 2>/dev/null | xargs -0 sha256sum 2>/dev/null || find "$@" -type f -exec sha256sum {} +) | sha256sum | cut -c1-16; }

deps_key=$(hash_of pyproject.toml)
if [ ! -f "$venv/.deps-$deps_key" ]; then
  log "creating the virtualenv in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  # Dependencies from pyproject.toml (project + build + test + bench extras).
  "$venv/bin/python" - "$root/pyproject.toml" > "$cache/requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in ("build", "test", "bench"):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PY
  "$venv/bin/pip" install --quiet maturin -r "$cache/requirements.txt" >&2
  rm -f "$venv"/.deps-*
  touch "$venv/.deps-$deps_key"
fi

# Patched dependency crates (engine/patches/) before anything runs cargo; the
# patches are part of the engine's sources, so of its key.
"$root/scripts/patch-crates.sh"
engine_key=$(hash_of pyproject.toml engine python wit/dynlink)
wheel_dir="$cache/wheels/$engine_key"
# The marker says which wheel is installed; a developer's `maturin develop`
# (an editable install of some checkout) replaces it without touching the
# marker, and would make this clone run another checkout's code: reinstall.
installed_from=$("$venv/bin/python" -c 'import pylon; print(pylon.__file__)' 2>/dev/null || true)
case "$installed_from" in
  "$venv"/*) ;;
  *) rm -f "$venv"/.engine-* ;;
esac
if [ ! -f "$venv/.engine-$engine_key" ]; then
  if ! ls "$wheel_dir"/*.whl >/dev/null 2>&1; then
    log "building the engine wheel (first build compiles wasmtime: several minutes)"
    "$venv/bin/maturin" build --release --quiet --out "$wheel_dir.partial" >&2
    rm -rf "$wheel_dir"; mv "$wheel_dir.partial" "$wheel_dir"
  fi
  "$venv/bin/pip" install --quiet --force-reinstall --no-deps "$wheel_dir"/*.whl >&2
  rm -f "$venv"/.engine-*
  touch "$venv/.engine-$engine_key"
fi
echo "$venv/bin"
