#!/usr/bin/env bash
# Regenerates docs/img/overview.png from real demo data: starts Mosquitto and InfluxDB on free
# loopback ports in a temp dir, runs sitewatch with deploy/demo/sitewatch.toml, publishes the
# demo traffic (deploy/demo/publish.sh) and renders what InfluxDB then holds with
# examples/render_overview.rs. Needs the demo's Debian packages (see deploy/demo.sh) and
# fonts-dejavu-core (or FONT=/path/to/font.ttf).
# Usage: bash docs/img/render-overview.sh          (DEMO_SECONDS=90 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
DEMO_SECONDS=${DEMO_SECONDS:-90}
font_args=(); [ -n "${FONT:-}" ] && font_args=(--font "$FONT")
export PATH="$PATH:/usr/sbin:/sbin"

cargo build --release --locked --quiet --bin sitewatch --example render_overview
work=$(mktemp -d -t sitewatch-render.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { local p; while :; do p=$((20000 + RANDOM % 40000)); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done; echo "$1 did not start: $(cat "$3")" >&2; exit 1; }

mqtt=$(free_port); influx=$(free_port); rpc=$(free_port); metrics=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\nmax_queued_messages 100000\n' "$mqtt" > "$work/mosquitto.conf"
[ "$(id -u)" -eq 0 ] && echo "user root" >> "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & pids+=($!)
cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$work/influxdb/meta"
[data]
  dir = "$work/influxdb/data"
  wal-dir = "$work/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$influx"
  log-enabled = false
[logging]
  level = "warn"
CONF
influxd -config "$work/influxdb.conf" >"$work/influxd.log" 2>&1 & pids+=($!)
wait_port mosquitto "$mqtt" "$work/mosquitto.log"
wait_port influxd "$influx" "$work/influxd.log"
curl -sf -XPOST "http://127.0.0.1:$influx/query" --data-urlencode "q=CREATE DATABASE sitewatch" >/dev/null

sed -e "s/@MQTT_PORT@/$mqtt/; s/@INFLUX_PORT@/$influx/; s/@METRICS_PORT@/$metrics/" \
  deploy/demo/sitewatch.toml > "$work/sitewatch.toml"
cp -r deploy/rules "$work/rules"
target/release/sitewatch run --config "$work/sitewatch.toml" >"$work/sitewatch.log" 2>&1 & sw=$!; pids+=($sw)
wait_port sitewatch "$metrics" "$work/sitewatch.log"
echo "==> publishing $DEMO_SECONDS s of demo traffic"
deploy/demo/publish.sh 127.0.0.1 "$mqtt" "$DEMO_SECONDS"
kill -TERM "$sw"; wait "$sw" || { cat "$work/sitewatch.log"; exit 1; }

target/release/examples/render_overview --influx "http://127.0.0.1:$influx" \
  --out docs/img/overview.png "${font_args[@]}"
