#!/usr/bin/env bash
# MQTT end-to-end load benchmark: mosquitto + influxd on loopback in a temp dir, sitewatch
# with 100 rules, compared with mosquitto_sub on the same stream. Bounded (a few minutes),
# not part of `cargo test`. Results and how to read them: docs/BENCHMARKS.md. For the whole
# series x rules x QoS matrix with medians of interleaved runs: benches/mqtt_matrix.sh.
#
# Usage: bash benches/mqtt_load.sh
# Knobs (environment): COUNT=200000 messages per run, RATE=20000 msg/s for the latency run,
#                      PUBLISHERS=4, SERIES=1000, QOS_LIST="0 1", RULES=100,
#                      PERF_OUT=/tmp/sw.perf (perf record sitewatch during the discard drain),
#                      PERF_CALL_GRAPH=fp|dwarf (perf --call-graph; dwarf shows callers in a
#                      release build), PHASE_TIMEOUT=300 s per phase,
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
# shellcheck source=benches/lib/mqtt.sh
. benches/lib/mqtt.sh

COUNT=${COUNT:-200000}
RATE=${RATE:-20000}
PUBLISHERS=${PUBLISHERS:-4}
SERIES=${SERIES:-1000}
QOS_LIST=${QOS_LIST:-"0 1"}
RULES=${RULES:-100}

need_bins
build_bins
setup_workdir

machine_header
echo "# COUNT=$COUNT RATE=$RATE PUBLISHERS=$PUBLISHERS SERIES=$SERIES RULES=$RULES"

start_mosquitto
start_influxd
# Each sample is evaluated by the quarter of the rules watching its site.
write_rules "$RULES" site

sitewatch_backlog() { # qos mode(discard|influxdb)
  sitewatch_drain "$1" "$2" "$COUNT" "$SERIES" 4 "sitewatch-bench-q$1-$2"
  drop_session "$1" "sitewatch-bench-q$1-$2"
  printf "qos %s sitewatch->%-8s: %d/%d msgs in %.2f s = %.0f msg/s; sitewatch CPU %s s (%s us/msg), peak RSS %s MiB; influxd CPU %s s; mosquitto CPU %s s\n" \
    "$1" "$2" "$DRAIN_GOT" "$COUNT" "$DRAIN_SECS" "$DRAIN_RATE" "$DRAIN_CPU" "$DRAIN_US" "$DRAIN_RSS" "$DRAIN_INFLUX_CPU" "$DRAIN_MQ_CPU"
  sed 's/^/    /' "$WORK/sink.last"
}

floor_backlog() { # qos
  floor_drain "$1" "$COUNT" "$SERIES" 4 "floor-q$1"
  printf "qos %s mosquitto_sub     : %d/%d msgs in %.2f s = %.0f msg/s; mosquitto_sub CPU %s s (%s us/msg); mosquitto CPU %s s\n" \
    "$1" "$DRAIN_GOT" "$COUNT" "$DRAIN_SECS" "$DRAIN_RATE" "$DRAIN_CPU" "$DRAIN_US" "$DRAIN_MQ_CPU"
}

live() { # qos
  local q=$1 sink_port metrics_port
  sink_port=$(free_port); metrics_port=$(free_port)
  sitewatch_config "$q" "$sink_port" "$metrics_port" "sitewatch-bench-live-q$q" "$SERIES"
  "$LOAD" sink --listen "$sink_port" --expect "$COUNT" --timeout "${PHASE_TIMEOUT}s" --upstream "http://127.0.0.1:$INFLUX_PORT" >"$WORK/sink.last" &
  local sink_pid=$!; PIDS+=("$sink_pid")
  wait_tcp "$sink_port"
  start_sitewatch "$metrics_port"
  local cpu0; cpu0=$(cpu_s "$SW_PID")
  publish "$q" "$COUNT" "$RATE" "$SERIES" | sed "s/^/qos $q live publisher: /"
  wait "$sink_pid" || true
  local cpu; cpu=$(awk -v a="$(cpu_s "$SW_PID")" -v b="$cpu0" 'BEGIN {printf "%.1f", a - b}')
  echo "qos $q live at $RATE msg/s -> influxdb: sitewatch CPU $cpu s ($(awk -v c="$cpu" -v n="$COUNT" 'BEGIN {printf "%.1f", c * 1e6 / n}') us/msg), peak RSS $(peak_rss_mb "$SW_PID") MiB"
  stop_sitewatch
  sed 's/^/    /' "$WORK/sink.last"
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
