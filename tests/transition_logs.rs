//! Logs for journald and log pipelines, through the real binary in JSON log mode:
//!
//! - an SNMP agent (snmpd) killed and started again: exactly one `device down` and one
//!   `device up` line for that device, with the device, address and error as fields, however
//!   many polls failed in between;
//! - the MQTT broker restarted: one `MQTT broker disconnected` and one `MQTT broker
//!   reconnected` line;
//! - InfluxDB killed for a few seconds of retries, then started again: one `influx sink
//!   failing` and one `influx sink recovered` line, and `sitewatch_sink_up` /
//!   `sitewatch_sink_failing` follow;
//! - payloads that do not decode on two topics: each topic is named (as a field) in a
//!   warning, and the repeats of one topic are not.
//!
//! Run: `cargo test --test transition_logs` (about 20 s).

mod common;

use std::time::Duration;

use common::eventually;
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;
use common::snmp::{Snmpd, SNMPD_COMMUNITY};
use serde_json::Value;

const DB: &str = "transition_logs";

/// The JSON log lines whose `message` starts with `message` and whose fields include all of
/// `fields`.
fn lines(log: &str, message: &str, fields: &[(&str, &str)]) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
                && fields.iter().all(|(k, want)| v[*k].as_str() == Some(*want))
        })
        .collect()
}

/// An InfluxDB to write to (every config needs a sink), and its `[influx]` table.
fn sink() -> (Influxd, String) {
    let influx = Influxd::start();
    influx.create_database(DB);
    let table = format!(
        "[influx]\nurl = \"{}\"\ndatabase = \"{DB}\"\nflush_interval = \"100ms\"\n",
        influx.url()
    );
    (influx, table)
}

/// One SNMP v2c target on snmpd, polled every 500 ms with a 200 ms timeout.
fn snmp_table(device: &str, address: &str) -> String {
    format!(
        r#"[snmp]
profiles_dir = "{profiles}"
interval = "500ms"
timeout = "200ms"
retries = 0

[[snmp.target]]
name = "{device}"
address = "{address}"
version = "2c"
community = "{SNMPD_COMMUNITY}"
profiles = ["if-mib"]
"#,
        profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/snmp"),
    )
}

