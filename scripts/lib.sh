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

# Reads what every benchmark script shares: `--smoke` among its arguments, BENCH_SERVER_CPUS (default 0),
# BENCH_LOAD_CPUS (default 1) and BENCH_TIMEOUT (default 5 minutes with --smoke, else $1 seconds). Sets `smoke`,
# `server_cpus`, `load_cpus` and `limit`, and raises the open-file limit to the hard limit.
bench_options() {
  local full_timeout="$1"; shift
  smoke=0
  for arg in "$@"; do
    if [ "$arg" = "--smoke" ]; then smoke=1; fi
  done
  server_cpus="${BENCH_SERVER_CPUS:-0}"
  load_cpus="${BENCH_LOAD_CPUS:-1}"
  if [ "$smoke" = 1 ]; then limit="${BENCH_TIMEOUT:-300}"; else limit="${BENCH_TIMEOUT:-$full_timeout}"; fi
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}
