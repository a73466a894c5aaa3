#!/usr/bin/env bash
# Runs every test of Homeroom: formatting, lints (native and wasm32), the Worker build and its deploy bundle,
# the native tests, and the end-to-end suites against real `wrangler dev`.
# Installs what it needs first (scripts/bootstrap.sh), so it works on a fresh machine.
#
#   scripts/test.sh            # everything
#   scripts/test.sh --quick    # skip the end-to-end suites
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
total=$SECONDS
step "bootstrap" bash scripts/bootstrap.sh
step "format" cargo fmt --all --check
step "clippy (native, all targets)" cargo clippy --workspace --all-targets --locked -- -D warnings
step "clippy (wasm32: edge, shared)" \
  wasm_cargo clippy -p homeroom-edge -p homeroom-shared --target wasm32-unknown-unknown --locked -- -D warnings
step "build the Worker" bash scripts/build-edge.sh
step "wrangler deploy --dry-run" \
  env WRANGLER_SEND_METRICS=false node_modules/.bin/wrangler deploy --dry-run --outdir target/deploy-dry-run
step "native tests" cargo test --locked -p homeroom-shared -p homeroom-media-node
if [ "$quick" = 0 ]; then
  rm -rf target/e2e
  step "end-to-end tests (wrangler dev)" cargo test --locked -p homeroom-tests
fi
printf '\nAll tests passed in %ss.\n' "$((SECONDS - total))"
