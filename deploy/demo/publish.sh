#!/usr/bin/env bash
# Publishes facility sensor traffic over MQTT for the demo: per-rack temperature and humidity
# (JSON with a millisecond timestamp and the sensor's name, as the sensor sends it; the demo
# config maps it onto temperature_c / humidity_pct), an under-floor leak sensor that trips
# once, and PDU readings as InfluxDB line protocol already in docs/naming.md's names
# (pdu_phase current_a / power_w, pdu power_w). Rack a03 overheats in the middle of the run.
# Usage: publish.sh HOST PORT SECONDS
set -euo pipefail
host=$1 port=$2 seconds=$3
pub() { mosquitto_pub -h "$host" -p "$port" -q 1 -i "demo-pub-$$" -t "$1" -m "$2"; }

for ((t = 0; t < seconds; t++)); do
  now_ms=$(date +%s%3N)
  for rack in a01 a02 a03 a04; do
    base=$((230 + ${rack:2:1} * 4))                   # tenths of °C: 23.4 .. 24.6
    wobble=$(( (t * 7 + ${rack:2:1} * 3) % 5 ))        # deterministic ±0.2 °C jitter
    temp=$((base + wobble - 2))
    if [ "$rack" = a03 ]; then
      # Cooling fault: climbs 0.5 °C/s from t=10 to 30.0 °C, holds, recovers from 70 % of the run.
      hot_from=10 recover_at=$((seconds * 7 / 10))
      if ((t >= hot_from && t < recover_at)); then
        temp=$((base + (t - hot_from) * 5)); ((temp > 300)) && temp=300
      elif ((t >= recover_at)); then
        temp=$((300 - (t - recover_at) * 10)); ((temp < base)) && temp=$base
      fi
    fi
    hum=$((450 + ${rack:2:1} * 10 + wobble))
    pub "dc/dc1/hall1/$rack/env" \
      "{\"ts\": $now_ms, \"device\": \"env-$rack\", \"temperature\": $((temp / 10)).$((temp % 10)), \"humidity\": $((hum / 10)).$((hum % 10))}"
  done
  # Leak sensor under the raised floor: wet for ten seconds in the middle of the run.
  leak=false; ((t >= seconds / 2 && t < seconds / 2 + 10)) && leak=true
  pub "dc/dc1/hall1/leak/underfloor-1" "{\"ts\": $now_ms, \"device\": \"leak-hall1\", \"leak\": $leak}"
  # Two single-phase PDUs, line protocol passthrough (the timestamp is in nanoseconds): the
  # phase and the whole PDU, power in W at 230 V. From a quarter to five sixths of the run,
  # pdu-a03 carries more than 80 % of its 16 A circuit.
  for pdu in pdu-a01 pdu-a03; do
    amps=$((70 + (t % 6) + (${pdu:6:1} * 5)))          # tenths of A: 7.5 .. 9.0 A
    if [ "$pdu" = pdu-a03 ] && ((t >= seconds / 4 && t < seconds * 5 / 6)); then
      amps=$((amps + 50))                              # 13.5 .. 14.0 A
    fi
    watts=$((amps * 23))
    pub "lp/dc1/hall1/pdu" \
      "pdu_phase,device=$pdu,rack=a0${pdu:6:1},phase=L1 current_a=$((amps / 10)).$((amps % 10)),power_w=$watts ${now_ms}000000
pdu,device=$pdu,rack=a0${pdu:6:1} power_w=$watts ${now_ms}000000"
  done
  sleep 1
done
