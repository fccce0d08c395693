#!/usr/bin/env bash
# The demo: the whole flow on local services. Installs what is missing (Debian packages),
# starts Mosquitto and InfluxDB on free loopback ports in a temp dir, builds and runs
# sitewatch with deploy/demo/sitewatch.toml, publishes a minute of facility sensor traffic,
# then prints what landed in InfluxDB and which events fired. Ctrl-C stops everything.
# Usage: bash deploy/demo.sh            (DEMO_SECONDS=60 by default)
#        bash deploy/demo.sh -- CMD...  also runs CMD on the ingested data before everything
#                                       stops, with SITEWATCH_DEMO_INFLUX_URL and
#                                       SITEWATCH_DEMO_CONFIG (the demo's config) set (used
#                                       by docs/img/render-overview.sh and
#                                       deploy/demo/report-screenshot.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
DEMO_SECONDS=${DEMO_SECONDS:-60}
after=()
if [ "${1:-}" = "--" ]; then shift; after=("$@"); fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
# protoc and the well-known protos: the etcd client (cluster mode) compiles its protos.
for pair in influxd:influxdb mosquitto:mosquitto mosquitto_pub:mosquitto-clients curl:curl python3:python3 protoc:protobuf-compiler; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
# The font of the incident report's plots (`sitewatch report`, src/report/plot.rs).
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ -e /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    echo 'exit 101' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ "$own_policy" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust 1.85 or newer with rustup (Debian 12's cargo package is too old)" >&2; exit 1; }

echo "==> building sitewatch (release)"
cargo build --release --locked --quiet
# cargo puts the binary under $CARGO_TARGET_DIR when it is set.
bin=${CARGO_TARGET_DIR:-$repo/target}/release/sitewatch

work=$(mktemp -d -t sitewatch-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "==> interrupted, stopping everything"; exit 130' INT TERM

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
wait_port() { # name port log
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "$1 did not start; its log:" >&2; cat "$3" >&2; exit 1
}

mqtt_port=$(free_port); influx_port=$(free_port); rpc_port=$(free_port); metrics_port=$(free_port)
hook_port=$(free_port)

cat > "$work/mosquitto.conf" <<CONF
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/
max_inflight_messages 1000
max_queued_messages 100000
CONF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & pids+=($!)

mkdir -p "$work/influxdb"
cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc_port"
[meta]
  dir = "$work/influxdb/meta"
[data]
  dir = "$work/influxdb/data"
  wal-dir = "$work/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$influx_port"
  log-enabled = false
[logging]
  level = "warn"
CONF
influxd -config "$work/influxdb.conf" >"$work/influxd.log" 2>&1 & pids+=($!)
wait_port mosquitto "$mqtt_port" "$work/mosquitto.log"
wait_port influxd "$influx_port" "$work/influxd.log"
influx_url="http://127.0.0.1:$influx_port"
curl -sf -XPOST "$influx_url/query" --data-urlencode "q=CREATE DATABASE sitewatch" >/dev/null
echo "==> mosquitto on 127.0.0.1:$mqtt_port, influxd on 127.0.0.1:$influx_port (data in $work)"

: > "$work/webhooks.jsonl"
python3 "$repo/deploy/demo/webhook.py" "$hook_port" "$work/webhooks.jsonl" & pids+=($!)
sed -e "s/@MQTT_PORT@/$mqtt_port/; s/@INFLUX_PORT@/$influx_port/; s/@METRICS_PORT@/$metrics_port/; s/@HOOK_PORT@/$hook_port/g" \
  "$repo/deploy/demo/sitewatch.toml" > "$work/sitewatch.toml"
cp -r "$repo/deploy/rules" "$work/rules"
"$bin" check --config "$work/sitewatch.toml"
"$bin" run --config "$work/sitewatch.toml" >"$work/sitewatch.log" 2>&1 & sw_pid=$!; pids+=($sw_pid)
wait_port sitewatch "$metrics_port" "$work/sitewatch.log"
echo "==> sitewatch running (self-metrics: http://127.0.0.1:$metrics_port/metrics)"

echo "==> publishing $DEMO_SECONDS s of facility sensor traffic (4 racks, a leak sensor, 2 PDUs)"
"$repo/deploy/demo/publish.sh" 127.0.0.1 "$mqtt_port" "$DEMO_SECONDS" & pub_pid=$!; pids+=($pub_pid)
SITEWATCH_API_TOKEN=demo-token-not-for-production \
  "$repo/deploy/demo/respond.sh" "$bin" "$metrics_port" "$DEMO_SECONDS" & pids+=($!)
wait "$pub_pid"
sleep 2   # the last resolves reach the webhooks

curl -sf "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt" || true
echo "==> stopping sitewatch (flushes what it buffered)"
kill -TERM "$sw_pid"; wait "$sw_pid" || { echo "sitewatch exited with an error; its log:"; cat "$work/sitewatch.log"; exit 1; }

q() { curl -sfG "$influx_url/query" -H 'Accept: application/csv' --data-urlencode "db=sitewatch" --data-urlencode "q=$1" | sed 's/^/    /'; }
echo
echo "==> what landed in InfluxDB"
echo "  series:"; q "SHOW SERIES"
echo "  points per measurement:"
q "SELECT count(temperature_c) FROM environment"
q "SELECT count(leak) FROM leak"
q "SELECT count(current_a) FROM pdu_phase"
echo "  last values per rack:"
q "SELECT last(temperature_c) AS temperature_c, last(humidity_pct) AS humidity_pct FROM environment GROUP BY rack"
echo "  events (rule state changes, acknowledgements, escalations):"
q "SELECT rule, severity, state, value, threshold, message FROM events"
echo "  response times (resolved alerts):"
q "SELECT rule, acked_by, time_to_ack_s, time_to_resolve_s FROM events WHERE state = 'resolved'"
echo "  what the webhooks were told (receiver, status, count):"
python3 - "$work/webhooks.jsonl" <<'PY' | sed 's/^/    /'
import collections, json, sys
seen = collections.Counter()
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    for a in r["body"].get("alerts", []):
        seen[(r["path"].strip("/"), a["status"])] += 1
for (path, status), n in sorted(seen.items()):
    print(f"{path:13} {status:13} {n}")
PY
echo
echo "==> sitewatch's own metrics before shutdown (full set at /metrics):"
grep -E '^sitewatch_(mqtt_messages_total|mqtt_decode_errors_total|influx_points_written_total|influx_write_errors_total|influx_dropped_total|rules_events_total)' \
  "$work/metrics.txt" | sed 's/^/    /' || true
echo
echo "==> Grafana: provisioning in $repo/deploy/grafana/provisioning, dashboards in $repo/deploy/grafana/dashboards."
echo "    Point a Grafana at them: copy provisioning/datasources/sitewatch.yaml and"
echo "    provisioning/dashboards/sitewatch.yaml into /etc/grafana/provisioning/{datasources,dashboards}/,"
echo "    the dashboard JSON into /var/lib/grafana/dashboards/sitewatch/, and set the datasource url to"
echo "    an InfluxDB holding this data (database sitewatch). With Docker: docker compose -f deploy/compose.yaml up -d --build."
echo "    Details: docs/grafana.md"
if [ ${#after[@]} -gt 0 ]; then
  echo "==> running: ${after[*]}"
  SITEWATCH_DEMO_INFLUX_URL="$influx_url" SITEWATCH_DEMO_CONFIG="$work/sitewatch.toml" "${after[@]}"
fi
