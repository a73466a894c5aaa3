#!/usr/bin/env bash
# Signaling benchmarks: Homeroom (through `wrangler dev`'s proxy and directly on its inner workerd), socket.io
# and ws under the identical load (bench/, `homeroom-load suite`). Prints markdown tables and saves them with the
# raw JSON under target/bench/. docs/benchmarks.md ("Signaling") explains what is measured and how to read it.
#
#   scripts/bench-signaling.sh              # the full suite (about 1–1.5 hours on 2 cores)
#   scripts/bench-signaling.sh --smoke      # tiny sizes, every adapter and scenario, under a minute (CI)
#   scripts/bench-signaling.sh --targets ws,socketio --members 100 --rates 10,100   # any `homeroom-load suite` option
#
# Every server is started pinned to CPU 0 (`taskset -c`; BENCH_SERVER_CPUS), the load tool to CPU 1
# (BENCH_LOAD_CPUS). The whole run gets a scheduling priority of BENCH_NICE (default -10 when run as root, else
# 0; with autogroup scheduling it is its session group's priority) so that other work on a shared machine
# disturbs it less; the "wait for CPU" and "core busy %" columns show how much it still did. Everything stops by itself: the run is bounded by `timeout` (BENCH_TIMEOUT, default 3 h; 5 min with
# --smoke) and every server runs in its own process group under a watchdog that kills it when the load tool
# exits.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

# Each WebSocket is a file descriptor in the load tool and one or more in each server process: bench_options
# raises the open-file limit.
bench_options 10800 "$@"
if [ "$(id -u)" = 0 ]; then default_nice=-10; else default_nice=0; fi
nice_level="${BENCH_NICE:-$default_nice}"
if [ "$(ulimit -n)" -lt 12000 ] && [ "$smoke" = 0 ]; then
  echo "warning: open-file limit $(ulimit -n): 5,000-member rooms need more (raise the hard limit)" >&2
fi

step "bootstrap" bash scripts/bootstrap.sh
step "build the Worker" bash scripts/build-edge.sh
step "build homeroom-load" cargo build --release --locked -q -p homeroom-bench

echo "servers on CPU $server_cpus, load tool on CPU $load_cpus, nice $nice_level, time limit ${limit}s" >&2
run=(timeout --kill-after=30 "$limit" nice -n "$nice_level" taskset -c "$load_cpus"
  target/release/homeroom-load suite --server-cpus "$server_cpus" "$@")
if [ "$nice_level" != 0 ] && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ]; then
  # With autogroup scheduling (Debian's default) a nice value only ranks processes within their session's
  # group; sessions compete as equals. So the run gets a session of its own whose group has the priority.
  # `timeout` is the session's process (setsid does not fork here), and forwards a TERM to the load tool.
  setsid --wait bash -c 'echo "$1" >/proc/self/autogroup && shift && exec "$@"' autogroup "$nice_level" "${run[@]}" &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null' INT TERM
  wait "$child"
else
  exec "${run[@]}"
fi
