#!/usr/bin/env bash
# Renders an HTML incident report (`sitewatch report --format html`) into a PNG with headless
# Chromium, by default docs/img/report.png (the picture in docs/report.md).
# Usage: bash deploy/demo/report-screenshot.sh REPORT.html [OUT.png]
#        bash deploy/demo/report-screenshot.sh --demo [OUT.png]
#            runs the demo (deploy/demo.sh: a rack overheats, a leak sensor trips, a PDU
#            carries more than 80 % of its circuit), makes the report of its data (--context 5m:
#            the demo's incidents last seconds) and renders it.
# WIDTH/HEIGHT set the browser window (1280x2400 by default); DEMO_SECONDS the demo's length (90).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
usage="usage: bash deploy/demo/report-screenshot.sh REPORT.html|--demo [OUT.png]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
command -v chromium >/dev/null 2>&1 || { echo "chromium not found: sudo apt-get install -y chromium" >&2; exit 1; }
out=${2:-docs/img/report.png}
case "$out" in /*) ;; *) out="$repo/$out" ;; esac
work=$(mktemp -d -t sitewatch-report-shot.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ "$1" = "--demo" ]; then
  html="$work/report.html"
  # demo.sh builds the release binary; cargo puts it under $CARGO_TARGET_DIR when set.
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/sitewatch
  DEMO_SECONDS=${DEMO_SECONDS:-90} bash deploy/demo.sh -- bash -c \
    '"$0" report --config "$SITEWATCH_DEMO_CONFIG" --from -20m --context 5m --format html --out "$1"' \
    "$bin" "$html"
else
  html=$1
  [ -f "$html" ] || { echo "$html: no such file; $usage" >&2; exit 1; }
  case "$html" in /*) ;; *) html="$repo/$html" ;; esac
fi

mkdir -p "$(dirname "$out")"
# --no-sandbox: Chromium refuses to run as root otherwise; the page is our own report, with
# no scripts. Its own profile directory, so a running browser's profile is not touched.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$work/profile" --window-size="${WIDTH:-1280},${HEIGHT:-2400}" \
  --screenshot="$out" "file://$html" 2>"$work/chromium.log" \
  || { echo "chromium failed; its log:" >&2; cat "$work/chromium.log" >&2; exit 1; }
[ -s "$out" ] || { echo "chromium wrote no screenshot; its log:" >&2; cat "$work/chromium.log" >&2; exit 1; }
echo "==> $out"
