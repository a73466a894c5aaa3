#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer, nightly) over the committed corpora in fuzz/corpus/.
#
#   scripts/fuzz.sh --smoke              # every target, a few thousand inputs each (CI)
#   scripts/fuzz.sh TARGET RUNS          # one target for RUNS inputs, e.g. protocol_decode 10000000
#
# Targets: protocol_decode (client/server frames, tokens, admin bodies), room_ops (random operation sequences
# against the room core), sfu_session (the media node's session API). A long run adds what it finds to
# fuzz/corpus/TARGET (the smoke run does not); minimise with `cargo +nightly fuzz cmin TARGET` before committing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/fuzz"

TARGETS=(protocol_decode room_ops sfu_session)
# run_target TARGET RUNS [keep]: libFuzzer adds the inputs it finds to its first corpus directory. A long run
# (keep) grows the committed corpus (minimise before committing); a smoke run reads the committed corpus but
# writes to a scratch directory, so CI leaves the working tree clean.
run_target() {
  local target="$1" runs="$2" keep="${3:-}"
  mkdir -p "corpus/$target"
  # -rss_limit_mb: the SFU target builds str0m peers; 2 GiB is plenty and bounds a leak.
  local log rc=0 corpora=("corpus/$target") scratch=""
  if [ "$keep" != keep ]; then
    scratch=$(mktemp -d)
    corpora=("$scratch" "corpus/$target")
  fi
  log=$(mktemp)
  cargo +nightly fuzz run -O "$target" "${corpora[@]}" -- -runs="$runs" -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  [ -z "$scratch" ] || rm -rf "$scratch"
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
  run_target "$1" "$2" keep
else
  echo "usage: scripts/fuzz.sh --smoke | scripts/fuzz.sh TARGET RUNS" >&2
  exit 2
fi
