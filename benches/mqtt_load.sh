#!/usr/bin/env bash
# MQTT end-to-end load benchmark: mosquitto + influxd on loopback in a temp dir, sitewatch
# with 100 rules, compared with mosquitto_sub on the same stream. Bounded (a few minutes),
# not part of `cargo test`. Results and how to read them: docs/BENCHMARKS.md.
#
# Usage: bash benches/mqtt_load.sh
# Knobs (environment): COUNT=200000 messages per run, RATE=20000 msg/s for the latency run,
#                      PUBLISHERS=4, SERIES=1000, QOS_LIST="0 1", RULES=100,
#                      PERF_OUT=/tmp/sw.perf (perf record sitewatch during the discard drain),
#                      SITEWATCH_BIN=path (benchmark another build, e.g. for an A/B comparison)
#
# For each QoS it measures
#   1. floor    : backlog of COUNT messages queued in the broker, drained by mosquitto_sub
#   2. discard  : the same backlog drained by sitewatch writing to a discarding /write sink
#                 (sitewatch's own capacity and CPU per message)
#   3. influxdb : the same backlog drained by sitewatch into a real influxd (through the
#                 measuring proxy)
#   4. live     : COUNT messages published at RATE while sitewatch writes to influxd:
#                 publish-to-stored latency percentiles
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-200000}
RATE=${RATE:-20000}
PUBLISHERS=${PUBLISHERS:-4}
SERIES=${SERIES:-1000}
QOS_LIST=${QOS_LIST:-"0 1"}
RULES=${RULES:-100}
export PATH="$PATH:/usr/sbin:/sbin"

for bin in mosquitto:mosquitto mosquitto_sub:mosquitto-clients influxd:influxdb python3:python3; do
  command -v "${bin%%:*}" >/dev/null || { echo "missing ${bin%%:*}: sudo apt-get install -y ${bin##*:}" >&2; exit 1; }
done

cargo build --release --quiet --bin sitewatch --example mqtt_load
SW=${SITEWATCH_BIN:-$PWD/target/release/sitewatch}
LOAD=$PWD/target/release/examples/mqtt_load

WORK=$(mktemp -d -t sitewatch-mqtt-load.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_tcp() { for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
# utime+stime of a process in seconds
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }
peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -m | awk '/Mem:/ {print $2}') MiB"
echo "# $(mosquitto -h 2>&1 | head -1 | xargs); $(influxd version 2>&1 | head -1); $(rustc --version)"
echo "# COUNT=$COUNT RATE=$RATE PUBLISHERS=$PUBLISHERS SERIES=$SERIES RULES=$RULES"

# --- broker: no in-flight or queue limits, QoS 0 queued for offline persistent sessions ---
MQ_PORT=$(free_port)
cat >"$WORK/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 0
queue_qos0_messages true
EOF
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
MQ_PID=$!; PIDS+=("$MQ_PID")
wait_tcp "$MQ_PORT"

# --- influxd ---
INFLUX_PORT=$(free_port); RPC_PORT=$(free_port)
mkdir -p "$WORK/influx"
cat >"$WORK/influx/influxd.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$RPC_PORT"
[meta]
  dir = "$WORK/influx/meta"
[data]
  dir = "$WORK/influx/data"
  wal-dir = "$WORK/influx/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
[logging]
  level = "warn"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
EOF
influxd -config "$WORK/influx/influxd.conf" >"$WORK/influxd.log" 2>&1 &
INFLUX_PID=$!; PIDS+=("$INFLUX_PID")
wait_tcp "$INFLUX_PORT"
sleep 0.5
curl -fsS -XPOST "http://127.0.0.1:$INFLUX_PORT/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null

# --- rules: RULES threshold rules on the stream. Each sample is evaluated by the quarter
# of them watching its site; readings are 20.0-24.56 and only the hottest racks cross the
# lowest thresholds, so a few hundred alarms fire once and then hold (no flapping).
: >"$WORK/rules.toml"
for i in $(seq 0 $((RULES - 1))); do
  w=$(awk -v i="$i" 'BEGIN {printf "%.2f", 24.3 + (i % 25) * 0.1}')
  cat >>"$WORK/rules.toml" <<EOF