#[test]
fn a_device_going_down_then_up_logs_one_line_each_way() {
    let (_influx, influx_table) = sink();
    let mut agent = Snmpd::start();
    let address = agent.address();
    let body = format!("{influx_table}\n{}", snmp_table("ups-7", &address));
    let sw = Sitewatch::start_with_service("log_format = \"json\"", &body, "info", &[]);
    let polls = |result: &str| {
        sw.metric(
            "sitewatch_snmp_target_polls_total",
            &["device=\"ups-7\"", &format!("result=\"{result}\"")],
        )
    };
    eventually(Duration::from_secs(20), "a first answered poll", || {
        (polls("ok") >= 1.0).then_some(())
    });

    agent.stop();
    let down = eventually(Duration::from_secs(20), "the device down line", || {
        let found = lines(&sw.log(), "device down", &[("device", "ups-7")]);
        (!found.is_empty()).then_some(found)
    });
    // Several failed polls while it is down (a timeout, or an error where the kernel
    // answers "port unreachable"): still one line.
    let failed = || polls("timeout") + polls("error");
    let failed_before = failed();
    eventually(Duration::from_secs(20), "four more failed polls", || {
        (failed() >= failed_before + 4.0).then_some(())
    });
    agent.start_again();
    eventually(Duration::from_secs(20), "the device up line", || {
        (!lines(&sw.log(), "device up", &[("device", "ups-7")]).is_empty()).then_some(())
    });
    // A few answered polls after it is back: no more lines either way.
    let ok_before = polls("ok");
    eventually(Duration::from_secs(20), "three more answered polls", || {
        (polls("ok") >= ok_before + 3.0).then_some(())
    });

    let log = sw.log();
    let down_lines = lines(&log, "device down", &[("device", "ups-7")]);
    let up_lines = lines(&log, "device up", &[("device", "ups-7")]);
    assert_eq!(down_lines.len(), 1, "down lines: {down_lines:?}\n{log}");
    assert_eq!(up_lines.len(), 1, "up lines: {up_lines:?}\n{log}");
    let down = &down[0];
    assert_eq!(down["level"], "WARN", "{down}");
    assert_eq!(down["address"], address.as_str(), "{down}");
    assert_eq!(down["collector"], "SNMP", "{down}");
    assert!(
        down["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{down}"
    );
    let up = &up_lines[0];
    assert_eq!(up["level"], "INFO", "{up}");
    assert!(
        up["down_for_s"].as_f64().is_some_and(|s| s >= 1.0),
        "down for at least the four failed polls: {up}"
    );
    assert!(up["failed_polls"].as_u64().is_some_and(|n| n >= 4), "{up}");
    // The per-poll failure is a debug line now: not in an info log.
    assert!(!log.contains("SNMP poll failed"), "{log}");
}

#[test]
fn mqtt_decode_errors_name_each_bad_topic_and_broker_restarts_log_once_each_way() {
    let (_influx, influx_table) = sink();
    let mut broker = Mosquitto::start();
    let body = format!(
        r#"{influx_table}
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "transition-logs"
keep_alive = "5s"
reconnect_backoff_max = "300ms"

[[mqtt.subscription]]
topic = "hall/{{sensor}}/temp"
name = "hall-temp"
measurement = "hall"
format = "number"
field = "temp_c"
"#,
        port = broker.port,
    );
    let sw = Sitewatch::start_with_service("log_format = \"json\"", &body, "info", &[]);
    eventually(Duration::from_secs(20), "MQTT connected", || {
        (sw.metric("sitewatch_mqtt_connected", &[]) == 1.0).then_some(())
    });

    // Sensor a breaks and keeps sending garbage; then sensor b breaks too.
    for _ in 0..5 {
        broker.publish("hall/a/temp", b"n/a", 1, false);
    }
    broker.publish("hall/b/temp", b"--", 1, false);
    broker.publish("hall/c/temp", b"21.5", 1, false);
    eventually(Duration::from_secs(20), "six decode errors counted", || {
        let n = sw.metric(
            "sitewatch_mqtt_decode_errors_total",
            &["subscription=\"hall-temp\""],
        );
        (n >= 6.0).then_some(())
    });
    let log = sw.log();
    let a = lines(&log, "MQTT payload dropped", &[("topic", "hall/a/temp")]);
    let b = lines(&log, "MQTT payload dropped", &[("topic", "hall/b/temp")]);
    assert_eq!(
        a.len(),
        1,
        "sensor a: one warning for five errors: {a:?}\n{log}"
    );
    assert_eq!(
        b.len(),
        1,
        "sensor b is named though a keeps failing: {b:?}\n{log}"
    );
    assert_eq!(a[0]["level"], "WARN");
    assert_eq!(a[0]["subscription"], "hall-temp");
    assert_eq!(a[0]["reason"], "not_a_number", "{}", a[0]);
    assert!(
        lines(&log, "MQTT payload dropped", &[("topic", "hall/c/temp")]).is_empty(),
        "a good value is not an error: {log}"
    );

    broker.restart();
    eventually(Duration::from_secs(30), "the reconnected line", || {
        (!lines(&sw.log(), "MQTT broker reconnected", &[]).is_empty()).then_some(())
    });
    let log = sw.log();
    let gone = lines(&log, "MQTT broker disconnected", &[]);
    let back = lines(&log, "MQTT broker reconnected", &[]);
    assert_eq!(gone.len(), 1, "{gone:?}\n{log}");
    assert_eq!(back.len(), 1, "{back:?}\n{log}");
    assert_eq!(gone[0]["level"], "WARN");
    assert!(gone[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(back[0]["down_for_s"].as_f64().is_some());
}

#[test]
fn an_influx_outage_logs_failing_once_and_recovered_once() {
    let (mut influx, influx_table) = sink();
    let agent = Snmpd::start();
    // snmp_poll rows every 500 ms keep the sink writing; no spool, so it is "failing".
    let body = format!(
        "{influx_table}max_retry_delay = \"200ms\"\ntimeout = \"1s\"\n\n{}",
        snmp_table("pdu-3", &agent.address())
    );
    let sw = Sitewatch::start_with_service("log_format = \"json\"", &body, "info", &[]);
    let gauge = |name: &str| sw.metric(name, &["sink=\"influx\""]);
    eventually(Duration::from_secs(20), "points written", || {
        (sw.metric("sitewatch_influx_points_written_total", &[]) >= 1.0
            && gauge("sitewatch_sink_up") == 1.0)
            .then_some(())
    });

    influx.stop();
    eventually(Duration::from_secs(20), "the sink failing", || {
        (gauge("sitewatch_sink_failing") == 1.0 && gauge("sitewatch_sink_up") == 0.0).then_some(())
    });
    // Retries every 200 ms at most: many failed requests, still one line.
    let retries = sw.metric("sitewatch_influx_retries_total", &[]);
    eventually(Duration::from_secs(20), "five more retries", || {
        (sw.metric("sitewatch_influx_retries_total", &[]) >= retries + 5.0).then_some(())
    });
    influx.restart();
    eventually(Duration::from_secs(30), "the sink writing again", || {
        (gauge("sitewatch_sink_up") == 1.0 && gauge("sitewatch_sink_failing") == 0.0).then_some(())
    });

    let log = sw.log();
    let failing = lines(&log, "influx sink failing", &[("sink", "influx")]);
    let recovered = lines(&log, "influx sink recovered", &[("sink", "influx")]);
    assert_eq!(failing.len(), 1, "{failing:?}\n{log}");
    assert_eq!(recovered.len(), 1, "{recovered:?}\n{log}");
    assert_eq!(failing[0]["level"], "WARN", "{}", failing[0]);
    assert!(
        failing[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        failing[0]
    );
    assert!(
        recovered[0]["down_for_s"].as_f64().is_some_and(|s| s > 0.0),
        "{}",
        recovered[0]
    );
}
