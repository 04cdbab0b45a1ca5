#!/usr/bin/env bash
# Rookery across cluster nodes against Rookery alone, on this machine, interleaved,
# with medians: what a message pays to cross nodes through NATS JetStream.
#
#   examples/cluster_bench.sh > cluster.md
#
# Starts three nats-server processes (one JetStream cluster, every stream and
# bucket in 3 copies) and two Rookery nodes on them, plus a Rookery without
# [cluster]. Each scenario runs in three setups, round after round:
#   single      publishers and subscribers on the Rookery without [cluster]
#   same node   both on cluster node 1 (local delivery; each message still goes
#               to the stream, which drops it: no other node is interested)
#   cross-node  publishers on node 1, subscribers on node 2
# and reports msgs/s, p50/p99 latency, and CPU seconds per million deliveries of
# each Rookery node and of the three NATS servers together. Everything shares
# the machine's cores: report, do not extrapolate to separate machines.
#
# The throughput runs send a fixed number of messages, not for a fixed time: a
# node takes publishes faster than JetStream takes them from it (the PUBACK does
# not wait for the stream), so a timed run at full speed measures how much waits
# in the node's outbox, not what crosses. msgs/s is deliveries over the time from
# the first publish to the last delivery. After each cluster run, one message
# sent across waits until everything before it is through.
#
# Environment:
#   ROUNDS=3        runs per setup and scenario
#   SCENARIOS=      one per line, "label|bench arguments"; default below
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"QoS 1 fan-in 16→1|--scenario fanin --qos 1 --publishers 16 --subscribers 1 --messages 2500
QoS 1, 50 pairs|--scenario pairs --qos 1 --publishers 50 --messages 800
QoS 1 fan-in 16→1 at 8k msgs/s (latency)|--scenario fanin --qos 1 --publishers 16 --rate 8000 --duration 5s"}

cd "$(dirname "$0")/.."
command -v nats-server >/dev/null || { echo "nats-server not found (>= 2.10 needed)" >&2; exit 1; }
cargo build --release --bin rookery --example bench >&2
bench=target/release/examples/bench
rookery=target/release/rookery

work=$(mktemp -d -t rookery-cluster-bench.XXXXXX)
results="$work/results.jsonl"
: >"$results"
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Three NATS servers, clustered.
nats_ports=() route_ports=() nats_pids=()
for i in 0 1 2; do nats_ports+=("$(free_port)"); route_ports+=("$(free_port)"); done
routes=$(printf 'nats://127.0.0.1:%s,' "${route_ports[@]}")
routes=${routes%,}
for i in 0 1 2; do
    nats-server -a 127.0.0.1 -p "${nats_ports[$i]}" -js -n "nats-$i" -sd "$work/nats-$i" \
        --cluster_name bench --cluster "nats://127.0.0.1:${route_ports[$i]}" --routes "$routes" \
        >"$work/nats-$i.log" 2>&1 &
    pids+=($!)
    nats_pids+=($!)
done

# Rookery: node 1 and node 2 of the cluster, and one alone. Limits raised as
# examples/compare.sh does, so that nothing is dropped on purpose.
export ROOKERY_LIMITS__MAX_QUEUED_MESSAGES=0 ROOKERY_LIMITS__MAX_INFLIGHT=65535 ROOKERY_LIMITS__RECEIVE_MAXIMUM=65535
start_rookery() { # name port [nats-port]
    local name=$1 port=$2 nats=${3:-}
    {
        printf '[[listeners]]\nbind = "127.0.0.1:%s"\n\n[storage]\ndir = "%s"\n' "$port" "$work/$name"
        if [[ -n $nats ]]; then
            printf '\n[cluster]\nnats = ["nats://127.0.0.1:%s"]\nnode_id = "%s"\nreplicas = 3\n' "$nats" "$name"
        fi
    } >"$work/$name.toml"
    ROOKERY_LOG=warn "$rookery" --config "$work/$name.toml" >/dev/null 2>"$work/$name.log" &
    pids+=($!)
    started=$!
}
port_single=$(free_port) port_1=$(free_port) port_2=$(free_port)
start_rookery single "$port_single"
pid_single=$started
start_rookery node-1 "$port_1" "${nats_ports[0]}"
pid_1=$started
start_rookery node-2 "$port_2" "${nats_ports[1]}"
pid_2=$started

