#!/usr/bin/env bash
# The demo's first responder: watches GET /api/v1/alerts and acknowledges the water leak
# alert a few seconds after it fires (after the NOC's escalate_after has handed it on to
# the duty manager), as a person would with `sitewatch ack`. Other alerts are left alone,
# so the report shows one acknowledged and some unacknowledged incidents.
# Usage: respond.sh SITEWATCH_BIN METRICS_PORT SECONDS   (SITEWATCH_API_TOKEN set)
set -euo pipefail
bin=$1 port=$2 seconds=$3
for ((t = 0; t < seconds; t++)); do
  id=$(curl -sf "http://127.0.0.1:$port/api/v1/alerts" | python3 -c '
import json, sys, time
for a in json.load(sys.stdin)["alerts"]:
    age = time.time() - a["updated_ns"] / 1e9
    if a["rule"] == "water_leak" and a["acknowledged"] is None and age >= 4:
        print(a["id"]); break
' || true)
  if [ -n "$id" ]; then
    "$bin" ack "$id" --by "demo-responder" --comment "water under rack row A: facilities on the way" \
      --url "http://127.0.0.1:$port"
    exit 0
  fi
  sleep 1
done
echo "respond.sh: no water leak alert to acknowledge within $seconds s" >&2
