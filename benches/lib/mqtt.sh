# Shared functions of the MQTT load benchmarks (sourced by benches/mqtt_load.sh and
# benches/mqtt_matrix.sh; not run on its own). Everything runs on 127.0.0.1, on free ports,
# in the temp dir $WORK, and every process started here is in $PIDS for the caller's
# cleanup trap.
#
# Globals it sets: WORK, PIDS, SW, LOAD, MQ_PORT, MQ_PID, INFLUX_PORT, INFLUX_PID, SW_PID,
# and after each drain the DRAIN_* results (see floor_drain and sitewatch_drain).

export PATH="$PATH:/usr/sbin:/sbin"
# A phase that takes longer than this is a failure, never a hang.
PHASE_TIMEOUT=${PHASE_TIMEOUT:-300}

need_bins() {
  local bin
  for bin in mosquitto:mosquitto mosquitto_sub:mosquitto-clients influxd:influxdb python3:python3 curl:curl; do
    command -v "${bin%%:*}" >/dev/null || { echo "missing ${bin%%:*}: sudo apt-get install -y ${bin##*:}" >&2; exit 1; }
  done
}

# Builds sitewatch and the load tool (release) unless SITEWATCH_BIN names another build.
build_bins() {
  cargo build --release --quiet --bin sitewatch --example mqtt_load
  local target=${CARGO_TARGET_DIR:-$PWD/target}
  SW=${SITEWATCH_BIN:-$target/release/sitewatch}
  LOAD=$target/release/examples/mqtt_load
}

setup_workdir() {
  WORK=$(mktemp -d -t sitewatch-mqtt-bench.XXXXXX)
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_tcp() { for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
# utime+stime of a process in seconds
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }
peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_mb() { awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Alive and not a zombie (kill -0 succeeds on a child that exited but is not reaped yet).
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }
now_s() { date +%s.%N; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

machine_header() {
  echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -m | awk '/Mem:/ {print $2}') MiB; load average at start $(loadavg)"
  echo "# $(mosquitto -h 2>&1 | head -1 | xargs); $(influxd version 2>&1 | head -1); $(rustc --version)"
}

# Broker: no in-flight or queue limits, QoS 0 queued for offline persistent sessions.
start_mosquitto() {
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
}

start_influxd() {
  INFLUX_PORT=$(free_port)
  local rpc_port; rpc_port=$(free_port)
  mkdir -p "$WORK/influx"
  cat >"$WORK/influx/influxd.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc_port"
[meta]
  dir = "$WORK/influx/meta"
[data]
  dir = "$WORK/influx/data"
  wal-dir = "$WORK/influx/wal"
  query-log-enabled = false
  max-series-per-database = 0
  max-values-per-tag = 0
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
}

# Threshold rules on the temperature field; file: $WORK/rules.toml.
#   write_rules COUNT KIND [SITES]
# KIND site  : rule i watches site s<i % 4>, any rack (each sample watched by COUNT/4 rules;
#              mqtt_load.sh's case). Readings are 20.0-24.56 and only the hottest racks cross
#              the lowest thresholds, so a few hundred alarms fire once and then hold.
#      narrow: rule i watches exactly site s<i % SITES> (the publisher's --sites), any rack:
#              each sample is watched by COUNT/SITES rules; same thresholds as "site".
#      broad : every rule watches every series (no site match, rack = "*"); thresholds one
#              degree higher so none fires: the cost measured is evaluation and state.
write_rules() {
  local count=$1 kind=$2 sites=${3:-4}
  awk -v n="$count" -v kind="$kind" -v sites="$sites" 'BEGIN {
    for (i = 0; i < n; i++) {
      w = 24.3 + (i % 25) * 0.1
      if (kind == "broad") { w += 1; m = "match = { rack = \"*\" }" }
      else if (kind == "narrow") m = sprintf("match = { site = \"s%d\", rack = \"*\" }", i % sites)
      else m = sprintf("match = { site = \"s%d\", rack = \"*\" }", i % 4)
      printf "[[rule]]\nname = \"load_%d\"\nmeasurement = \"load\"\nfield = \"temperature\"\n%s\n", i, m
      printf "above = { warning = %.2f, warning_clear = %.2f, critical = %.2f, critical_clear = %.2f }\n", w, w - 1, w + 3, w + 2
      printf "message = \"{rack}: {value}\"\n\n"
    }
  }' >"$WORK/rules.toml"
}

#   publish QOS COUNT RATE SERIES [SITES]   (PUBLISHERS from the environment, default 4)
publish() {
  timeout "$PHASE_TIMEOUT" "$LOAD" publish --port "$MQ_PORT" --qos "$1" --count "$2" --rate "$3" \
    --publishers "${PUBLISHERS:-4}" --series "$4" --sites "${5:-4}"
}

