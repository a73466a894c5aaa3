#!/usr/bin/env bash
# Starts the whole system locally: the edge on `wrangler dev` (real workerd, SQLite-backed Durable Objects,
# state persisted in .wrangler/homeroom-state) and a media node registered with it. Ctrl-C stops everything.
#
#   scripts/dev.sh                 # edge on :8787
#   HOMEROOM_PORT=9000 scripts/dev.sh
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

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

echo "[dev] starting the edge (wrangler dev) on 127.0.0.1:$PORT; log: $LOGS/edge.log" >&2
setsid env WRANGLER_SEND_METRICS=false node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$PORT" \
  --persist-to "$STATE" >"$LOGS/edge.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "[dev] the edge did not start:" >&2; tail -30 "$LOGS/edge.log" >&2; exit 1; }

cat <<MSG

Homeroom is running.
  Edge health     http://127.0.0.1:$PORT/healthz
  Room WebSocket  ws://127.0.0.1:$PORT/v1/rooms/<room>/ws?token=<JWT>
  Admin API       http://127.0.0.1:$PORT/v1/rooms/<room>  (Authorization: Bearer <admin JWT>)
  A dev token     cargo run -q -p homeroom-tests --bin homeroom-token -- --user alice --role teacher
  Logs            $LOGS/
Press Ctrl-C to stop.
MSG
wait
