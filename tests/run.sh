#!/usr/bin/env bash
# The test command: installs what the suite needs (Debian packages, snmpsim from PyPI),
# then runs formatting, lints and the whole test suite against real services.
# Usage: bash tests/run.sh        (from a clone of the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages the harness starts (binary:package).
needed=(
  influxd:influxdb
  victoria-metrics:victoria-metrics
  mosquitto:mosquitto
  mosquitto_pub:mosquitto-clients
  snmpd:snmpd
  snmpget:snmp
  snmptrap:snmp
  prometheus-alertmanager:prometheus-alertmanager
  prometheus-snmp-exporter:prometheus-snmp-exporter
  promtool:prometheus
  # The test PKI (tests/common/pki.rs): a CA and certificates made at test time.
  openssl:openssl
  # The Debian package test (tests/package.rs): cargo-deb's dependency scan and strip, the
  # maintainer scripts' adduser, systemd's unit checker.
  dpkg-shlibdeps:dpkg-dev
  strip:binutils
  adduser:adduser
  systemd-analyze:systemd
  # The incident report's HTML test (tests/report.rs) renders it in a headless browser.
  chromium:chromium
  # Cluster mode (src/cluster/): etcd-client builds etcd's gRPC protos with protoc, and
  # tests/cluster.rs starts a private etcd.
  protoc:protobuf-compiler
  etcd:etcd-server
)
missing=()
for pair in "${needed[@]}"; do
  bin=${pair%%:*}; pkg=${pair##*:}
  if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1; then missing+=("$pkg"); fi
done
# The tz database: MQTT timestamps in local time (timestamp_timezone) are read with it.
if [ ! -e /usr/share/zoneinfo/Europe/Berlin ]; then missing+=(tzdata); fi
# The font the incident report's plots are drawn with (src/report/plot.rs).
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then missing+=(fonts-dejavu-core); fi
# The well-known protos (google/protobuf/descriptor.proto) etcd's protos import.
if [ ! -e /usr/include/google/protobuf/descriptor.proto ]; then missing+=(libprotobuf-dev); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # The packages' own services are not wanted: the tests start private instances.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    echo 'exit 101' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ "$own_policy" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

# snmpsim (realistic device agents serving .snmprec data), snmpsim-data (recordings of
# real UPSes, PDUs and sensors, for the profile conformance tests), pymodbus (the Modbus
# TCP server of tests/modbus.rs) and pysparkplug live on PyPI. They go into a virtualenv under
# target/ so the system Python is left alone (Debian forbids pip there).
venv=target/snmpsim-venv
if [ ! -x "$venv/bin/snmpsim-command-responder" ] || ! "$venv/bin/python3" -c 'import snmpsim_data, pymodbus, pysparkplug' 2>/dev/null; then
  command -v python3 >/dev/null 2>&1 || { $SUDO apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3; }
  if [ ! -x "$venv/bin/python3" ] && ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv
    python3 -m venv "$venv"
  fi
  # snmpsim 1.2 imports pysmi without declaring it; snmpsim-data 1.0.1 needs pysmi < 2.
  # pysparkplug makes the Sparkplug B payloads of tests/mqtt_shapes.rs (another implementation
  # of sparkplug_b.proto than sitewatch's).
  "$venv/bin/pip" install --quiet 'snmpsim==1.2.2' 'pysmi==1.6.3' 'snmpsim-data==1.0.1' \
    'pymodbus==3.11.4' 'pysparkplug==0.6.1' 'protobuf==7.36.2' 'paho-mqtt==1.6.1'
fi
export PATH="$PWD/$venv/bin:$PATH"

# The trap burst test asks for a 4 MiB socket receive buffer, which the kernel caps at
# net.core.rmem_max for unprivileged processes (Linux default 208 KiB). Raise the cap where
# this machine lets us; where it does not, the test names the setting when it fails.
if [ "$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo 0)" -lt 4194304 ]; then
  $SUDO sysctl -q -w net.core.rmem_max=4194304 >/dev/null 2>&1 || true
fi

# Debian keeps daemons in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust 1.85 or newer with rustup (Debian 12's cargo package is too old)" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Licences, banned crates and sources (deny.toml).
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked --quiet cargo-deny@0.20.2
cargo deny --locked check licenses bans sources
# tests/package.rs packs the test build into a .deb with this cargo-deb, installs and purges it.
if ! cargo deb --version 2>/dev/null | grep -qx 'cargo-deb 3.8.0'; then
  cargo install --locked --quiet --force cargo-deb@3.8.0
fi
# Known vulnerabilities, offline: the build machines cannot fetch the RustSec database, so a
# snapshot of it (../shared/advisory-db beside the repository, or $SITEWATCH_ADVISORY_DB) is
# laid out as the git checkout cargo-deny 0.20 reads (deny.toml: db-path), then any advisory
# not ignored with its reason in deny.toml fails the run.
advisory_db=${SITEWATCH_ADVISORY_DB:-../shared/advisory-db}
if [ -d "$advisory_db/crates" ]; then
  d=target/advisory-dbs/advisory-db-3157b0e258782691
  rm -rf "$d" && mkdir -p "$d" && cp -r "$advisory_db"/. "$d"/
  (cd "$d" && git init -q && git add -A && git -c user.name=ci -c user.email=ci@localhost commit -qm snapshot)
  cargo deny --offline --locked check advisories
else
  cat >&2 <<EOF
########################################################################################
# WARNING: security advisories were NOT checked.
# No RustSec advisory database at "$advisory_db" (relative to $PWD).
# Set SITEWATCH_ADVISORY_DB to a copy of github.com/rustsec/advisory-db (its crates/ and
# rust/ folders) and run again; licences, bans, sources and the tests still run.
########################################################################################
EOF
fi
cargo test --all-targets --locked
