#!/usr/bin/env bash
# Instructions per unit of work (handshake, fan-out delivery, op), counted by
# `valgrind --tool=callgrind` on the release server.
#
#   scripts/instructions.sh [WORKLOAD...]
#
# Wall-clock figures move by ±15 % between runs on two shared cores; the
# instruction count of the same binary and inputs moves by about 0.1 %. Each
# workload runs twice, with a LOW and a HIGH amount of work, each time on a
# fresh server under callgrind; (total(HIGH) − total(LOW)) / (units(HIGH) −
# units(LOW)) is the cost of one unit with start-up, connection set-up and
# shutdown cancelled out. Callgrind counts user-space instructions only: the
# kernel's share (system calls, fsync) is not in the figures.
#
# Workloads (all by default, in this order):
#   handshake-jwt        HS256 token in AUTH, 4 concurrent clients, 500 vs 1,500 handshakes
#   handshake-token      static-token mode, same counts
#   reference-verify     the bare fastwebsockets server checking the HS256 token (`bench reference --verify-secret`)
#   reference            the bare fastwebsockets server acknowledging anything
#   fanout-200           1 publisher → 200 subscribers, 500 vs 1,500 messages (unit: one delivery)
#   fanout-1000          1 publisher → 1,000 subscribers, 100 vs 300 messages
#   ops-memory           10 writers, batches of 10, 2,000 vs 6,000 ops (unit: one op)
#   ops-durable          the same on the disk store (SQLite, durability full)
#
# Environment: SKIP_BUILD=1 uses target/release/syncgate as it is (BIN=PATH: another binary); KEEP=DIR
# keeps the callgrind files there (for `callgrind_annotate --inclusive=yes`);
# PORT (default 18480) is where the measured server listens.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --bin syncgate >&2
bin=${BIN:-target/release/syncgate}
secret=benchsecret0123456789abcdef0123456789
static_token=benchstatictoken0123456789
port=${PORT:-18480}
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
url="ws://127.0.0.1:$port/ws"

# The server command of a workload ($1), for a data directory ($2).
server_command() {
  local common=(--listen "127.0.0.1:$port" --log warn --messages-per-second 0
    --max-connections-per-ip 0 --max-unauthenticated-per-ip 0)
  case $1 in
    handshake-jwt | fanout-* | ops-memory) echo "$bin serve --store memory --jwt-secret $secret ${common[*]}" ;;
    handshake-token) echo "$bin serve --store memory --auth token --token $static_token ${common[*]}" ;;
    ops-durable) echo "$bin serve --data-dir $2 --durability full --jwt-secret $secret ${common[*]}" ;;
    reference-verify) echo "$bin bench reference --listen 127.0.0.1:$port --verify-secret $secret" ;;
    reference) echo "$bin bench reference --listen 127.0.0.1:$port" ;;
  esac
}

# The LOW and HIGH amounts of workload $1, in the load generator's own unit.
amounts() {
  case $1 in
    handshake-* | reference*) echo "500 1500" ;;
    fanout-200) echo "500 1500" ;;
    fanout-1000) echo "100 300" ;;
    ops-*) echo "20 60" ;; # batches per writer
  esac
}

# Units of work done by amount $2 of workload $1 (what one instruction figure is "per").
units() {
  case $1 in
    handshake-* | reference*) echo "$2" ;;
    fanout-200) echo $(($2 * 200)) ;;
    fanout-1000) echo $(($2 * 1000)) ;;
    ops-*) echo $(($2 * 10 * 10)) ;;
  esac
}

unit_name() {
  case $1 in
    handshake-* | reference*) echo handshake ;;
    fanout-*) echo delivery ;;
    ops-*) echo op ;;
  esac
}

# Runs the load of workload $1 with amount $2 against the measured server.
load() {
  case $1 in
    handshake-jwt | reference-verify) "$bin" bench handshake --url "$url" --token-secret $secret --connections "$2" --concurrency 4 ;;
    handshake-token | reference) "$bin" bench handshake --url "$url" --token $static_token --connections "$2" --concurrency 4 ;;
    fanout-200) "$bin" bench fanout --url "$url" --token-secret $secret --subscribers 200 --publishers 1 --messages "$2" --duration 600s ;;
    fanout-1000) "$bin" bench fanout --url "$url" --token-secret $secret --subscribers 1000 --publishers 1 --messages "$2" --duration 600s ;;
    ops-*) "$bin" bench ops --url "$url" --token-secret $secret --writers 10 --batch 10 --batches "$2" --duration 600s ;;
  esac
}

# Waits until the server under callgrind accepts connections (slow to start).
wait_listening() {
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the server did not start listening on $port" >&2
  return 1
}

# Total instructions of one run: workload $1, amount $2.
count() {
  local workload=$1 amount=$2 data file pid
  data=$(mktemp -d)
  file="$out/$workload.$amount.callgrind"
  # shellcheck disable=SC2046 # the server command is split into words on purpose
  valgrind --tool=callgrind --callgrind-out-file="$file" $(server_command "$workload" "$data") \
    >"$out/$workload.$amount.server.log" 2>&1 &
  pid=$!
  wait_listening
  load "$workload" "$amount" >"$out/$workload.$amount.load.log" 2>&1 ||
    { echo "$workload $amount: the load failed:" >&2; cat "$out/$workload.$amount.load.log" >&2; kill -TERM "$pid"; exit 1; }
  # SIGTERM (a background job ignores SIGINT): the server shuts down gracefully, the reference just
  # ends; callgrind writes its file either way.
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(handshake-jwt handshake-token reference-verify reference fanout-200 fanout-1000 ops-memory ops-durable)

printf '%-18s %8s %8s %16s %16s %14s\n' workload low high "Ir(low)" "Ir(high)" "Ir per unit"
for workload in "${workloads[@]}"; do
  [ -n "$(amounts "$workload")" ] || { echo "unknown workload: $workload" >&2; exit 2; }
  read -r low high <<<"$(amounts "$workload")"
  ir_low=$(count "$workload" "$low")
  ir_high=$(count "$workload" "$high")
  per_unit=$(((ir_high - ir_low) / ($(units "$workload" "$high") - $(units "$workload" "$low"))))
  printf '%-18s %8s %8s %16s %16s %10s per %s\n' "$workload" "$low" "$high" "$ir_low" "$ir_high" "$per_unit" "$(unit_name "$workload")"
done
echo "callgrind files and logs: $out" >&2
