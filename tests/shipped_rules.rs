//! The shipped rules (`deploy/rules/*.toml`) fire on the shipped profiles' data, end to end:
//! recordings of real devices, changed only in the values a fault changes (a UPS whose mains
//! failed, a PDU phase in overload, a hot rack), served by snmpsim, polled by `sitewatch run`
//! with auto-detection, judged by the shipped rule files, written to InfluxDB as events.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::influx::Influxd;
use common::sitewatch::Sitewatch;
use common::snmp::{snmpsim_data, Snmpsim};

const DB: &str = "rules";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The recording with some objects set to fixed values (type and value as in snmprec).
fn with_values(text: &str, changes: &[(&str, &str)]) -> String {
    let changes: BTreeMap<&str, &str> = changes.iter().copied().collect();
    let mut seen = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            match l
                .split_once('|')
                .and_then(|(oid, _)| changes.get(oid).map(|v| (oid, v)))
            {
                Some((oid, v)) => {
                    seen += 1;
                    format!("{oid}|{v}")
                }
                None => l.to_string(),
            }
        })
        .collect();
    assert_eq!(seen, changes.len(), "every changed OID is in the recording");
    out.join("\n") + "\n"
}

#[test]
fn shipped_rules_fire_on_recorded_devices_through_run() {
    let data = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        std::fs::write(data.path().join(format!("{name}.snmprec")), text).unwrap()
    };
    // UPS-MIB (RFC 1628): upsBatteryStatus 3 low, upsSecondsOnBattery, upsEstimatedMinutes-
    // Remaining, upsOutputSource 5 battery.
    write(
        "ups-on-battery",
        with_values(
            &snmpsim_data("UPS/eastpower-istars-swv053.snmprec"),
            &[
                ("1.3.6.1.2.1.33.1.2.1.0", "2|3"),
                ("1.3.6.1.2.1.33.1.2.2.0", "2|240"),
                ("1.3.6.1.2.1.33.1.2.3.0", "2|4"),
                ("1.3.6.1.2.1.33.1.4.1.0", "2|5"),
            ],
        ),
    );
    // APC rPDU2 phase 1: rPDU2PhaseStatusLoadState 4 overload.
    write(
        "pdu-overload",
        with_values(
            &snmpsim_data("UPS/apc-8641.snmprec"),
            &[("1.3.6.1.4.1.318.1.1.26.6.3.1.4.1", "2|4")],
        ),
    );
    // Geist internal sensor: temperature fixed at 35.0 °C (the recording varies it).
    write(
        "hot-rack",
        with_values(
            &snmpsim_data("iot/geist-temperature-sensor.snmprec"),
            &[("1.3.6.1.4.1.21239.5.1.2.1.5.1", "2|350")],
        ),
    );
    let sim = Snmpsim::start(data.path());
    let influx = Influxd::start();
    influx.create_database(DB);
    let targets: String = ["ups-on-battery", "pdu-overload", "hot-rack"]
        .iter()
        .map(|name| {
            format!(
                "[[snmp.target]]\nname = \"{name}\"\naddress = \"{addr}\"\nversion = \"2c\"\ncommunity = \"{name}\"\ntags = {{ site = \"dc1\" }}\n\n",
                addr = sim.address()
            )
        })
        .collect();
    let body = format!(
        r#"
[influx]
url = "{url}"
database = "{DB}"
flush_interval = "200ms"

[snmp]
profiles_dir = "{profiles}"
interval = "2s"
timeout = "2s"
retries = 1

{targets}
[rules]
files = ["{rules}/*.toml"]
"#,
        url = influx.url(),
        profiles = repo().join("mappings/snmp").display(),
        rules = repo().join("deploy/rules").display(),
    );
    let mut sw = Sitewatch::start(&body, "info", &[]);

    let firing = |rule: &str, device: &str| -> Option<Vec<serde_json::Value>> {
        influx
            .rows(
                DB,
                &format!(
                    "SELECT severity, message FROM events WHERE rule = '{rule}' AND device = '{device}' AND state = 'firing'"
                ),
            )
            .into_iter()
            .next()
    };
    // (rule, device, severity): immediate rules first, then those with `for = "20s"`.
    let expected = [
        ("ups_on_battery", "ups-on-battery", "critical"),
        ("ups_battery_low", "ups-on-battery", "warning"),
        ("pdu_phase_load", "pdu-overload", "critical"),
        ("rack_inlet_temperature", "hot-rack", "critical"),
    ];
    for (rule, device, severity) in expected {
        let deadline = Instant::now() + Duration::from_secs(60);
        let row = loop {
            if let Some(r) = firing(rule, device) {
                break r;
            }
            assert!(
                Instant::now() < deadline,
                "{rule} did not fire for {device} within 60 s; events: {:?}\nlog:\n{}",
                influx.rows(DB, "SELECT rule, device, severity, state FROM events"),
                sw.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        assert_eq!(row[1], serde_json::json!(severity), "{rule}: {row:?}");
        assert!(
            row[2].as_str().is_some_and(|m| m.contains(device)),
            "{rule} message names the device: {row:?}"
        );
    }
    // The healthy parts of the same devices stay quiet.
    for (rule, device) in [
        ("ups_battery_runtime", "pdu-overload"),
        ("pdu_phase_load", "hot-rack"),
    ] {
        assert!(firing(rule, device).is_none(), "{rule} on {device}");
    }
    let status = sw.terminate().expect("sitewatch was running");
    assert!(status.success(), "exit {status}; log:\n{}", sw.log());
}
