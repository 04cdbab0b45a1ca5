#!/usr/bin/env bash
# Rookery against Mosquitto on this machine, interleaved, with medians and ratios.
#
#   examples/compare.sh > comparison.md
#
# Each run starts a fresh broker on a free loopback port, runs examples/bench against
# it with --broker-pid (so the broker's CPU time is read from /proc/PID/stat over the
# measured window, and for `conn` its VmRSS), then stops it. Runs alternate
# Mosquitto, Rookery, Mosquitto, Rookery, … for ROUNDS rounds per scenario, so a
# noisy neighbour hurts both brokers alike. The Markdown table goes to stdout;
# progress and the path of the raw JSON lines go to stderr.
#
# Environment:
#   ROUNDS=3           runs per broker and scenario
#   DURATION=10s       publishing time of each message scenario
#   VERSION=4          MQTT protocol level for every scenario (3, 4 or 5)
#   PAYLOAD=64         payload bytes
#   INFLIGHT=100       QoS 1/2 window per publisher
#   CONNECTIONS=10000  idle connections in the default `conn` scenario
#   BENCH_ARGS=        extra arguments for every bench run
#   SCENARIOS=         one scenario per line, "label|bench arguments"; default below
#   MOSQUITTO=/usr/sbin/mosquitto
#   ROOKERY_ENV=       environment for Rookery; default raises its queue and in-flight
#                      limits to match the Mosquitto settings below (nothing dropped
#                      on purpose)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
VERSION=${VERSION:-4}
PAYLOAD=${PAYLOAD:-64}
INFLIGHT=${INFLIGHT:-100}
CONNECTIONS=${CONNECTIONS:-10000}
BENCH_ARGS=${BENCH_ARGS:-}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
ROOKERY_ENV=${ROOKERY_ENV:-ROOKERY_LIMITS__MAX_QUEUED_MESSAGES=0 ROOKERY_LIMITS__MAX_INFLIGHT=65535 ROOKERY_LIMITS__RECEIVE_MAXIMUM=65535}
SCENARIOS=${SCENARIOS:-"QoS 0 fan-in 16→1|--scenario fanin --qos 0 --publishers 16 --subscribers 1
QoS 1 fan-in 16→1|--scenario fanin --qos 1 --publishers 16 --subscribers 1
QoS 2 fan-in 16→1|--scenario fanin --qos 2 --publishers 16 --subscribers 1
QoS 1, 50 pairs|--scenario pairs --qos 1 --publishers 50
QoS 0 fan-out 1→100|--scenario fanout --qos 0 --publishers 1 --subscribers 100
QoS 1 fan-in 16→1 at 8k msgs/s (latency)|--scenario fanin --qos 1 --publishers 16 --rate 8000
idle connections|--scenario conn --connections $CONNECTIONS"}

cd "$(dirname "$0")/.."
cargo build --release --bin rookery --example bench >&2
bench=target/release/examples/bench
rookery=target/release/rookery

work=$(mktemp -d -t rookery-compare.XXXXXX)
results="$work/results.jsonl"
: >"$results"
broker_pid=

stop_broker() {
    if [[ -n $broker_pid ]]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
        broker_pid=
    fi
}
trap stop_broker EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "broker did not start listening on port $1; see $work" >&2
    return 1
}

# start_broker NAME RUN: sets $port and $broker_pid.
start_broker() {
    port=$(free_port)
    case $1 in
    mosquitto)
        cat >"$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_inflight_messages 0
persistence false
max_connections -1
EOF
        "$MOSQUITTO" -c "$work/mosquitto.conf" >"$work/mosquitto-$2.log" 2>&1 &
        ;;
    rookery)
        env $ROOKERY_ENV "$rookery" --listen "127.0.0.1:$port" --data-dir "$work/rookery-data-$2" \
            >"$work/rookery-$2.log" 2>&1 &
        ;;
    esac
    broker_pid=$!
    wait_for_port "$port"
}

common=(--version "$VERSION" --payload "$PAYLOAD" --inflight "$INFLIGHT" --duration "$DURATION")
echo "raw results: $results" >&2
run=0
while IFS='|' read -r label args; do
    [[ -z $label ]] && continue
    for round in $(seq "$ROUNDS"); do
        for broker in mosquitto rookery; do
            run=$((run + 1))
            start_broker "$broker" "$run"
            echo "[$label] round $round/$ROUNDS: $broker on port $port" >&2
            # shellcheck disable=SC2086 # $args and $BENCH_ARGS are word lists
            line=$("$bench" --port "$port" --broker-pid "$broker_pid" --json "${common[@]}" \
                $args $BENCH_ARGS 2>>"$work/bench.log" | tail -n 1) || true
            stop_broker
            LABEL=$label BROKER=$broker ROUND=$round LINE=$line python3 -c '
import json, os
try:
    row = json.loads(os.environ["LINE"])
except ValueError:
    row = {"error": "no report from the generator"}
row.update(label=os.environ["LABEL"], broker=os.environ["BROKER"], round=int(os.environ["ROUND"]))
print(json.dumps(row, ensure_ascii=False))' >>"$results"
            tail -n 1 "$results" | python3 -c '
