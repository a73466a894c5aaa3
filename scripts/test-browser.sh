#!/usr/bin/env bash
# Runs the browser side's tests: the client library's unit tests (Node, no browser), then the demo page in
# headless Chromium (Debian's, driven by playwright-core) against its own `wrangler dev` and media node.
#
#   scripts/test-browser.sh              # everything
#   scripts/test-browser.sh --no-media   # without the media node (media tests are skipped)
#   scripts/test-browser.sh --unit       # only the unit tests of web/client (seconds; no edge, no browser)
#   HOMEROOM_BROWSER_TESTS='kick' scripts/test-browser.sh   # only tests whose name matches (node --test-name-pattern)
#
# Screenshots of the key states go to target/browser-artifacts/, with the edge's and the node's logs.
# Everything this script starts runs in its own process group and is killed on exit, whatever happens.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

media=1
unit_only=0
for arg in "$@"; do
  case "$arg" in
    --no-media) media=0 ;;
    --unit) unit_only=1 ;;
    *) echo "unknown option: $arg (see the header of $0)" >&2; exit 2 ;;
  esac
done

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
total=$SECONDS
ARTIFACTS="$ROOT/target/browser-artifacts"
RUN_DIR="$ROOT/target/browser/run-$$"
log() { printf '[test-browser] %s\n' "$*" >&2; }

