#!/usr/bin/env bash
# Runs the benchmark scenarios of BENCHMARKS.md against two release binaries,
# interleaved (A, B, A, B, ...) on the same machine, so a difference can be
# told from the noise between two runs of one build.
#
#   scripts/bench-compare.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# Each run starts a fresh server on 127.0.0.1:8080 (a fresh data directory
# for the durable scenario), runs one `bench` invocation of the NEW binary's
# load generator against it, prints the report, and stops the server.
set -euo pipefail
old=${1:?old binary}
new=${2:?new binary}
rounds=${3:-2}
secret=benchsecret0123456789abcdef0123456789
load=$new

run() {
  local bin=$1 scenario=$2 data
  data=$(mktemp -d)
  case $scenario in
    ops-memory) "$bin" serve --store memory --jwt-secret $secret --messages-per-second 0 --log warn & ;;
    ops-durable) "$bin" serve --data-dir "$data" --jwt-secret $secret --messages-per-second 0 --log warn & ;;
    fanout) "$bin" serve --store memory --jwt-secret $secret --messages-per-second 0 --log warn & ;;
    handshake) "$bin" serve --store memory --jwt-secret $secret --max-connections 20000 --log warn & ;;
  esac
  local pid=$!
  for _ in $(seq 50); do curl -fs http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break; sleep 0.1; done
  echo "== $scenario: $bin"
  case $scenario in
    ops-*) "$load" bench ops --token-secret $secret --writers 50 --batch 10 --duration 15s ;;
    fanout) "$load" bench fanout --token-secret $secret --subscribers 1000 --publishers 1 --duration 10s --server-pid "$pid" ;;
    handshake) "$load" bench handshake --token-secret $secret --connections 20000 --concurrency 64 --server-pid "$pid" --reference ;;
  esac
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
}

for round in $(seq "$rounds"); do
  for scenario in ops-memory ops-durable fanout handshake; do
    echo "## round $round"
    run "$old" "$scenario"
    run "$new" "$scenario"
  done
done