import json, sys
r = json.load(sys.stdin)
if r.get("error"):
    print("  error:", r["error"], file=sys.stderr)
elif r.get("scenario") == "conn":
    print("  %.0f connections/s, %s B/connection" % (r.get("connect_rate_per_s", 0), r.get("broker_rss_per_connection_bytes")), file=sys.stderr)
else:
    print("  %.0f msgs/s, p50 %.0f µs, p99 %.0f µs, lost %d, dup %d, ooo %d" % (r["msgs_per_s"], r["p50_us"], r["p99_us"], r["lost"], r["duplicated"], r["out_of_order"]), file=sys.stderr)'
        done
    done
done <<<"$SCENARIOS"

mosquitto_version=$("$MOSQUITTO" -h 2>/dev/null | head -n 1 || true)
rookery_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cpu_model=$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
export ROUNDS DURATION VERSION PAYLOAD INFLIGHT mosquitto_version rookery_rev cpu_model
export CORES=$(nproc)
python3 - "$results" <<'EOF'
import json, os, statistics, sys, time

rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
labels = list(dict.fromkeys(r["label"] for r in rows))
env = os.environ

def runs(label, broker):
    return [r for r in rows if r["label"] == label and r["broker"] == broker and not r.get("error")]

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def med(label, broker, field):
    return median([r.get(field) for r in runs(label, broker)])

def fmt(value, digits=0, short=True):
    if value is None:
        return "–"
    if short and digits == 0 and abs(value) >= 10_000:
        return f"{value / 1000:,.0f}k"
    return f"{value:,.{digits}f}"

def latency(label, broker):
    p50, p99 = (med(label, broker, f) for f in ("p50_us", "p99_us"))
    return f"{fmt(p50, short=False)} / {fmt(p99, short=False)}"

def ratio(a, b):
    return f"{b / a:.2f}×" if a and b is not None else "–"

def failures(label):
    bad = [r for r in rows if r["label"] == label and r.get("error")]
    return f" ({len(bad)} failed runs)" if bad else ""

print(f"Measured {time.strftime('%Y-%m-%d')} on {env['CORES']} cores ({env['cpu_model']}), "
      f"loopback, generator on the same machine. {env['mosquitto_version']} vs Rookery {env['rookery_rev']}. "
      f"Medians of {env['ROUNDS']} interleaved runs; MQTT level {env['VERSION']}, {env['PAYLOAD']} B payloads, "
      f"{env['DURATION']} of publishing, window {env['INFLIGHT']} per publisher. "
      "CPU-s/M: broker CPU seconds (utime+stime) per million delivered messages.")
print()
print("| scenario | Mosquitto msgs/s | Rookery msgs/s | Rookery/Mosquitto | CPU-s/M Mosquitto | CPU-s/M Rookery "
      "| p50 / p99 µs Mosquitto | p50 / p99 µs Rookery | lost / dup / ooo M · R | generator CPU s M · R |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for label in labels:
    if any(r.get("scenario") == "conn" for r in runs(label, "mosquitto") + runs(label, "rookery")):
        continue
    m, k = (med(label, b, "msgs_per_s") for b in ("mosquitto", "rookery"))
    integrity = " · ".join(
        "/".join(str(sum(r.get(f, 0) for r in runs(label, b))) for f in ("lost", "duplicated", "out_of_order"))
        for b in ("mosquitto", "rookery"))
    print(f"| {label}{failures(label)} | {fmt(m)} | {fmt(k)} | {ratio(m, k)} "
          f"| {fmt(med(label, 'mosquitto', 'broker_cpu_s_per_million'), 2)} "
          f"| {fmt(med(label, 'rookery', 'broker_cpu_s_per_million'), 2)} "
          f"| {latency(label, 'mosquitto')} | {latency(label, 'rookery')} "
          f"| {integrity} "
          f"| {fmt(med(label, 'mosquitto', 'bench_cpu_s'), 1)} · {fmt(med(label, 'rookery', 'bench_cpu_s'), 1)} |")

conn = [l for l in labels if any(r.get("scenario") == "conn" for r in runs(l, "mosquitto") + runs(l, "rookery"))]
if conn:
    print()
    print("| scenario | connections | Mosquitto connects/s | Rookery connects/s | Rookery/Mosquitto "
          "| RSS per idle connection Mosquitto | RSS per idle connection Rookery |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in conn:
        m, k = (med(label, b, "connect_rate_per_s") for b in ("mosquitto", "rookery"))
        count = med(label, "mosquitto", "connections") or med(label, "rookery", "connections")
        print(f"| {label}{failures(label)} | {fmt(count, short=False)} | {fmt(m)} | {fmt(k)} | {ratio(m, k)} "
              f"| {fmt(med(label, 'mosquitto', 'broker_rss_per_connection_bytes'), short=False)} B "
              f"| {fmt(med(label, 'rookery', 'broker_rss_per_connection_bytes'), short=False)} B |")
EOF
echo "raw results and broker logs: $work" >&2
