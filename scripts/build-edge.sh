#!/usr/bin/env bash
# Builds the edge Worker to wasm (edge/build/), skipping the work when nothing it depends on changed.
# Needs scripts/bootstrap.sh to have run. wrangler runs this as its [build] command.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT=edge/build/index.js
if [ -f "$OUT" ] && [ "${HOMEROOM_FORCE_BUILD:-0}" != 1 ]; then
  newer=$(find edge/src edge/Cargo.toml shared/src shared/Cargo.toml Cargo.lock -newer "$OUT" -print -quit)
  if [ -z "$newer" ]; then
    exit 0
  fi
fi

toolchain=rustup
if [ -f target/bootstrap/toolchain.env ]; then
  # shellcheck disable=SC1091
  . target/bootstrap/toolchain.env
  toolchain="$WASM_TOOLCHAIN"
fi
if [ "$toolchain" = debian ]; then
  # Debian's rustc-web carries the wasm32 sysroot; it must win over rustup's proxies.
  export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo
fi
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
echo "[build-edge] worker-build --release ($toolchain toolchain)" >&2
cd edge
env WASM_BINDGEN_BIN="$CARGO_BIN/wasm-bindgen" WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt" \
  "$CARGO_BIN/worker-build" --release >&2
touch "$ROOT/$OUT"