[[rule]]
name = "load_$i"
measurement = "load"
field = "temperature"
match = { site = "s$((i % 4))", rack = "*" }
above = { warning = $w, warning_clear = $(awk -v w="$w" 'BEGIN {print w - 1}'), critical = $(awk -v w="$w" 'BEGIN {print w + 3}'), critical_clear = $(awk -v w="$w" 'BEGIN {print w + 2}') }
message = "{rack}: {value}"

EOF
done

publish() { # qos count rate
  "$LOAD" publish --port "$MQ_PORT" --qos "$1" --count "$2" --rate "$3" --publishers "$PUBLISHERS" --series "$SERIES"
}

sitewatch_config() { # qos sink_port metrics_port
  cat >"$WORK/sitewatch.toml" <<EOF
[service]
log_level = "warn"
listen = "127.0.0.1:$3"

[influx]
url = "http://127.0.0.1:$2"
database = "bench"

[mqtt]
host = "127.0.0.1"
port = $MQ_PORT
client_id = "sitewatch-bench-q$1"

[[mqtt.subscription]]
topic = "load/{site}/{rack}/temperature"
measurement = "load"
format = "json"
fields = { temperature = "temperature", seq = "seq" }
timestamp = "t"
qos = $1

[rules]
files = ["rules.toml"]
EOF
}

start_sitewatch() { # metrics_port ; sets SW_PID
  "$SW" run --config "$WORK/sitewatch.toml" >>"$WORK/sitewatch.log" 2>&1 &
  SW_PID=$!; PIDS+=("$SW_PID")
  wait_tcp "$1"
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$1/metrics" | grep -q '^sitewatch_mqtt_connected 1' && { sleep 0.3; return 0; }
    sleep 0.05
  done
  echo "sitewatch did not connect; log:" >&2; cat "$WORK/sitewatch.log" >&2; return 1
}

stop_sitewatch() { kill -TERM "$SW_PID"; wait "$SW_PID" 2>/dev/null || true; }

# One sitewatch backlog drain: qos mode(discard|influxdb)
sitewatch_backlog() {
  local q=$1 mode=$2 sink_port metrics_port upstream=() influx_cpu0 cpu
  sink_port=$(free_port); metrics_port=$(free_port)
  [ "$mode" = influxdb ] && upstream=(--upstream "http://127.0.0.1:$INFLUX_PORT")
  sitewatch_config "$q" "$sink_port" "$metrics_port"
  # First start creates the persistent session and subscription, then go away.
  start_sitewatch "$metrics_port"; stop_sitewatch
  publish "$q" "$COUNT" 0 >/dev/null
  "$LOAD" sink --listen "$sink_port" --expect "$COUNT" --timeout 240s "${upstream[@]}" >"$WORK/sink.out" &
  local sink_pid=$!; PIDS+=("$sink_pid")
  wait_tcp "$sink_port"
  influx_cpu0=$(cpu_s "$INFLUX_PID")
  local mq_cpu0; mq_cpu0=$(cpu_s "$MQ_PID")
  local t0; t0=$(date +%s.%N)
  start_sitewatch "$metrics_port"
  local perf_pid=""
  if [ -n "${PERF_OUT:-}" ] && [ "$mode" = discard ]; then
    perf record -q -F 1999 -g -p "$SW_PID" -o "$PERF_OUT.q$q" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  wait "$sink_pid" || true
  local t1; t1=$(date +%s.%N)
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
  cpu=$(cpu_s "$SW_PID"); local rss; rss=$(peak_rss_mb "$SW_PID")
  local icpu; icpu=$(awk -v a="$(cpu_s "$INFLUX_PID")" -v b="$influx_cpu0" 'BEGIN {printf "%.1f", a - b}')
  local mcpu; mcpu=$(awk -v a="$(cpu_s "$MQ_PID")" -v b="$mq_cpu0" 'BEGIN {printf "%.1f", a - b}')
  stop_sitewatch
  local got; got=$(grep -o 'sink: [0-9]*' "$WORK/sink.out" | awk '{print $2}')
  awk -v q="$q" -v m="$mode" -v n="$got" -v c="$COUNT" -v t0="$t0" -v t1="$t1" -v cpu="$cpu" -v rss="$rss" -v icpu="$icpu" -v mcpu="$mcpu" 'BEGIN {
    el = t1 - t0; printf "qos %s sitewatch->%-8s: %d/%d msgs in %.2f s = %.0f msg/s; sitewatch CPU %.1f s (%.1f us/msg), peak RSS %s MiB; influxd CPU %s s; mosquitto CPU %s s\n",
    q, m, n, c, el, n / el, cpu, cpu * 1e6 / n, rss, icpu, mcpu }'
  sed 's/^/    /' "$WORK/sink.out"
}

