#!/usr/bin/env bash
# Starts the whole system locally: the edge on `wrangler dev` (real workerd, SQLite-backed Durable Objects,
# state persisted in .wrangler/homeroom-state) and a media node registered with it. Ctrl-C stops everything.
#
#   scripts/dev.sh                 # edge on :8787, media node HTTP on :7000
#   HOMEROOM_PORT=9000 HOMEROOM_MEDIA_HTTP=127.0.0.1:7100 scripts/dev.sh   # other ports
#   HOMEROOM_STATE=/tmp/state scripts/dev.sh                              # persisted room state elsewhere
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

PORT="${HOMEROOM_PORT:-8787}"
STATE="${HOMEROOM_STATE:-$ROOT/.wrangler/homeroom-state}"
LOGS="$ROOT/target/dev"
mkdir -p "$LOGS" "$STATE"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bash scripts/bootstrap.sh
bash scripts/build-edge.sh
echo "[dev] building the media node" >&2
cargo build -q --locked -p homeroom-media-node --bin homeroom-media-node
MEDIA_HTTP="${HOMEROOM_MEDIA_HTTP:-127.0.0.1:7000}"

# A server left running on either port would answer the health checks below in place of ours.
for addr in "127.0.0.1:$PORT" "$MEDIA_HTTP"; do
  if curl -s -o /dev/null --max-time 1 "http://$addr/"; then
    echo "[dev] something already listens on $addr (another scripts/dev.sh?); stop it, or pick other ports" \
      "with HOMEROOM_PORT / HOMEROOM_MEDIA_HTTP" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT  # the EXIT trap then stops both processes
trap 'exit 143' TERM

echo "[dev] starting the edge (wrangler dev) on 127.0.0.1:$PORT; log: $LOGS/edge.log" >&2
setsid env WRANGLER_SEND_METRICS=false node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$PORT" \
  --persist-to "$STATE" >"$LOGS/edge.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || break  # wrangler exited (build error, port taken): say so now
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "[dev] the edge did not start:" >&2; tail -30 "$LOGS/edge.log" >&2; exit 1; }

NODE_SECRET="$(sed -n 's/^NODE_SECRET="\(.*\)"$/\1/p' .dev.vars)"
echo "[dev] starting a media node on $MEDIA_HTTP, registered with the edge; log: $LOGS/media-node.log" >&2
setsid env NODE_SECRET="$NODE_SECRET" target/debug/homeroom-media-node --http-addr "$MEDIA_HTTP" \
  --udp-addr 127.0.0.1:0 --node-id local-1 --region local --edge-url "http://127.0.0.1:$PORT" \
  --log "${HOMEROOM_LOG:-info},homeroom_media_node::heartbeat=debug" >"$LOGS/media-node.out" 2>"$LOGS/media-node.log" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://$MEDIA_HTTP/healthz" >/dev/null 2>&1 && break
  kill -0 "${pids[1]}" 2>/dev/null || break
  sleep 0.1
done
curl -fsS "http://$MEDIA_HTTP/healthz" >/dev/null || { echo "[dev] the media node did not start:" >&2; tail -30 "$LOGS/media-node.log" >&2; exit 1; }
# Rooms are placed only on a node whose heartbeat the edge accepted (its /healthz says so).
registered() { curl -fsS "http://$MEDIA_HTTP/healthz" 2>/dev/null | grep -q '"edge":"registered"'; }
for _ in $(seq 1 150); do
  registered && break
  sleep 0.2
done
registered \
  || { echo "[dev] the edge did not accept the media node's heartbeat:" >&2; tail -30 "$LOGS/media-node.log" >&2; exit 1; }

cat <<MSG

Homeroom is running.
  Classroom page  http://127.0.0.1:$PORT/   (open it in two browser windows: one teacher, one student)
  Edge health     http://127.0.0.1:$PORT/healthz
  Media node      http://$MEDIA_HTTP/healthz  (registered with the edge; metrics at /metrics)
  Room WebSocket  ws://127.0.0.1:$PORT/v1/rooms/<room>/ws?token=<JWT>
  Admin API       http://127.0.0.1:$PORT/v1/rooms/<room>  (Authorization: Bearer <admin JWT>)
  A dev token     cargo run -q -p homeroom-tests --bin homeroom-token -- --user alice --role teacher
  Logs            $LOGS/
Press Ctrl-C to stop.
MSG
# Either process exiting ends the run (and, through the trap, the other): a half-running system is not left
# behind looking healthy.
status=0
if ((BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1))); then
  wait -n "${pids[@]}" || status=$?
else  # older bash (macOS ships 3.2): no `wait -n` on given pids, so poll
  while kill -0 "${pids[0]}" 2>/dev/null && kill -0 "${pids[1]}" 2>/dev/null; do sleep 1; done
  status=1
fi
if kill -0 "${pids[0]}" 2>/dev/null; then
  echo "[dev] the media node exited (status $status); its log: $LOGS/media-node.log" >&2
  tail -20 "$LOGS/media-node.log" >&2
else
  echo "[dev] the edge exited (status $status); its log: $LOGS/edge.log" >&2
  tail -20 "$LOGS/edge.log" >&2
fi
exit "$status"
