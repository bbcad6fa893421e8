#!/usr/bin/env bash
# Builds a lean or fat pylon.wasm: every embeddable cap is plugged in with
# `wac plug` unless its WITH_<CAP>=0 is set.
#
#   scripts/compose-python-component.sh [OUT]          # stock: crc32c, sqlite, zstd embedded
#   WITH_SQLITE=0 scripts/compose-python-component.sh lean.wasm
#   WITH_CRC32C=0 WITH_ZSTD=0 WITH_SQLITE=0 scripts/compose-python-component.sh   # every cap by dynlink
#
# A cap left out stays reachable by runtime dynlink (a plan naming it).
# Prints "<digest> <path>" on stdout, like `composectl build`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-pylon.wasm}"
known=(CRC32C SQLITE ZSTD)

# Refuse WITH_ flags we do not know: a typo must not silently build a fat pylon.
for var in $(compgen -v WITH_ || true); do
  flag="${var#WITH_}"
  if [[ ! " ${known[*]} " =~ " ${flag} " ]]; then
    echo "compose-python-component: unknown flag $var (known: ${known[*]/#/WITH_})" >&2
    exit 2
  fi
done

without=()
for flag in "${known[@]}"; do
  var="WITH_$flag"
  value="${!var:-1}"
  case "$value" in
    1) ;;
    0) without+=(--without "$(echo "$flag" | tr 'A-Z' 'a-z')") ;;
    *) echo "compose-python-component: $var must be 0 or 1, not '$value'" >&2; exit 2 ;;
  esac
done

exec "$here/in-venv" composectl build "${without[@]}" -o "$out"