floor_backlog() { # qos
  local q=$1
  mosquitto_sub -p "$MQ_PORT" -c -i "floor-q$q" -q "$q" -t 'load/#' -W 1 >/dev/null 2>&1 || true
  publish "$q" "$COUNT" 0 >/dev/null
  local t0 t1 mq_cpu0
  mq_cpu0=$(cpu_s "$MQ_PID")
  t0=$(date +%s.%N)
  local TIMEFORMAT='%U %S'
  { time timeout 240 mosquitto_sub -p "$MQ_PORT" -c -i "floor-q$q" -q "$q" -t 'load/#' -C "$COUNT" -F '%U' >"$WORK/floor.out" 2>/dev/null; } 2>"$WORK/floor.cpu" || true
  t1=$(date +%s.%N)
  local scpu; scpu=$(awk '{printf "%.1f", $1 + $2}' "$WORK/floor.cpu")
  local got; got=$(wc -l <"$WORK/floor.out")
  local mcpu; mcpu=$(awk -v a="$(cpu_s "$MQ_PID")" -v b="$mq_cpu0" 'BEGIN {printf "%.1f", a - b}')
  awk -v q="$q" -v n="$got" -v c="$COUNT" -v t0="$t0" -v t1="$t1" -v mcpu="$mcpu" -v scpu="$scpu" 'BEGIN {
    el = t1 - t0; printf "qos %s mosquitto_sub     : %d/%d msgs in %.2f s = %.0f msg/s; mosquitto_sub CPU %.1f s (%.1f us/msg); mosquitto CPU %s s\n", q, n, c, el, n / el, scpu, scpu * 1e6 / n, mcpu }'
  # Drop the session so its queue does not grow during the next runs.
  mosquitto_sub -p "$MQ_PORT" -i "floor-q$q" -q "$q" -t 'load/#' -W 1 >/dev/null 2>&1 || true
}

live() { # qos
  local q=$1 sink_port metrics_port
  sink_port=$(free_port); metrics_port=$(free_port)
  sitewatch_config "$q" "$sink_port" "$metrics_port"
  "$LOAD" sink --listen "$sink_port" --expect "$COUNT" --timeout 240s --upstream "http://127.0.0.1:$INFLUX_PORT" >"$WORK/sink.out" &
  local sink_pid=$!; PIDS+=("$sink_pid")
  wait_tcp "$sink_port"
  start_sitewatch "$metrics_port"
  local cpu0; cpu0=$(cpu_s "$SW_PID")
  publish "$q" "$COUNT" "$RATE" | sed "s/^/qos $q live publisher: /"
  wait "$sink_pid" || true
  local cpu; cpu=$(awk -v a="$(cpu_s "$SW_PID")" -v b="$cpu0" 'BEGIN {printf "%.1f", a - b}')
  echo "qos $q live at $RATE msg/s -> influxdb: sitewatch CPU $cpu s ($(awk -v c="$cpu" -v n="$COUNT" 'BEGIN {printf "%.1f", c * 1e6 / n}') us/msg), peak RSS $(peak_rss_mb "$SW_PID") MiB"
  stop_sitewatch
  sed 's/^/    /' "$WORK/sink.out"
}

for q in $QOS_LIST; do
  floor_backlog "$q"
  sitewatch_backlog "$q" discard
  sitewatch_backlog "$q" influxdb
  live "$q"
done
if grep -qiE 'error|dropp' "$WORK/sitewatch.log"; then
  echo "# sitewatch log had errors/drops:"; grep -iE 'error|dropp' "$WORK/sitewatch.log" | sort | uniq -c | sort -rn | head -5
fi