#   sitewatch_config QOS SINK_PORT METRICS_PORT CLIENT_ID [SERIES [STATE_FILE]]
# max_series (per subscription, default 100,000) is raised above SERIES so the 200k cases
# measure sitewatch, not its cap.
sitewatch_config() {
  local max_series=$(( ${5:-1000} * 2 > 100000 ? ${5:-1000} * 2 : 100000 ))
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
client_id = "$4"

[[mqtt.subscription]]
topic = "load/{site}/{rack}/temperature"
measurement = "load"
format = "json"
fields = { temperature = "temperature", humidity = "humidity", power = "power", seq = "seq" }
timestamp = "t"
qos = $1
max_series = $max_series

[rules]
files = ["rules.toml"]
EOF
  if [ -n "${6:-}" ]; then echo "state_file = \"$6\"" >>"$WORK/sitewatch.toml"; fi
}

start_sitewatch() { # metrics_port ; sets SW_PID
  spawn_sitewatch
  wait_connected "$1"
}

spawn_sitewatch() { # sets SW_PID
  "$SW" run --config "$WORK/sitewatch.toml" >>"$WORK/sitewatch.log" 2>&1 &
  SW_PID=$!; PIDS+=("$SW_PID")
}

wait_connected() { # metrics_port
  wait_tcp "$1"
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$1/metrics" | grep -q '^sitewatch_mqtt_connected 1' && { sleep 0.3; return 0; }
    kill -0 "$SW_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "sitewatch did not connect; log:" >&2; tail -20 "$WORK/sitewatch.log" >&2; return 1
}

# SIGTERM, then at most PHASE_TIMEOUT for the shutdown (state save, last flush).
stop_sitewatch() {
  kill -TERM "$SW_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 $((PHASE_TIMEOUT * 10))); do kill -0 "$SW_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SW_PID" 2>/dev/null || true
  wait "$SW_PID" 2>/dev/null || true
}

# Waits for pid $1 to exit; meanwhile kills sitewatch ($SW_PID) if its RSS passes
# RSS_LIMIT_MB (default 4096), so a case that would exhaust memory is reported, not swapped.
# Sets DRAIN_OVER_RSS=1 when it had to.
wait_watching_rss() {
  DRAIN_OVER_RSS=0
  local limit=${RSS_LIMIT_MB:-4096}
  while kill -0 "$1" 2>/dev/null; do
    if [ "$(rss_mb "$SW_PID")" -gt "$limit" ]; then
      DRAIN_OVER_RSS=1
      kill -KILL "$SW_PID" 2>/dev/null || true
      kill "$1" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  wait "$1" 2>/dev/null || true
}

