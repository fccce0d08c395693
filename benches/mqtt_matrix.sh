#!/usr/bin/env bash
# MQTT benchmark matrix (issue 12): series x rules x QoS, each case drained from a persistent
# session's backlog by mosquitto_sub (the floor), sitewatch -> a /write sink that answers 204
# at once ("discard") and sitewatch -> a real influxd, REPEAT times interleaved; prints a
# markdown table of medians (min-max). Plus a restart case: sitewatch with a rules state file
# drains SERIES new series, stops (state saved), restarts and drains another backlog of the
# same series; the CPU of that second run is the catch-up cost.
# mosquitto, influxd and sitewatch run on 127.0.0.1, free ports, in a temp dir removed on exit.
# Not part of `cargo test`. How to read the output: docs/BENCHMARKS.md.
#
# Usage: bash benches/mqtt_matrix.sh
# Knobs (environment):
#   SERIES_LIST="100 20000 200000"  distinct series (racks); with COUNT=200000 and 200,000
#                                   series every series gets one message (all new series)
#   RULES_LIST="0 100:narrow 1000:narrow 1000:broad"
#                                   COUNT:KIND; narrow = rule i watches site s<i % SITES>
#                                   (each sample watched by COUNT/SITES rules); broad = every
#                                   rule watches every series (benches/lib/mqtt.sh write_rules)
#   QOS_LIST="0 1"  REPEAT=3  COUNT=200000 messages per drain  SITES=100  PUBLISHERS=4
#   CONSUMERS="mosquitto_sub discard influxdb"   (ratios need mosquitto_sub)
#   RESTART=1 (0: skip the restart case)  RESTART_SERIES=200000  RESTART_RULES=100:narrow
#   RSS_LIMIT_MB=4096 (sitewatch is killed above it and the case reported as over the limit)
#   PHASE_TIMEOUT=300 s per phase  PERF_OUT=file (perf record each discard drain; file.q<QoS>)
#   PERF_CALL_GRAPH=fp (perf --call-graph; "dwarf" gives callers in a release build)
#   SITEWATCH_BIN=path (benchmark another build)
# Only the Done-when cases of issue 12, for example:
#   SERIES_LIST=100 RULES_LIST=100:narrow QOS_LIST=1 RESTART=0 bash benches/mqtt_matrix.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib/mqtt.sh
. benches/lib/mqtt.sh

SERIES_LIST=${SERIES_LIST:-"100 20000 200000"}
RULES_LIST=${RULES_LIST:-"0 100:narrow 1000:narrow 1000:broad"}
QOS_LIST=${QOS_LIST:-"0 1"}
REPEAT=${REPEAT:-3}
COUNT=${COUNT:-200000}
SITES=${SITES:-100}
CONSUMERS=${CONSUMERS:-"mosquitto_sub discard influxdb"}
RESTART=${RESTART:-1}
RESTART_SERIES=${RESTART_SERIES:-200000}
RESTART_RULES=${RESTART_RULES:-100:narrow}

need_bins
build_bins
setup_workdir

machine_header
echo "# SERIES_LIST=\"$SERIES_LIST\" RULES_LIST=\"$RULES_LIST\" QOS_LIST=\"$QOS_LIST\" REPEAT=$REPEAT COUNT=$COUNT SITES=$SITES PUBLISHERS=${PUBLISHERS:-4}"
echo "# CONSUMERS=\"$CONSUMERS\" RESTART=$RESTART RESTART_SERIES=$RESTART_SERIES RESTART_RULES=$RESTART_RULES"

start_mosquitto
start_influxd

# One row per drain: case consumer rep rate cpu_us rss got loadavg1
RESULTS=$WORK/results.tsv
: >"$RESULTS"
DRAIN_N=0

rules_for() { # COUNT:KIND -> rules.toml
  local n=${1%%:*} kind=narrow
  [[ $1 == *:* ]] && kind=${1#*:}
  case $kind in narrow | broad) ;; *) echo "RULES_LIST entry $1: kind must be narrow or broad" >&2; exit 2 ;; esac
  write_rules "$n" "$kind" "$SITES"
}

run_consumer() { # consumer qos series
  DRAIN_N=$((DRAIN_N + 1))
  local client="bench-$DRAIN_N-$1"
  case $1 in
    mosquitto_sub) floor_drain "$2" "$COUNT" "$3" "$SITES" "$client" ;;
    discard | influxdb)
      sitewatch_drain "$2" "$1" "$COUNT" "$3" "$SITES" "$client"
      drop_session "$2" "$client"
      ;;
    *) echo "CONSUMERS entry $1: one of mosquitto_sub, discard, influxdb" >&2; exit 2 ;;
  esac
}

