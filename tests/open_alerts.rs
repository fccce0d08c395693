//! What is firing now, through the real binary, Mosquitto and InfluxDB 1.6: an alert that
//! fires is listed by `GET /api/v1/alerts` (with the rule's labels and annotations) and is
//! a row of the `alerts` measurement with `open = true`, re-written while it stays open; its
//! resolve empties the list and writes a last row with `open = false`.

mod common;

use std::time::Duration;

use common::alertmanager::http_get;
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::{line_protocol_rules_body, Sitewatch};
use common::{eventually, hour_ago_ns};
use serde_json::Value;

const DB: &str = "open_alerts";

const RULES: &str = r#"
[[rule]]
name = "rack_hot"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { warning = 27.0 }
message = "{rack} at {value}"
labels = { team = "facilities" }
annotations = { runbook_url = "https://wiki.example/rb/{rule}" }
"#;

fn alerts(sw: &Sitewatch) -> Vec<Value> {
    let (status, body) = http_get(sw.metrics_port, "/api/v1/alerts").expect("GET /api/v1/alerts");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["alerts"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_firing_alert_is_listed_and_written_until_it_resolves() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let mut sw = Sitewatch::start_with_rules(
        &line_protocol_rules_body(&influx.url(), DB, broker.port, "open-alerts", "env/#"),
        RULES,
    );
    assert!(alerts(&sw).is_empty(), "nothing open at start");

    // Hours-old data: the alert started long before any dashboard's default range.
    let base = hour_ago_ns();
    broker.publish_lines(
        "env/r1",
        &[
            format!("env,rack=r1 t=30 {base}"),
            format!("env,rack=r2 t=20 {base}"),
        ],
        1,
    );
    let open = eventually(
        Duration::from_secs(10),
        "the alert in /api/v1/alerts",
        || {
            let a = alerts(&sw);
            (!a.is_empty()).then_some(a)
        },
    );
    assert_eq!(open.len(), 1);
    let a = &open[0];
    assert_eq!(a["rule"], "rack_hot");
    assert_eq!(a["severity"], "warning");
    assert_eq!(a["tags"]["rack"], "r1");
    assert_eq!(a["labels"]["team"], "facilities");
    assert_eq!(
        a["annotations"]["runbook_url"],
        "https://wiki.example/rb/rack_hot"
    );
    assert_eq!(a["started_ns"].as_i64(), Some(base));
    assert_eq!(a["id"].as_str().map(str::len), Some(16));

    // A row of the alerts measurement, stamped now (so a 3-minute window finds it).
    let q = "SELECT \"open\", \"id\", \"started_ns\", \"runbook_url\" FROM \"alerts\" WHERE \"team\" = 'facilities' AND time > now() - 3m";
    let rows = eventually(Duration::from_secs(10), "an alerts row", || {
        let rows = influx.rows(DB, q);
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(rows[0][1], Value::Bool(true), "{rows:?}");
    assert_eq!(rows[0][2], a["id"]);
    assert_eq!(rows[0][3].as_i64(), Some(base));
    assert_eq!(rows[0][4], "https://wiki.example/rb/rack_hot");

    // Back below the level: the list empties and a last row says open = false.
    broker.publish_lines(
        "env/r1",
        &[format!("env,rack=r1 t=20 {}", base + 1_000_000_000)],
        1,
    );
    eventually(Duration::from_secs(10), "the list to empty", || {
        alerts(&sw).is_empty().then_some(())
    });
    eventually(Duration::from_secs(10), "a closing row", || {
        let rows = influx.rows(
            DB,
            "SELECT last(\"open\") FROM \"alerts\" WHERE \"rule\" = 'rack_hot' AND time > now() - 3m",
        );
        (rows.first().and_then(|r| r.get(1)) == Some(&Value::Bool(false))).then_some(())
    });
    sw.terminate();
}
