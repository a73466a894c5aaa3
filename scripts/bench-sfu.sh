#!/usr/bin/env bash
# SFU benchmark: the release media node under a lecture (1 publisher → N subscribers) and classrooms (R rooms
# of 6, all-to-all) of str0m peers over loopback UDP (bench/, `homeroom-sfu-load`), and the same lecture on the
# baseline: str0m's own `chat` example SFU, built here from the published str0m crate (the version in our
# Cargo.lock) into target/str0m-chat — never committed. Prints markdown tables and saves them with the raw JSON
# under target/bench/sfu-*. docs/benchmarks.md ("SFU under load") explains them.
#
#   scripts/bench-sfu.sh                     # both scenarios, default steps (about 10–15 minutes)
#   scripts/bench-sfu.sh --smoke             # tiny steps, 2-second windows, no baseline (CI; figures mean nothing)
#   scripts/bench-sfu.sh --only lecture --lecture-steps 100,200,400   # any `homeroom-sfu-load` option
#
# The node runs pinned to CPU 0 (BENCH_SERVER_CPUS), the peers to CPU 1 (BENCH_LOAD_CPUS). The peers do what
# browsers do per packet (SRTP, RTCP), so on 2 cores they run out of CPU before a node would: the "load tool
# CPU %" column says when. Bounded by `timeout` (BENCH_TIMEOUT, default 1 h; 5 min with --smoke).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

bench_options 3600 "$@"

step "build the media node and homeroom-sfu-load" \
  cargo build --release --locked -q -p homeroom-media-node --bin homeroom-media-node -p homeroom-bench --bin homeroom-sfu-load

# The baseline: str0m's `chat` example, the published code unchanged (examples/chat.rs, its util module and
# assets, copied out of Cargo's registry for the str0m version in our Cargo.lock), built as a binary of a
# throwaway crate in target/str0m-chat with the dependencies the example declares. (Building the example inside
# the copied crate would resolve str0m's every optional and dev dependency, and some are not on every registry
# mirror.) It listens on the first non-loopback IPv4 address it finds and on HTTPS port 3000, as its source
# says browsers need — so a run with the baseline happens in a private network namespace of its own
# (`unshare --net`): loopback plus one private address (BASELINE_IP) on it, nothing that leaves the machine,
# and port 3000 cannot collide with anything outside.
build_chat() {
  local manifest src version
  manifest=$(cargo metadata --locked --format-version 1 \
    | grep -o '"manifest_path":"[^"]*/str0m-[0-9][0-9.]*/Cargo.toml"' | head -n 1 | cut -d'"' -f4)
  [ -f "$manifest" ] || { echo "str0m's sources are not in Cargo's registry (run cargo fetch)" >&2; return 1; }
  src=$(dirname "$manifest")
  version=${src##*/str0m-}
  rm -rf target/str0m-chat && mkdir -p target/str0m-chat
  cp -r "$src"/examples/* target/str0m-chat/ && chmod -R u+w target/str0m-chat
  cat >target/str0m-chat/Cargo.toml <<TOML
[package]
name = "str0m-chat-baseline"
version = "0.0.0"
edition = "2024"
publish = false

[[bin]]
name = "str0m-chat"
path = "chat.rs"

[dependencies]
str0m = "=$version"
rouille = { version = "3.6.2", features = ["rustls"] }  # as str0m's examples feature
serde_json = "1"
systemstat = "0.2.2"
tracing = "0.1"
tracing-subscriber = { version = "0.3.16", features = ["env-filter", "std"] }

[workspace]
TOML
  (cd target/str0m-chat && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q --bin str0m-chat)
}
BASELINE_IP=10.254.0.1
chat=() netns=()
if [ "$smoke" = 1 ]; then
  # The smoke run (CI) skips the baseline's build: it checks our node and the tool.
  echo "smoke: the str0m chat baseline is skipped" >&2
elif [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
  echo "warning: the str0m chat baseline runs in a private network namespace (root, unshare, ip); skipped" >&2
else
  step "build the baseline: str0m's chat example (published crate)" build_chat
  chat=(--chat-binary target/release/str0m-chat)
  # shellcheck disable=SC2016  # $@ is the inner shell's
  netns=(unshare --net -- bash -c \
    "ip link set lo up && ip addr add $BASELINE_IP/32 dev lo && exec \"\$@\"" netns)
fi
echo "media node on CPU $server_cpus, peers on CPU $load_cpus, time limit ${limit}s" >&2
exec timeout --kill-after=30 "$limit" "${netns[@]}" taskset -c "$load_cpus" \
  target/release/homeroom-sfu-load --node-cpus "$server_cpus" "${chat[@]}" "$@"
