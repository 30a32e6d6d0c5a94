#!/usr/bin/env bash
# Three syncgate nodes on loopback (ws://127.0.0.1:8081/ws, :8082, :8083)
# sharing the local Postgres and NATS: what `syncgate serve --store
# postgres://… --backplane nats://…` looks like as a cluster. Ctrl-C stops all.
#
#   SYNCGATE_BIN       the binary            [target/release/syncgate]
#   POSTGRES_URL       the shared store      [postgres://postgres@127.0.0.1:5432/test]
#   NATS_URL           the backplane         [nats://127.0.0.1:4222]
#   SYNCGATE_JWT_SECRET, SYNCGATE_CLUSTER_SECRET, SYNCGATE_ADMIN_TOKEN
#                      development values unless set
# Extra arguments are passed to every node (e.g. --rules rules.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${SYNCGATE_BIN:-target/release/syncgate}"
[ -x "$bin" ] || cargo build --release --bin syncgate
postgres="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
nats="${NATS_URL:-nats://127.0.0.1:4222}"
export SYNCGATE_JWT_SECRET="${SYNCGATE_JWT_SECRET:-dev-secret-change-me-0123456789abcdef}"
export SYNCGATE_CLUSTER_SECRET="${SYNCGATE_CLUSTER_SECRET:-dev-cluster-secret-change-me-0123}"
export SYNCGATE_ADMIN_TOKEN="${SYNCGATE_ADMIN_TOKEN:-dev-admin-token-change-me-0123456789ab}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for n in 1 2 3; do
  "$bin" serve --listen "127.0.0.1:808$n" --store "$postgres" --backplane "$nats" \
    --node-id "node-$n" "$@" &
  pids+=("$!")
done
echo "three nodes: ws://127.0.0.1:8081/ws ws://127.0.0.1:8082/ws ws://127.0.0.1:8083/ws"
echo "live nodes:  curl -H 'Authorization: Bearer $SYNCGATE_ADMIN_TOKEN' http://127.0.0.1:8081/admin/nodes"
wait
