#!/usr/bin/env bash
# Runs the abuse test (tests/tests/reliability_abuse.rs) several times and prints each run's chat round-trip
# p50/p99 before and during the abuse and their p99 ratio, then how many runs kept the ratio within 2×
# (the target of docs/reliability.md, "Abuse"). One run takes about 45 s.
#
#   scripts/abuse-runs.sh            # 10 runs against the edge without its static assets (the test's default)
#   scripts/abuse-runs.sh 5 assets   # 5 runs against the whole development stack, asset router included
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

runs="${1:-10}"
variant="${2:-no-assets}"
case "$variant" in
  no-assets) export HOMEROOM_ABUSE_ASSETS=0 ;;
  assets) export HOMEROOM_ABUSE_ASSETS=1 ;;
  *) echo "usage: scripts/abuse-runs.sh [RUNS] [no-assets|assets]" >&2; exit 2 ;;
esac
step "build the abuse test" cargo test --locked -q -p homeroom-tests --test reliability_abuse --no-run

echo "| run | edge | baseline p50 / p99 ms | under abuse p50 / p99 ms | p99 ratio | flood attempts (from the memo) |"
echo "|---|---|---|---|---|---|"
within=0
for n in $(seq 1 "$runs"); do
  line=$(timeout 600 cargo test --locked -q -p homeroom-tests --test reliability_abuse -- --nocapture 2>&1 \
    | grep '^abuse:' || true)
  if [ -z "$line" ]; then
    echo "| $n | $variant | failed: see \`cargo test -p homeroom-tests --test reliability_abuse -- --nocapture\` | | | |"
    continue
  fi
  ms() { sed -E 's/([0-9.]+)(µs|ms|s)$/\1 \2/' <<<"$1" | awk '{ f = ($2 == "µs") ? 0.001 : ($2 == "s") ? 1000 : 1; printf "%.1f", $1 * f }'; }
  read -r b50 b99 d50 d99 <<<"$(grep -oE 'p(50|99) [0-9.]+(µs|ms|s)' <<<"$line" | awk '{print $2}' | tr '\n' ' ')"
  ratio=$(grep -oE 'p99 ratio [0-9.]+' <<<"$line" | awk '{print $3}')
  attempts=$(grep -oE 'then [0-9]+ more attempts' <<<"$line" | awk '{print $2}')
  memo=$(grep -oE '\([0-9]+ from the Worker' <<<"$line" | tr -dc '0-9')
  echo "| $n | $variant | $(ms "$b50") / $(ms "$b99") | $(ms "$d50") / $(ms "$d99") | $ratio | $attempts ($memo) |"
  if awk -v r="$ratio" 'BEGIN { exit !(r <= 2.0) }'; then within=$((within + 1)); fi
done
echo
echo "$within of $runs runs kept the p99 within 2× of the baseline ($variant)."
