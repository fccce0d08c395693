#!/usr/bin/env bash
# Regenerates docs/img/overview.png from real demo data: runs the demo (deploy/demo.sh:
# Mosquitto, InfluxDB and sitewatch on loopback, the demo traffic) and renders what InfluxDB
# then holds with examples/render_overview.rs. Needs fonts-dejavu-core (or FONT=/path/to/font.ttf).
# Usage: bash docs/img/render-overview.sh          (DEMO_SECONDS=90 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
font_args=(); [ -n "${FONT:-}" ] && font_args=(--font "$FONT")

cargo build --release --locked --quiet --example render_overview
# The URL is only known inside the demo, which exports it to the command it runs.
DEMO_SECONDS=${DEMO_SECONDS:-90} bash deploy/demo.sh -- bash -c \
  'exec target/release/examples/render_overview --influx "$SITEWATCH_DEMO_INFLUX_URL" --out docs/img/overview.png "$@"' \
  render "${font_args[@]}"
