#!/usr/bin/env bash
# SNMP polling load: sitewatch vs Prometheus snmp_exporter over the same Net-SNMP agents.
#
#   bash benches/snmp_load.sh                 # 1000 targets, 3 rounds each, ~2-4 minutes
#   TARGETS=2000 AGENTS=8 ROUNDS=5 bash benches/snmp_load.sh
#   RUN_SECONDS=120 bash benches/snmp_load.sh # also a steady-state `sitewatch run` phase
#   TARGETS=10000 AGENTS=20 ROUNDS=1 RUN_SECONDS=60 RUN_INTERVAL=60s bash benches/snmp_load.sh
#
# Ports: agents on 127.0.0.1:BASE_PORT.. (default 20000.., below Linux's ephemeral range so
# no client socket can hold one), snmp_exporter on EXPORTER_PORT (19116), a write sink on
# EXPORTER_PORT+1 and sitewatch's /metrics on EXPORTER_PORT+2.
# Not part of `cargo test`. Needs: snmpd + snmp (Net-SNMP), prometheus-snmp-exporter, curl,
# python3, cargo. All traffic stays on 127.0.0.1; every process started here is stopped on exit
# (by its pid). Each phase is bounded by `timeout`.
#
# What it measures, in one run over the same agents:
#   - sitewatch: `sitewatch once` polling every target (ROUNDS times); CPU = user+sys of the
#     process (getrusage), RSS = max resident set, output (line protocol) goes to /dev/null.
#   - snmp_exporter: every target scraped once per round through /snmp?target=..&module=bench
#     by EXPORTER_PARALLEL concurrent curl loops; CPU from /proc/<pid>/stat, RSS = VmHWM.
#   - the agents' (snmpd) CPU during each phase, to show whether the agents were the limit.
# Both collect the same objects: sysUpTime.0 plus 12 ifTable columns of every interface.
set -euo pipefail

TARGETS=${TARGETS:-1000}
AGENTS=${AGENTS:-4}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-20000}
EXPORTER_PORT=${EXPORTER_PORT:-19116}
EXPORTER_PARALLEL=${EXPORTER_PARALLEL:-64}
CONCURRENCY=${CONCURRENCY:-256}
RUN_SECONDS=${RUN_SECONDS:-0}
RUN_INTERVAL=${RUN_INTERVAL:-60s}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-600}
SKIP_EXPORTER=${SKIP_EXPORTER:-0}
COMMUNITY=bench-ro

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || { echo "missing $1: sudo apt-get install -y $2" >&2; exit 2; }; }
need snmpd snmpd; need snmpget snmp; need prometheus-snmp-exporter prometheus-snmp-exporter
need curl curl; need python3 python3; need cargo cargo
SNMPD=$(command -v snmpd || echo /usr/sbin/snmpd)