# perf record ends on SIGINT, but one that arrives while it is still starting is lost: repeat
# it, and give up after 10 s.
stop_perf() { # pid
  local i
  for i in $(seq 1 20); do
    running "$1" || break
    kill -INT "$1" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# One backlog drained by sitewatch.
#   sitewatch_drain QOS MODE(discard|influxdb) COUNT SERIES SITES CLIENT_ID [STATE_FILE [FRESH]]
# The persistent session CLIENT_ID is created first (sitewatch starts, subscribes and goes
# away; skipped when FRESH=0, for a restart on an existing session), then COUNT messages are
# queued for it and sitewatch starts again and drains them into the measuring sink.
# Sets DRAIN_GOT DRAIN_SECS DRAIN_RATE DRAIN_CPU DRAIN_US DRAIN_RSS DRAIN_OVER_RSS
# DRAIN_INFLUX_CPU DRAIN_MQ_CPU and appends the sink's summary to $WORK/sink.out.
sitewatch_drain() {
  local q=$1 mode=$2 count=$3 series=$4 sites=$5 client=$6 state=${7:-} fresh=${8:-1}
  local sink_port metrics_port upstream=() icpu0 mcpu0 t0 t1 perf_pid="" sink_pid
  sink_port=$(free_port); metrics_port=$(free_port)
  [ "$mode" = influxdb ] && upstream=(--upstream "http://127.0.0.1:$INFLUX_PORT")
  sitewatch_config "$q" "$sink_port" "$metrics_port" "$client" "$series" "$state"
  if [ "$fresh" = 1 ]; then start_sitewatch "$metrics_port"; stop_sitewatch; fi
  publish "$q" "$count" 0 "$series" "$sites" >/dev/null
  "$LOAD" sink --listen "$sink_port" --expect "$count" --timeout "${PHASE_TIMEOUT}s" "${upstream[@]}" >"$WORK/sink.last" &
  sink_pid=$!; PIDS+=("$sink_pid")
  wait_tcp "$sink_port"
  icpu0=$(cpu_s "$INFLUX_PID"); mcpu0=$(cpu_s "$MQ_PID")
  t0=$(now_s)
  spawn_sitewatch
  # perf attaches before the connection: a drain can be over in a second.
  if [ -n "${PERF_OUT:-}" ] && [ "$mode" = discard ]; then
    perf record -q -F 1999 --call-graph "${PERF_CALL_GRAPH:-fp}" -p "$SW_PID" -o "$PERF_OUT.q$q" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  wait_connected "$metrics_port"
  wait_watching_rss "$sink_pid"
  t1=$(now_s)
  [ -n "$perf_pid" ] && stop_perf "$perf_pid"
  if [ "$DRAIN_OVER_RSS" = 1 ]; then
    DRAIN_CPU=nan; DRAIN_RSS=">${RSS_LIMIT_MB:-4096}"
  else
    DRAIN_CPU=$(cpu_s "$SW_PID"); DRAIN_RSS=$(peak_rss_mb "$SW_PID")
  fi
  DRAIN_INFLUX_CPU=$(awk -v a="$(cpu_s "$INFLUX_PID")" -v b="$icpu0" 'BEGIN {printf "%.1f", a - b}')
  DRAIN_MQ_CPU=$(awk -v a="$(cpu_s "$MQ_PID")" -v b="$mcpu0" 'BEGIN {printf "%.1f", a - b}')
  stop_sitewatch
  DRAIN_GOT=$(grep -o 'sink: [0-9]*' "$WORK/sink.last" | awk '{print $2}')
  DRAIN_GOT=${DRAIN_GOT:-0}
  DRAIN_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
  DRAIN_RATE=$(awk -v n="$DRAIN_GOT" -v s="$DRAIN_SECS" 'BEGIN {printf "%.0f", n / s}')
  DRAIN_US=$(awk -v c="$DRAIN_CPU" -v n="$DRAIN_GOT" 'BEGIN {if (n > 0 && c != "nan") printf "%.1f", c * 1e6 / n; else print "nan"}')
  cat "$WORK/sink.last" >>"$WORK/sink.out"
}

# Drops a persistent session (a clean start with its client id) so the broker does not keep
# queueing for it while later drains run.
drop_session() { # qos client_id
  timeout "$PHASE_TIMEOUT" mosquitto_sub -p "$MQ_PORT" -i "$2" -q "$1" -t 'load/#' -W 1 >/dev/null 2>&1 || true
}

# The same backlog drained by mosquitto_sub (the floor: a C client printing each message).
#   floor_drain QOS COUNT SERIES SITES CLIENT_ID
# Sets DRAIN_GOT DRAIN_SECS DRAIN_RATE DRAIN_CPU DRAIN_US DRAIN_RSS DRAIN_MQ_CPU.
floor_drain() {
  local q=$1 count=$2 series=$3 sites=$4 client=$5 t0 t1 mcpu0
  timeout "$PHASE_TIMEOUT" mosquitto_sub -p "$MQ_PORT" -c -i "$client" -q "$q" -t 'load/#' -W 1 >/dev/null 2>&1 || true
  publish "$q" "$count" 0 "$series" "$sites" >/dev/null
  mcpu0=$(cpu_s "$MQ_PID")
  t0=$(now_s)
  # GNU time is not always installed: bash's time gives user and system CPU; peak RSS of
  # mosquitto_sub is not measured (a few MiB).
  local TIMEFORMAT='%U %S'
  { time timeout "$PHASE_TIMEOUT" mosquitto_sub -p "$MQ_PORT" -c -i "$client" -q "$q" -t 'load/#' -C "$count" -F '%U' >"$WORK/floor.out" 2>/dev/null; } 2>"$WORK/floor.cpu" || true
  t1=$(now_s)
  DRAIN_CPU=$(awk '{printf "%.2f", $1 + $2}' "$WORK/floor.cpu")
  DRAIN_GOT=$(wc -l <"$WORK/floor.out")
  DRAIN_MQ_CPU=$(awk -v a="$(cpu_s "$MQ_PID")" -v b="$mcpu0" 'BEGIN {printf "%.1f", a - b}')
  DRAIN_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
  DRAIN_RATE=$(awk -v n="$DRAIN_GOT" -v s="$DRAIN_SECS" 'BEGIN {printf "%.0f", n / s}')
  DRAIN_US=$(awk -v c="$DRAIN_CPU" -v n="$DRAIN_GOT" 'BEGIN {if (n > 0) printf "%.1f", c * 1e6 / n; else print "nan"}')
  DRAIN_RSS=-
  drop_session "$q" "$client"
}
