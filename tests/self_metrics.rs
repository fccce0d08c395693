//! sitewatch's own `/metrics` as an SRE's tooling sees it: the real binary with InfluxDB,
//! Mosquitto and snmpd started by the harness, scraped before and after traffic, and the
//! scrape checked by `promtool check metrics` (Debian package `prometheus`), which must find
//! nothing. Also: `sitewatch_build_info` and the process metrics are there, counters of known
//! label sets are at 0 before the first event, durations are histograms.
//!
//! Run: `cargo test --test self_metrics` (about 10 s).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::{metric_sum, Sitewatch};
use common::snmp::{Snmpd, SNMPD_COMMUNITY};
use common::{eventually, require_binary};

const DB: &str = "self_metrics";

fn config(influx: &Influxd, broker: &Mosquitto, agent: &Snmpd) -> String {
    format!(
        r#"[influx]
url = "{influx}"
database = "{DB}"
flush_interval = "100ms"
spool_dir = "{{spool}}"

[mqtt]
host = "127.0.0.1"
port = {mqtt}
client_id = "self-metrics"

[[mqtt.subscription]]
topic = "room/{{sensor}}/temp"
name = "room-temp"
measurement = "room"
format = "number"
field = "temp_c"

[snmp]
profiles_dir = "{profiles}"
interval = "1s"
timeout = "500ms"
retries = 0

[[snmp.target]]
name = "agent-1"
address = "{agent}"
version = "2c"
community = "{SNMPD_COMMUNITY}"
profiles = ["if-mib"]
"#,
        influx = influx.url(),
        mqtt = broker.port,
        agent = agent.address(),
        profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/snmp"),
    )
}

/// `promtool check metrics` on `text`: its exit status and everything it printed.
fn promtool_check(text: &str) -> (bool, String) {
    let promtool = require_binary("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("pipe /metrics to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The value of the one sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn live_metrics_pass_promtool_and_carry_build_process_and_zeroed_counters() {
    // Found before anything starts: a missing promtool fails with the install command.
    require_binary("promtool", "prometheus");
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let agent = Snmpd::start();
    let sw = Sitewatch::start(&config(&influx, &broker, &agent), "info", &[]);

    // Before any MQTT traffic.
    let before = eventually(Duration::from_secs(20), "MQTT connected", || {
        let m = sw.metrics();
        (metric_sum(&m, "sitewatch_mqtt_connected", &[]) == 1.0).then_some(m)
    });
    let version = format!(
        "sitewatch_build_info{{version=\"{}\",",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        before
            .lines()
            .any(|l| l.starts_with(&version) && l.ends_with(" 1")),
        "no {version}...}} 1 in:\n{before}"
    );
    assert!(
        metric_sum(&before, "process_resident_memory_bytes", &[]) > 1e6,
        "process_resident_memory_bytes missing or tiny:\n{before}"
    );
    assert!(
        metric_sum(&before, "process_start_time_seconds", &[]) > 1.6e9,
        "process_start_time_seconds:\n{before}"
    );
    assert!(before.contains("# TYPE process_cpu_seconds_total counter"));
    for series in [
        "sitewatch_mqtt_messages_total{subscription=\"room-temp\"}",
        "sitewatch_mqtt_reconnects_total",
        "sitewatch_influx_dropped_total{reason=\"buffer_full\"}",
        "sitewatch_influx_write_errors_total{kind=\"timeout\"}",
        "sitewatch_snmp_target_polls_total{device=\"agent-1\",result=\"timeout\"}",
    ] {
        assert_eq!(
            sample(&before, series),
            Some(0.0),
            "{series} should be at 0 before any event:\n{before}"
        );
    }
    assert_eq!(
        sample(&before, "sitewatch_sink_up{sink=\"influx\"}"),
        Some(1.0),
        "{before}"
    );
    assert!(
        sample(&before, "sitewatch_influx_buffer_limit_bytes").is_some_and(|v| v > 0.0),
        "{before}"
    );
    let (ok, said) = promtool_check(&before);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics (before traffic): {said}\n{before}"
    );

    // Traffic: good values, one payload that does not decode, SNMP polls, InfluxDB writes.
    for (i, sensor) in ["a", "b", "c"].iter().enumerate() {
        broker.publish(
            &format!("room/{sensor}/temp"),
            format!("{}", 20 + i).as_bytes(),
            1,
            false,
        );
    }
    broker.publish("room/d/temp", b"warm", 1, false);
    let after = eventually(
        Duration::from_secs(20),
        "MQTT points written, an SNMP poll answered, a decode error counted",
        || {
            let m = sw.metrics();
            let ready = metric_sum(&m, "sitewatch_mqtt_samples_total", &[]) >= 3.0
                && metric_sum(&m, "sitewatch_influx_points_written_total", &[]) >= 3.0
                && metric_sum(&m, "sitewatch_snmp_polls_total", &["result=\"ok\""]) >= 1.0
                && metric_sum(&m, "sitewatch_mqtt_decode_errors_total", &[]) >= 1.0
                && m.contains("sitewatch_influx_write_duration_seconds_bucket");
            ready.then_some(m)
        },
    );
    // Durations are histograms (aggregatable across shards), not summaries.
    assert!(
        after.contains("# TYPE sitewatch_influx_write_duration_seconds histogram"),
        "{after}"
    );
    assert!(
        after.contains("# TYPE sitewatch_snmp_poll_duration_seconds histogram"),
        "{after}"
    );
    assert!(
        !after.contains("quantile="),
        "a summary is exported:\n{after}"
    );
    assert!(
        after.contains("sitewatch_snmp_poll_duration_seconds_bucket{le=\"+Inf\"}"),
        "{after}"
    );
    assert_eq!(
        sample(&after, "sitewatch_snmp_target_up{device=\"agent-1\"}"),
        Some(1.0),
        "{after}"
    );
    // Every family the scrape shows has its HELP line.
    for line in after.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line
            .split_whitespace()
            .nth(2)
            .expect("TYPE line has a name");
        assert!(
            after.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line:\n{after}"
        );
    }
    let (ok, said) = promtool_check(&after);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics (after traffic): {said}\n{after}"
    );
    println!(
        "promtool check metrics: clean on {} lines ({} families)",
        after.lines().count(),
        after.lines().filter(|l| l.starts_with("# TYPE ")).count()
    );
}
