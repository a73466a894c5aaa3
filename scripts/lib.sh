# Shared helpers for Homeroom's scripts. Source it: `. scripts/lib.sh`.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Runs cargo for wasm32 with the toolchain bootstrap chose (rustup, or Debian's rustc-web).
wasm_cargo() {
  local toolchain=rustup
  if [ -f "$ROOT/target/bootstrap/toolchain.env" ]; then
    # shellcheck disable=SC1091
    . "$ROOT/target/bootstrap/toolchain.env"
    toolchain="$WASM_TOOLCHAIN"
  fi
  if [ "$toolchain" = debian ]; then
    PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc /usr/bin/cargo "$@"
  else
    cargo "$@"
  fi
}

# Runs a named step and prints how long it took.
step() {
  local name="$1"; shift
  local start=$SECONDS
  printf '\n==> %s\n' "$name" >&2
  "$@"
  printf '<== %s (%ss)\n' "$name" "$((SECONDS - start))" >&2
}
