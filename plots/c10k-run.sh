#!/usr/bin/env bash
# A C10K run for plots/: comet-server + 10,000 floodtest connections + 1,000 msg/s from msggen, with memlog
# recording the server every 2 s. Bounded (about 6 minutes); ends only the processes it started, by PID.
# Run from the repository root after `npm run build`, one heavy run at a time:
#   flock /tmp/c1m-bench.lock bash plots/c10k-run.sh [name]
set -euo pipefail
name=${1:-c10k-$(date -u +%Y%m%d-%H%M)}
out=plots/$name
port=${PORT:-28000}
control=${CONTROL_PORT:-28001}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

{
  echo "# run $name: $(date -u +%FT%TZ) host $(hostname) $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# node $(node --version); server flags --max-semi-space-size=1 --optimize-for-size"
} > "$out.machine.txt"

node --max-semi-space-size=1 --optimize-for-size dist/server/cli.js --host 127.0.0.1 --port "$port" --control-port "$control" 2> "$work/server.err" &
server=$!
pids+=("$server")
for _ in $(seq 100); do grep -q 'listening port=' "$work/server.err" && break; sleep 0.1; done
grep 'listening port=' "$work/server.err"

# Record from the start (idle), every 2 s; memlog stops by itself when the server exits.
node dist/memlog/cli.js record --pid "$server" --port "$port" --interval 2s -o "$out.log" -q 2> "$work/memlog.err" &
memlog=$!
pids+=("$memlog")
sleep 20

node dist/floodtest/cli.js urls --base "http://127.0.0.1:$port/test/" --count 10000 --out "$work/urls.txt"
# 10,000 connections at one every 5 ms (≈50 s ramp), held for 4 min 30 s in total.
node dist/floodtest/cli.js "$work/urls.txt" 5 --duration 270s > "$out.floodtest.txt" 2>&1 &
flood=$!
pids+=("$flood")
sleep 60

# 1,000 msg/s (10 workers × 100/s) to random ids 1..10000 for 3 minutes, as in the seed's run.
node dist/msggen/cli.js --procs 10 --rate 100 --max 10000 --duration 180s --target "http://127.0.0.1:$control" --quiet > "$out.msggen.txt" 2>&1 || true
curl -s "http://127.0.0.1:$control/stats" > "$out.stats.json" || true

wait "$flood" || true
sleep 20   # connections closed: does memory come back?
kill -TERM "$server"
wait "$server" || true
wait "$memlog" || true
cat "$work/memlog.err"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out.machine.txt"
node dist/memlog/cli.js summary "$out.log" | tee "$out.summary.txt"
node dist/memlog/cli.js plot "$out.log" --out "$out.png" --svg --no-ascii \
  --title "Mem usage with 10k active connections, 1000 msg/sec" \
  --subtitle "c1m comet-server, Node $(node --version) --max-semi-space-size=1 --optimize-for-size, $(date -u +%F)
floodtest 10,000 conns at 200/s; msggen 1,000 msg/s for 3 min; memlog every 2 s"