for series in $SERIES_LIST; do
  for rules in $RULES_LIST; do
    rules_for "$rules"
    for q in $QOS_LIST; do
      case_key="$series|$rules|$q"
      for rep in $(seq 1 "$REPEAT"); do
        # Alternate the order so no consumer always runs first (fresh broker) or last.
        order=$CONSUMERS
        [ $((rep % 2)) = 0 ] && order=$(echo "$CONSUMERS" | tr ' ' '\n' | tac | xargs)
        for c in $order; do
          la=$(cut -d' ' -f1 /proc/loadavg)
          run_consumer "$c" "$q" "$series"
          printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case_key" "$c" "$rep" "$DRAIN_RATE" "$DRAIN_US" "$DRAIN_RSS" "$DRAIN_GOT" "$la" >>"$RESULTS"
          echo "# series $series rules $rules qos $q rep $rep $c: $DRAIN_GOT/$COUNT msgs, $DRAIN_RATE msg/s, $DRAIN_US us/msg, RSS $DRAIN_RSS MiB (load $la)" >&2
        done
      done
    done
  done
done

echo
echo "Backlog drains, COUNT=$COUNT messages each; medians of $REPEAT interleaved runs, (min–max);"
echo "ratio = consumer msg/s ÷ mosquitto_sub msg/s of the same repetition; \"load\" = 1-min load average before each drain."
echo
python3 - "$RESULTS" "$COUNT" <<'EOF'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
count = int(sys.argv[2])
def num(s):
    try:
        return float(s)
    except ValueError:
        return None
floor = {(r[0], r[2]): num(r[3]) for r in rows if r[1] == "mosquitto_sub"}
cases, table = [], {}
for case, cons, rep, rate, us, rss, got, la in rows:
    if (case, cons) not in table:
        cases.append((case, cons))
        table[(case, cons)] = []
    f = floor.get((case, rep))
    ratio = num(rate) / f if f and num(rate) is not None else None
    table[(case, cons)].append((num(rate), ratio, num(us), rss, int(got or 0), num(la)))
def fmt(vals, digits):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m = statistics.median(vals)
    s = f"{m:.{digits}f}"
    if len(vals) > 1:
        s += f" ({min(vals):.{digits}f}–{max(vals):.{digits}f})"
    return s
print("| series | rules | QoS | consumer | msg/s | ratio to mosquitto_sub | CPU µs/msg | peak RSS MiB | delivered | load |")
print("|---|---|---|---|---|---|---|---|---|---|")
for case, cons in cases:
    series, rules, q = case.split("|")
    v = table[(case, cons)]
    over = [x[3] for x in v if x[3].startswith(">")]
    rss = "over " + over[0][1:] if over else fmt([num(x[3]) for x in v], 0)
    got = [x[4] for x in v]
    delivered = "all" if all(g == count for g in got) else "/".join(str(g) for g in got)
    ratio = "1" if cons == "mosquitto_sub" else fmt([x[1] for x in v], 2)
    print(f"| {int(series):,} | {rules} | {q} | {cons} | {fmt([x[0] for x in v], 0)} | {ratio} | "
          f"{fmt([x[2] for x in v], 1)} | {rss} | {delivered} | {fmt([x[5] for x in v], 1)} |")
EOF

if [ "$RESTART" = 1 ]; then
  # Restart catch-up: first run learns RESTART_SERIES new series (one message each) and saves
  # the rule state at shutdown; the second run loads it and drains another backlog of the
  # same series. QoS 1, discard sink, so the figure is sitewatch's own cost.
  rules_for "$RESTART_RULES"
  echo
  echo "Restart with $RESTART_SERIES known series ($RESTART_RULES rules, QoS 1, discard sink, $RESTART_SERIES messages per drain):"
  echo
  echo "| rep | first drain CPU s | first drain peak RSS MiB | state file MiB | second drain (restart) CPU s | second drain msg/s | second drain peak RSS MiB | delivered |"
  echo "|---|---|---|---|---|---|---|---|"
  for rep in $(seq 1 "$REPEAT"); do
    state="$WORK/rules-state-$rep.json"
    client="bench-restart-$rep"
    sitewatch_drain 1 discard "$RESTART_SERIES" "$RESTART_SERIES" "$SITES" "$client" "$state" 1
    c1=$DRAIN_CPU r1=$DRAIN_RSS g1=$DRAIN_GOT
    size=$(awk -v b="$(stat -c %s "$state" 2>/dev/null || echo 0)" 'BEGIN {printf "%.1f", b / 1048576}')
    sitewatch_drain 1 discard "$RESTART_SERIES" "$RESTART_SERIES" "$SITES" "$client" "$state" 0
    drop_session 1 "$client"
    echo "| $rep | $c1 | $r1 | $size | $DRAIN_CPU | $DRAIN_RATE | $DRAIN_RSS | $g1/$DRAIN_GOT of $RESTART_SERIES |"
  done
fi

if grep -qiE 'error|dropp' "$WORK/sitewatch.log"; then
  echo
  echo "# sitewatch log had errors/drops:"; grep -iE 'error|dropp' "$WORK/sitewatch.log" | sort | uniq -c | sort -rn | head -5
fi
echo
echo "# load average at end $(loadavg)"
