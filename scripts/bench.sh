#!/usr/bin/env bash
# Every benchmark of Homeroom, one after another; results and how to read them: docs/benchmarks.md.
#
#   scripts/bench.sh            # everything: criterion (room core, SFU forwarding, SRTP), the SFU under load
#                               # (lecture, classroom), then the signaling suite (Homeroom vs socket.io vs ws;
#                               # about 1.5 hours on 2 cores)
#   scripts/bench.sh --smoke    # each benchmark once, tiny (CI: keeps them working; figures mean nothing)
#
# Criterion reports land in target/criterion/, the signaling tables in target/bench/. Run on a quiet machine:
# the figures are only comparable within one run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    *) echo "unknown option: $arg (see the header of $0)" >&2; exit 2 ;;
  esac
done

criterion=()
[ "$smoke" = 1 ] && criterion=(--test)
step "criterion: room core (join, chat fan-out, resume, parsing)" \
  cargo bench --locked -p homeroom-shared --bench room -- "${criterion[@]}"
step "criterion: SFU forwarding path and SRTP cost" \
  cargo bench --locked -p homeroom-media-node --bench forwarding --bench srtp -- "${criterion[@]}"
if [ "$smoke" = 1 ]; then
  step "SFU under load (smoke)" bash scripts/bench-sfu.sh --smoke
  step "signaling suite (smoke)" bash scripts/bench-signaling.sh --smoke
else
  step "SFU under load" bash scripts/bench-sfu.sh
  step "signaling suite" bash scripts/bench-signaling.sh
fi
