//! `[service] global_tags` and `host_tag` through the real binary: MQTT (real mosquitto) →
//! sitewatch → InfluxDB (real influxd). Every row carries the global tags and the host name,
//! and a tag the sample has itself (`site` from the topic) is not overridden.

mod common;

use std::time::Duration;

use common::eventually;
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;

#[test]
fn global_tags_and_host_tag_reach_influx_without_overriding_the_samples_own() {
    let mqtt = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database("gt");
    let body = format!(
        r#"
[influx]
url = "{url}"
database = "gt"
flush_interval = "200ms"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "sitewatch-global-tags"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{rack}}/temp"
measurement = "environment"
format = "number"
field = "temperature"
"#,
        url = influx.url(),
        port = mqtt.port,
    );
    let mut sw = Sitewatch::start_with_service(
        "global_tags = { dc = \"ams1\", site = \"from-global\" }\nhost_tag = true",
        &body,
        "info",
        &[],
    );
    eventually(Duration::from_secs(10), "MQTT connected", || {
        (sw.metric("sitewatch_mqtt_connected", &[]) == 1.0).then_some(())
    });
    mqtt.publish("dc/hall-b/r07/temp", b"23.5", 1, false);
    let rows = eventually(Duration::from_secs(10), "the row in InfluxDB", || {
        let rows = influx.rows(
            "gt",
            "SELECT temperature, dc, host, site, rack FROM environment",
        );
        (!rows.is_empty()).then_some(rows)
    });
    // The host name as the kernel has it, read here independently of sitewatch.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r[1], serde_json::json!(23.5), "{r:?}");
    assert_eq!(r[2], serde_json::json!("ams1"), "{r:?}");
    assert_eq!(r[3], serde_json::json!(host.trim()), "{r:?}");
    assert_eq!(
        r[4],
        serde_json::json!("hall-b"),
        "the topic's site wins: {r:?}"
    );
    assert_eq!(r[5], serde_json::json!("r07"), "{r:?}");
    let status = sw.terminate().expect("sitewatch was running");
    assert!(status.success(), "exit {status}; log:\n{}", sw.log());
}
