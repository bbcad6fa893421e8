#!/usr/bin/env bash
# Builds a lean or fat pylon.wasm: every embeddable cap is plugged in with
# `wac plug` unless its WITH_<CAP>=0 is set.
#
#   scripts/compose-python-component.sh [OUT]          # stock: every embeddable cap embedded
#   WITH_SQLITE=0 scripts/compose-python-component.sh lean.wasm
#   WITH_CRC32C=0 WITH_ZSTD=0 WITH_SQLITE=0 scripts/compose-python-component.sh   # every cap by dynlink
#
# A cap is embeddable when its caps/<cap>/cap.toml has an [embedded] table
# (docs/embedded.md); <CAP> is its name in capitals with '-' as '_'. This
# script keeps no list of its own: a new cap's flag exists once its manifest
# does. A cap left out stays reachable by runtime dynlink (a plan naming it).
#
# Runs the composectl on PATH when there is one (Pylon's virtualenv is
# active), else through scripts/in-venv, which bootstraps that virtualenv.
# Prints "<digest> <path>" on stdout, like `composectl build`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-pylon.wasm}"

declare -A cap_of=()
known=()
for manifest in "$root"/caps/*/cap.toml; do
  [ -f "$manifest" ] || continue
  grep -q '^\[embedded\]' "$manifest" || continue
  cap="$(basename "$(dirname "$manifest")")"
  flag="$(printf '%s' "$cap" | tr 'a-z-' 'A-Z_')"
  cap_of[$flag]="$cap"
  known+=("$flag")
done

# Refuse WITH_ flags we do not know: a typo must not silently build a fat pylon.
for var in $(compgen -v WITH_ || true); do
  flag="${var#WITH_}"
  if [[ -z "${cap_of[$flag]+set}" ]]; then
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
    0) without+=(--without "${cap_of[$flag]}") ;;
    *) echo "compose-python-component: $var must be 0 or 1, not '$value'" >&2; exit 2 ;;
  esac
done

if command -v composectl >/dev/null 2>&1; then
  exec composectl build "${without[@]}" -o "$out"
fi
exec "$here/in-venv" composectl build "${without[@]}" -o "$out"