# A QoS 1 message from node 1 to node 2: it leaves node 1 behind everything
# node 1 published before it, so its arrival says the stream has taken those.
across() {
    "$bench" --scenario pairs --qos 1 --publishers 1 --messages 1 --drain "$1" \
        --publish-to "127.0.0.1:$port_1" --subscribe-to "127.0.0.1:$port_2" --json \
        2>/dev/null | grep -q '"lost":0'
}
echo "waiting for the cluster…" >&2
for _ in $(seq 60); do
    if across 1s; then
        ready=1
        break
    fi
    sleep 1
done
[[ -n ${ready:-} ]] || { echo "the cluster did not come up; logs in $work" >&2; exit 1; }

nats_pid_args=()
for pid in "${nats_pids[@]}"; do nats_pid_args+=(--broker-pid "$pid"); done

run() { # label setup arguments...
    local label=$1 setup=$2
    shift 2
    local line
    line=$("$bench" "$@" --drain 20s --json 2>/dev/null || true)
    [[ -n $line ]] || line='{"error":"bench failed"}'
    printf '{"label":"%s","setup":"%s","run":%s}\n' "$label" "$setup" "$line" >>"$results"
    echo "  $setup: $(sed -E 's/.*"msgs_per_s":([0-9.]+).*"lost":([0-9]+).*/\1 msgs\/s, \2 lost/' <<<"$line")" >&2
    if [[ $setup != single ]]; then
        across 60s || echo "  (node 1's outbox did not drain within 60 s)" >&2
    fi
}

while IFS='|' read -r label arguments; do
    [[ -n $label ]] || continue
    read -r -a args <<<"$arguments"
    for round in $(seq "$ROUNDS"); do
        echo "$label, round $round" >&2
        run "$label" single "${args[@]}" --port "$port_single" --broker-pid "$pid_single"
        run "$label" "same node" "${args[@]}" --port "$port_1" \
            --broker-pid "$pid_1" --broker-pid "$pid_2" "${nats_pid_args[@]}"
        run "$label" cross-node "${args[@]}" \
            --publish-to "127.0.0.1:$port_1" --subscribe-to "127.0.0.1:$port_2" \
            --broker-pid "$pid_1" --broker-pid "$pid_2" "${nats_pid_args[@]}"
    done
done <<<"$SCENARIOS"

echo "raw results: $results" >&2
python3 - "$results" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    entry = json.loads(line)
    rows.setdefault((entry["label"], entry["setup"]), []).append(entry["run"])
def median(runs, pick):
    values = [v for v in (pick(r) for r in runs) if v is not None]
    return statistics.median(values) if values else None
def fmt(value, digits=0):
    return "—" if value is None else f"{value:,.{digits}f}"
print("| Scenario | Setup | msgs/s | p50 µs | p99 µs | CPU s/M: node 1 | node 2 | NATS (3 servers) | lost |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for (label, setup), runs in rows.items():
    each = lambda i: median(runs, lambda r: (r.get("broker_cpu_s_per_million_each") or [None] * 5)[i])
    if setup == "single":
        node1, node2, nats = median(runs, lambda r: r.get("broker_cpu_s_per_million")), None, None
    else:
        node1, node2 = each(0), each(1)
        nats = median(runs, lambda r: sum((r.get("broker_cpu_s_per_million_each") or [0] * 5)[2:]) or None)
    lost = sum(r.get("lost", 0) for r in runs)
    print(f"| {label} | {setup} | {fmt(median(runs, lambda r: r.get('msgs_per_s')))} | "
          f"{fmt(median(runs, lambda r: r.get('p50_us')))} | {fmt(median(runs, lambda r: r.get('p99_us')))} | "
          f"{fmt(node1, 2)} | {fmt(node2, 2)} | {fmt(nats, 2)} | {lost} |")
print(f"\nMedians of {len(next(iter(rows.values())))} runs per row.")
EOF