if [ "$unit_only" = 1 ]; then
  step "client library unit tests (node --test)" node --test tests/browser/unit/*.test.mjs
  exit 0
fi

step "bootstrap (with Chromium)" bash scripts/bootstrap.sh --browser
# An emoji font makes the screenshots readable (the page's icons are emoji); the tests do not need it.
if ! dpkg-query -W -f='${Status}' fonts-noto-color-emoji 2>/dev/null | grep -q "install ok installed"; then
  log "installing fonts-noto-color-emoji for readable screenshots (optional)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji >/dev/null 2>&1 \
    || log "could not install fonts-noto-color-emoji; screenshots will show boxes for emoji"
fi
step "client library unit tests (node --test)" node --test tests/browser/unit/*.test.mjs
step "build the Worker" bash scripts/build-edge.sh
if [ "$media" = 1 ]; then
  step "build the media node" cargo build --locked -q -p homeroom-media-node --bin homeroom-media-node
fi

rm -rf "$ARTIFACTS" "$RUN_DIR"
mkdir -p "$ARTIFACTS" "$RUN_DIR"

# --- processes: each in its own process group, all killed on exit --------------------------------------------
groups=()
cleanup() {
  local status=$?
  for pgid in "${groups[@]}"; do kill -TERM -- "-$pgid" 2>/dev/null || true; done
  sleep 0.5
  for pgid in "${groups[@]}"; do kill -KILL -- "-$pgid" 2>/dev/null || true; done
  [ -f "$RUN_DIR/edge.log" ] && cp "$RUN_DIR/edge.log" "$ARTIFACTS/edge.log"
  [ -f "$RUN_DIR/media-node.log" ] && cp "$RUN_DIR/media-node.log" "$ARTIFACTS/media-node.log"
  # The edge's state is kept for a look after a failure only.
  [ "$status" = 0 ] && rm -rf "$RUN_DIR"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Like `step` (scripts/lib.sh), but returns the command's status so a failed file does not stop the others.
timed() {
  local name="$1" start=$SECONDS rc=0
  shift
  printf '\n==> %s\n' "$name" >&2
  "$@" || rc=$?
  if [ "$rc" = 0 ]; then printf '<== %s (%ss)\n' "$name" "$((SECONDS - start))" >&2
  else printf '<== %s FAILED (exit %s, %ss)\n' "$name" "$rc" "$((SECONDS - start))" >&2; fi
  return "$rc"
}

free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# Waits until `curl $1` succeeds, for at most $2 seconds, while the process group $3 lives.
wait_http() {
  local url="$1" limit="$2" pgid="$3" what="$4" logfile="$5" start=$SECONDS
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 -- "-$pgid" 2>/dev/null; then
      log "$what exited before it was ready; last lines of $logfile:"; tail -30 "$logfile" >&2; return 1
    fi
    sleep 0.3
  done
  log "$what was not ready after ${limit}s; last lines of $logfile:"; tail -30 "$logfile" >&2
  return 1
}

EDGE_PORT="$(free_port)"
INSPECTOR_PORT="$(free_port)"
EDGE_URL="http://127.0.0.1:$EDGE_PORT"
log "starting the edge (wrangler dev) on $EDGE_URL; state in $RUN_DIR/state"
# A 3 s node lease makes the failover test quick (the node heartbeats every second).
setsid env WRANGLER_SEND_METRICS=false NO_COLOR=1 CI=true node_modules/.bin/wrangler dev \
  --ip 127.0.0.1 --port "$EDGE_PORT" --inspector-port "$INSPECTOR_PORT" --persist-to "$RUN_DIR/state" \
  --var NODE_LEASE_TTL_MS:3000 >"$RUN_DIR/edge.log" 2>&1 </dev/null &
EDGE_PGID=$!
disown "$EDGE_PGID" # no "Killed" job notices; the cleanup trap still kills the group
groups+=("$EDGE_PGID")
wait_http "$EDGE_URL/healthz" 180 "$EDGE_PGID" "the edge" "$RUN_DIR/edge.log"

export HOMEROOM_EDGE_URL="$EDGE_URL" HOMEROOM_ARTIFACTS="$ARTIFACTS"
if [ "$media" = 1 ]; then
  MEDIA_PORT="$(free_port)"
  MEDIA_URL="http://127.0.0.1:$MEDIA_PORT"
  MEDIA_BIN="$ROOT/target/debug/homeroom-media-node"
  NODE_SECRET="$(sed -n 's/^NODE_SECRET="\(.*\)"$/\1/p' .dev.vars)"
  [ -n "$NODE_SECRET" ] || { log "NODE_SECRET not found in .dev.vars"; exit 1; }
  log "starting a media node on $MEDIA_URL, heartbeating to the edge"
  setsid env NODE_SECRET="$NODE_SECRET" "$MEDIA_BIN" --http-addr "127.0.0.1:$MEDIA_PORT" --udp-addr 127.0.0.1:0 \
    --node-id browser-media-1 --region local --edge-url "$EDGE_URL" --heartbeat-ms 1000 --idle-timeout-secs 5 \
    --log 'info,homeroom_media_node::heartbeat=debug' >"$RUN_DIR/media-node.log" 2>&1 </dev/null &
  MEDIA_PGID=$!
  disown "$MEDIA_PGID"
  groups+=("$MEDIA_PGID")
  wait_http "$MEDIA_URL/healthz" 30 "$MEDIA_PGID" "the media node" "$RUN_DIR/media-node.log"
  # Placement needs the edge to have accepted a heartbeat.
  start=$SECONDS
  until grep -q "heartbeat accepted" "$RUN_DIR/media-node.log"; do
    if [ $((SECONDS - start)) -gt 30 ]; then
      log "the edge never accepted the media node's heartbeat:"; tail -20 "$RUN_DIR/media-node.log" >&2; exit 1
    fi
    sleep 0.2
  done
  export HOMEROOM_MEDIA_URL="$MEDIA_URL" HOMEROOM_MEDIA_BIN="$MEDIA_BIN" HOMEROOM_MEDIA_PID="$MEDIA_PGID" \
    HOMEROOM_NODE_SECRET="$NODE_SECRET"
fi

# One file at a time, in this order (node --test would sort them): failover runs last because it kills a media
# node. Two cores run two Chromiums with fake cameras, not more.
tests=(room resume)
if [ "$media" = 1 ]; then tests+=(media failover); fi
filter=()
if [ -n "${HOMEROOM_BROWSER_TESTS:-}" ]; then filter=(--test-name-pattern "$HOMEROOM_BROWSER_TESTS"); fi
failed=()
for name in "${tests[@]}"; do
  if ! timed "browser tests: $name" node --test --test-timeout=240000 "${filter[@]}" "tests/browser/e2e/$name.test.mjs"; then
    failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED: ${failed[*]} (screenshots and logs: $ARTIFACTS)"
  exit 1
fi

log "screenshots and logs: $ARTIFACTS"
printf '\nBrowser suite passed in %ss.\n' "$((SECONDS - total))"