tmp=$(mktemp -d -t sitewatch-snmp-load.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
export MIBS="" MIBDIRS="$tmp" SNMP_PERSISTENT_DIR="$tmp/persist" HOME="$tmp"
mkdir -p "$tmp/persist" "$tmp/profiles"
hz=$(getconf CLK_TCK)

if [ -z "${SITEWATCH_BIN:-}" ]; then
  echo "# building sitewatch (release)" >&2
  (cd "$here" && cargo build --release --quiet --bin sitewatch)
  SITEWATCH_BIN="$here/target/release/sitewatch"
fi

# --- agents: AGENTS snmpd processes, each listening on its share of the target ports ---------
cat >"$tmp/snmpd.conf" <<EOF
[snmp] persistentDir $tmp/persist
rocommunity $COMMUNITY 127.0.0.1
sysName bench-agent
dontLogTCPWrappersConnects yes
EOF
per=$(( (TARGETS + AGENTS - 1) / AGENTS ))
agent_pids=()
for a in $(seq 0 $((AGENTS - 1))); do
  first=$((BASE_PORT + a * per)); last=$((first + per - 1))
  [ "$last" -ge $((BASE_PORT + TARGETS)) ] && last=$((BASE_PORT + TARGETS - 1))
  [ "$first" -gt "$last" ] && break
  eps=$(seq "$first" "$last" | sed 's/^/udp:127.0.0.1:/' | paste -sd, -)
  "$SNMPD" -f -LF 0-4 "$tmp/snmpd-$a.log" -C -c "$tmp/snmpd.conf" -p "$tmp/snmpd-$a.pid" "$eps" &
  pids+=($!); agent_pids+=($!)
done
for port in "$BASE_PORT" $((BASE_PORT + TARGETS - 1)); do
  ok=
  for _ in $(seq 1 100); do
    if snmpget -v2c -c "$COMMUNITY" -t 1 -r 0 "127.0.0.1:$port" 1.3.6.1.2.1.1.3.0 >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [ -n "$ok" ] || { echo "snmpd did not answer on port $port; log:" >&2; cat "$tmp"/snmpd-*.log >&2; exit 1; }
done
rows=$(snmpwalk -v2c -c "$COMMUNITY" -On "127.0.0.1:$BASE_PORT" 1.3.6.1.2.1.2.2.1.1 | wc -l)
cols=(1 2 3 4 5 7 8 10 11 13 14 16)
values_per_target=$(( ${#cols[@]} * rows + 1 ))

cpu_ticks() { # sum of utime+stime (ticks) of the given pids
  local t=0 p
  for p in "$@"; do
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  echo "$t"
}

# --- sitewatch --------------------------------------------------------------------------------
{
  echo 'name = "bench"'
  echo 'description = "load test: 12 ifTable columns"'
  echo 'measurement = "bench_if"'
  echo '[[table]]'
  echo 'oid = "1.3.6.1.2.1.2.2.1"'
  echo 'index_tag = "ifindex"'
  echo '[[table.column]]'
  echo 'oid = "1.3.6.1.2.1.2.2.1.2"'
  echo 'tag = "ifDescr"'
  for c in "${cols[@]}"; do
    [ "$c" = 2 ] && continue
    printf '[[table.column]]\noid = "1.3.6.1.2.1.2.2.1.%s"\nfield = "c%s"\n' "$c" "$c"
  done
} >"$tmp/profiles/bench.toml"
{
  echo '[service]'
  echo 'log_level = "warn"'
  echo "listen = \"127.0.0.1:$((EXPORTER_PORT + 2))\""
  echo '[influx]'
  echo 'url = "http://127.0.0.1:9"'
  echo 'database = "bench"'
  echo '[snmp]'
  echo "profiles_dir = \"$tmp/profiles\""
  echo "interval = \"$RUN_INTERVAL\""
  echo 'timeout = "5s"'
  echo 'retries = 1'
  echo "concurrency = $CONCURRENCY"
  for i in $(seq 0 $((TARGETS - 1))); do
    printf '[[snmp.target]]\nname = "t%05d"\naddress = "127.0.0.1:%d"\ncommunity = "%s"\nprofiles = ["bench"]\n' \
      "$i" $((BASE_PORT + i)) "$COMMUNITY"
  done
} >"$tmp/sitewatch.toml"

cat >"$tmp/rusage.py" <<'EOF'
import resource, subprocess, sys, time
t0 = time.monotonic()
with open(sys.argv[1], "wb") as out:
    rc = subprocess.run(sys.argv[2:], stdout=out).returncode
wall = time.monotonic() - t0
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{rc} {wall:.3f} {r.ru_utime + r.ru_stime:.3f} {r.ru_maxrss}")
EOF

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)" >&2
echo "# targets=$TARGETS agents=$AGENTS(snmpd) rows=$rows values/target=$values_per_target rounds=$ROUNDS" >&2

sw_cpu=0; sw_wall=0; sw_rss=0; sw_ok=0; sw_vb=0; sw_agent=0
for r in $(seq 1 "$ROUNDS"); do
  a0=$(cpu_ticks "${agent_pids[@]}")
  read -r rc wall cpu rss < <(timeout "$PHASE_TIMEOUT" python3 "$tmp/rusage.py" "$tmp/once.lp" "$SITEWATCH_BIN" once --config "$tmp/sitewatch.toml")
  a1=$(cpu_ticks "${agent_pids[@]}")
  [ "$rc" = 0 ] || { echo "sitewatch once failed (rc $rc)" >&2; exit 1; }
  up=$(grep -c '^snmp_poll,.* up=true' "$tmp/once.lp" || true)
  vb=$(grep '^snmp_poll,' "$tmp/once.lp" | sed -n 's/.*varbinds=\([0-9]*\)i.*/\1/p' | paste -sd+ - | bc)
  echo "sitewatch round $r: wall ${wall}s cpu ${cpu}s rss ${rss}KiB up $up/$TARGETS wire-varbinds $vb agents-cpu $(( (a1 - a0) ))ticks" >&2
  sw_cpu=$(echo "$sw_cpu + $cpu" | bc); sw_wall=$(echo "$sw_wall + $wall" | bc)
  [ "$rss" -gt "$sw_rss" ] && sw_rss=$rss
  sw_ok=$((sw_ok + up)); sw_vb=$((sw_vb + vb)); sw_agent=$((sw_agent + a1 - a0))
done

# --- snmp_exporter ----------------------------------------------------------------------------
ex_cpu=0; ex_wall=0; ex_ok=0; ex_vb=0; ex_agent=0; ex_rss=0
if [ "$SKIP_EXPORTER" = 0 ]; then
{
  echo 'bench:'
  echo '  version: 2'
  echo '  auth:'
  echo "    community: $COMMUNITY"
  echo '  timeout: 5s'
  echo '  retries: 1'
  echo '  max_repetitions: 25'
  echo '  get:'
  echo '    - 1.3.6.1.2.1.1.3.0'
  echo '  walk:'
  for c in "${cols[@]}"; do echo "    - 1.3.6.1.2.1.2.2.1.$c"; done
  echo '  metrics:'
  echo '    - name: sysUpTime'
  echo '      oid: 1.3.6.1.2.1.1.3'
  echo '      type: gauge'
  for c in "${cols[@]}"; do
    t=gauge; [ "$c" = 2 ] && t=DisplayString
    printf '    - name: ifcol%s\n      oid: 1.3.6.1.2.1.2.2.1.%s\n      type: %s\n      indexes:\n        - labelname: ifIndex\n          type: gauge\n' "$c" "$c" "$t"
  done
} >"$tmp/snmp.yml"
prometheus-snmp-exporter --config.file="$tmp/snmp.yml" --web.listen-address="127.0.0.1:$EXPORTER_PORT" \
  --log.level=warn >"$tmp/exporter.log" 2>&1 &
exporter=$!; pids+=("$exporter")
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$EXPORTER_PORT/" >/dev/null && break; sleep 0.1; done
check=$(curl -fs "http://127.0.0.1:$EXPORTER_PORT/snmp?target=127.0.0.1:$BASE_PORT&module=bench" || true)
echo "$check" | grep -q '^ifcol10{' || { echo "snmp_exporter scrape failed:" >&2; echo "$check" | head >&2; cat "$tmp/exporter.log" >&2; exit 1; }

cat >"$tmp/scrape.sh" <<EOF
#!/usr/bin/env bash
# Scrapes the ports given as arguments one after another; prints pdus_returned per scrape.
for p in "\$@"; do
  curl -fs --max-time 30 "http://127.0.0.1:$EXPORTER_PORT/snmp?target=127.0.0.1:\$p&module=bench" \
    | awk '/^snmp_scrape_pdus_returned /{print \$2}'
done
EOF
chmod +x "$tmp/scrape.sh"

for r in $(seq 1 "$ROUNDS"); do
  c0=$(cpu_ticks "$exporter"); a0=$(cpu_ticks "${agent_pids[@]}"); t0=$(date +%s.%N)
  seq "$BASE_PORT" $((BASE_PORT + TARGETS - 1)) \
    | timeout "$PHASE_TIMEOUT" xargs -P "$EXPORTER_PARALLEL" -n $(( (TARGETS + EXPORTER_PARALLEL - 1) / EXPORTER_PARALLEL )) "$tmp/scrape.sh" >"$tmp/pdus.txt"
  t1=$(date +%s.%N); c1=$(cpu_ticks "$exporter"); a1=$(cpu_ticks "${agent_pids[@]}")
  ok=$(wc -l <"$tmp/pdus.txt"); vb=$(paste -sd+ "$tmp/pdus.txt" | bc)
  wall=$(echo "$t1 - $t0" | bc); cpu=$(echo "scale=3; ($c1 - $c0) / $hz" | bc)
  echo "snmp_exporter round $r: wall ${wall}s cpu ${cpu}s scrapes $ok/$TARGETS pdus-returned $vb agents-cpu $((a1 - a0))ticks" >&2
  ex_cpu=$(echo "$ex_cpu + $cpu" | bc); ex_wall=$(echo "$ex_wall + $wall" | bc)
  ex_ok=$((ex_ok + ok)); ex_vb=$((ex_vb + vb)); ex_agent=$((ex_agent + a1 - a0))
done
ex_rss=$(awk '/VmHWM/{print $2}' "/proc/$exporter/status")
kill "$exporter"
fi

# --- optional steady state: `sitewatch run` ---------------------------------------------------
run_line=""
if [ "$RUN_SECONDS" -gt 0 ]; then
  # A sink that accepts every write (the InfluxDB writer's cost stays in, the database's not).
  cat >"$tmp/sink.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204); self.end_headers()
    do_GET = do_POST
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
  sink_port=$((EXPORTER_PORT + 1))
  python3 "$tmp/sink.py" "$sink_port" & pids+=($!)
  sed -i "s#^url = \"http://127.0.0.1:9\"#url = \"http://127.0.0.1:$sink_port\"#" "$tmp/sitewatch.toml"
  "$SITEWATCH_BIN" run --config "$tmp/sitewatch.toml" >"$tmp/run.log" 2>&1 &
  sw=$!; pids+=("$sw")
  metric() { # sum of a counter over its label sets, from sitewatch's /metrics
    curl -fs "http://127.0.0.1:$((EXPORTER_PORT + 2))/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%d", s}'
  }
  for _ in $(seq 1 100); do metric sitewatch_snmp_varbinds_total >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 5
  c0=$(cpu_ticks "$sw"); a0=$(cpu_ticks "${agent_pids[@]}")
  p0=$(metric sitewatch_snmp_polls_total); v0=$(metric sitewatch_snmp_varbinds_total)
  sleep "$RUN_SECONDS"
  c1=$(cpu_ticks "$sw"); a1=$(cpu_ticks "${agent_pids[@]}")
  p1=$(metric sitewatch_snmp_polls_total); v1=$(metric sitewatch_snmp_varbinds_total)
  grep -c "SNMP poll failed" "$tmp/run.log" >"$tmp/failed" || true
  rss=$(awk '/VmRSS/{print $2}' "/proc/$sw/status"); hwm=$(awk '/VmHWM/{print $2}' "/proc/$sw/status")
  cpu=$(echo "scale=3; ($c1 - $c0) / $hz" | bc)
  run_line="sitewatch run: ${RUN_SECONDS}s window, interval $RUN_INTERVAL, $TARGETS targets: $((p1 - p0)) polls ($(cat "$tmp/failed") failed in the log), $((v1 - v0)) wire varbinds, cpu ${cpu}s ($(echo "scale=1; 100 * $cpu / $RUN_SECONDS" | bc)% of one core), RSS ${rss} KiB (peak ${hwm} KiB), agents-cpu $((a1 - a0)) ticks"
  echo "$run_line" >&2
fi

# --- summary ----------------------------------------------------------------------------------
values=$((TARGETS * ROUNDS * values_per_target))
python3 - "$TARGETS" "$ROUNDS" "$values_per_target" "$sw_cpu" "$sw_wall" "$sw_rss" "$sw_ok" "$sw_vb" "$sw_agent" \
  "$ex_cpu" "$ex_wall" "$ex_rss" "$ex_ok" "$ex_vb" "$ex_agent" "$hz" <<'EOF'
import sys
a = sys.argv[1:]
T, R, V = int(a[0]), int(a[1]), int(a[2])
sw = dict(cpu=float(a[3]), wall=float(a[4]), rss=int(a[5]), ok=int(a[6]), vb=int(a[7]), agent=int(a[8]))
ex = dict(cpu=float(a[9]), wall=float(a[10]), rss=int(a[11]), ok=int(a[12]), vb=int(a[13]), agent=int(a[14]))
hz = int(a[15])
values = T * R * V
print(f"| | sitewatch `once` | snmp_exporter 0.21 | ratio (exporter / sitewatch) |")
print(f"|---|---|---|---|")
def div(a, b, fmt="{:.2f}"):
    return fmt.format(a / b) if b else "-"
rows = [
  ("successful polls", f"{sw['ok']}/{T*R}", f"{ex['ok']}/{T*R}", ""),
  ("values collected (targets x rounds x {})".format(V), f"{values}", f"{values if ex['ok'] else 0}", ""),
  ("varbinds on the wire (as each tool counts)", f"{sw['vb']}", f"{ex['vb']}", ""),
  ("wall time per round (s)", f"{sw['wall']/R:.2f}", f"{ex['wall']/R:.2f}", div(ex['wall'], sw['wall'])),
  ("values/s", div(values, sw['wall'], "{:.0f}"), div(values, ex['wall'], "{:.0f}"), div(sw['wall'], ex['wall'])),
  ("CPU s per 100k values", f"{sw['cpu']*1e5/values:.3f}", f"{ex['cpu']*1e5/values:.3f}", div(ex['cpu'], sw['cpu'])),
  ("peak RSS (MiB)", f"{sw['rss']/1024:.1f}", f"{ex['rss']/1024:.1f}", div(ex['rss'], sw['rss'])),
  ("agents' (snmpd) CPU s per round", f"{sw['agent']/hz/R:.2f}", f"{ex['agent']/hz/R:.2f}", div(ex['agent'], sw['agent'])),
]
for r in rows: print("| " + " | ".join(r) + " |")
per_poll = sw['cpu'] / (T * R)
print()
print(f"sitewatch CPU per target poll of {V} values: {per_poll*1000:.3f} ms;"
      f" 10,000 targets x {V} values every 60 s => {per_poll*10000/60*100:.1f}% of one core")
EOF
[ -n "$run_line" ] && echo && echo "$run_line"
exit 0
