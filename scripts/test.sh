#!/usr/bin/env bash
# Runs every test of Homeroom: formatting, lints (native and wasm32), the Worker build and its deploy bundle,
# the native tests (room core, media node), the end-to-end and reliability suites against real `wrangler dev`
# and real media nodes, the browser suite in Chromium, and short runs of the fuzzers and benchmarks (so they
# keep working). Installs what it needs first (scripts/bootstrap.sh), so it works on a fresh machine.
#
#   scripts/test.sh            # everything
#   scripts/test.sh --quick    # bootstrap, lints, the Worker build and native tests; no e2e, browser, fuzz or bench
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
if [ "$quick" = 1 ]; then
  step "bootstrap" bash scripts/bootstrap.sh
else
  step "bootstrap (with Chromium for the browser suite)" bash scripts/bootstrap.sh --browser
fi
step "format" cargo fmt --all --check
step "clippy (native, all targets)" cargo clippy --workspace --all-targets --locked -- -D warnings
step "clippy (wasm32: edge, shared)" \
  wasm_cargo clippy -p homeroom-edge -p homeroom-shared --target wasm32-unknown-unknown --locked -- -D warnings
step "build the Worker" bash scripts/build-edge.sh
step "wrangler deploy --dry-run" \
  env WRANGLER_SEND_METRICS=false node_modules/.bin/wrangler deploy --dry-run --outdir target/deploy-dry-run
step "native tests" cargo test --locked -p homeroom-shared -p homeroom-media-node -p homeroom-bench
step "browser client unit tests" node --test tests/browser/unit/*.test.mjs
if [ "$quick" = 0 ]; then
  rm -rf target/e2e
  step "end-to-end and reliability tests (wrangler dev, media nodes)" cargo test --locked -p homeroom-tests
  step "browser suite (Chromium)" bash scripts/test-browser.sh
  step "fuzzers (short runs)" bash scripts/fuzz.sh --smoke
  # Benchmarks are tools, not tests: here each runs once, tiny, so they keep working (docs/benchmarks.md).
  step "benchmarks (smoke)" bash scripts/bench.sh --smoke
fi
printf '\nAll tests passed in %ss.\n' "$((SECONDS - total))"
