#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer, nightly) over the committed corpora in fuzz/corpus/.
#
#   scripts/fuzz.sh --smoke              # every target, a few thousand inputs each (CI)
#   scripts/fuzz.sh TARGET RUNS          # one target for RUNS inputs, e.g. protocol_decode 10000000
#
# Targets: protocol_decode (client/server frames, tokens, admin bodies), room_ops (random operation sequences
# against the room core), sfu_session (the media node's session API). New corpus entries land in
# fuzz/corpus/TARGET; minimise with `cargo +nightly fuzz cmin TARGET` before committing them.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/fuzz"

TARGETS=(protocol_decode room_ops sfu_session)
run_target() {
  local target="$1" runs="$2"
  mkdir -p "corpus/$target"
  # -rss_limit_mb: the SFU target builds str0m peers; 2 GiB is plenty and bounds a leak.
  local log rc=0
  log=$(mktemp)
  cargo +nightly fuzz run -O "$target" "corpus/$target" -- -runs="$runs" -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  grep -E "^(Done|stat::number_of_executed_units|==|SUMMARY|.*panicked)" "$log" || true
  # libFuzzer exits non-zero on a crash (and cargo on a build error): show the end of the log and fail.
  if [ "$rc" -ne 0 ]; then
    echo "fuzz $target failed (exit $rc); the end of its output:" >&2
    tail -n 60 "$log" >&2
  fi
  rm -f "$log"
  return "$rc"
}

if [ "${1:-}" = "--smoke" ]; then
  for t in "${TARGETS[@]}"; do
    step "fuzz $t (smoke)" run_target "$t" 3000
  done
elif [ $# -eq 2 ]; then
  run_target "$1" "$2"
else
  echo "usage: scripts/fuzz.sh --smoke | scripts/fuzz.sh TARGET RUNS" >&2
  exit 2
fi
