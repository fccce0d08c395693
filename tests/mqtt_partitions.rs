//! `[[mqtt.partition]]` on a single instance against a real Mosquitto and InfluxDB: one
//! persistent session per partition under the client id `<client_id>-<partition>`, every
//! QoS 1 message stored exactly once, and the messages published while sitewatch is stopped
//! held by the broker in the partitions' sessions and collected after the restart.

mod common;

use std::time::Duration;

use common::eventually;
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;

const CLIENT_ID: &str = "sw-parts";

fn body(influx_url: &str, mqtt_port: u16) -> String {
    format!(
        r#"[influx]
url = "{influx_url}"
database = "parts"
flush_interval = "100ms"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{CLIENT_ID}"

[[mqtt.subscription]]
topic = "site/#"
format = "line_protocol"
qos = 1

[[mqtt.partition]]
name = "a"
topics = ["site/a/#"]

[[mqtt.partition]]
name = "b"
topics = ["site/b/#"]
"#
    )
}

/// `count` QoS 1 line-protocol messages on `site/<site>/sensor`, each its own timestamp
/// (from `first`), so InfluxDB keeps one point per message.
fn publish(broker: &Mosquitto, site: &str, first: u64, count: u64) {
    let base_ns: u64 = 1_700_000_000_000_000_000;
    let lines: Vec<String> = (first..first + count)
        .map(|i| format!("reading,site={site} value={i}i {}", base_ns + i * 1_000_000))
        .collect();
    broker.publish_lines(&format!("site/{site}/sensor"), &lines, 1);
}

fn stored(influx: &Influxd, site: &str) -> u64 {
    influx
        .rows(
            "parts",
            &format!("SELECT count(value) FROM reading WHERE site = '{site}'"),
        )
        .first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// Waits until both partitions hold `want` points each, then a little longer: exactly
/// `want`, not more (a message received by two sessions or stored twice would show).
fn assert_stored_exactly(influx: &Influxd, sw: &Sitewatch, want: u64) {
    for site in ["a", "b"] {
        eventually(Duration::from_secs(30), "every message stored", || {
            (stored(influx, site) >= want).then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    for site in ["a", "b"] {
        assert_eq!(
            stored(influx, site),
            want,
            "partition {site}: points in InfluxDB; sitewatch log:\n{}",
            sw.log()
        );
    }
}

/// Both partition sessions subscribed (the broker has sent their SUBACKs) `times` times.
fn wait_subscribed(broker: &Mosquitto, times: usize) {
    eventually(Duration::from_secs(20), "both partitions subscribed", || {
        let log = broker.log();
        ["a", "b"]
            .iter()
            .all(|p| {
                log.matches(&format!("Sending SUBACK to {CLIENT_ID}-{p}\n"))
                    .count()
                    >= times
            })
            .then_some(())
    });
}

#[test]
fn partitions_have_their_own_persistent_sessions_and_lose_nothing_across_a_restart() {
    const N: u64 = 200;
    const WHILE_DOWN: u64 = 150;
    let broker = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database("parts");
    let mut sw = Sitewatch::start(&body(&influx.url(), broker.port), "info", &[]);

    for p in ["a", "b"] {
        eventually(Duration::from_secs(20), "partition session connected", || {
            (sw.metric("sitewatch_mqtt_connected", &[&format!("partition=\"{p}\"")]) == 1.0)
                .then_some(())
        });
        assert_eq!(
            sw.metric("sitewatch_mqtt_partition_owned", &[&format!("partition=\"{p}\"")]),
            1.0
        );
    }
    wait_subscribed(&broker, 1);
    // One session per partition, named by the partition; none under the bare client id.
    let log = broker.log();
    for p in ["a", "b"] {
        assert!(
            log.contains(&format!(" as {CLIENT_ID}-{p} (")),
            "no session {CLIENT_ID}-{p} in the broker log:\n{log}"
        );
        // Each session subscribed to its partition's share of `site/#` only.
        assert!(
            log.contains(&format!("{CLIENT_ID}-{p} 1 site/{p}/#")),
            "partition {p} did not subscribe to site/{p}/#:\n{log}"
        );
    }
    assert!(!log.contains(&format!(" as {CLIENT_ID} (")), "{log}");
    let sw_log = sw.log();
    for p in ["a", "b"] {
        assert!(
            sw_log.contains("MQTT partition started")
                && sw_log.contains(&format!("client_id={CLIENT_ID}-{p}")),
            "no start line for partition {p}:\n{sw_log}"
        );
    }

    publish(&broker, "a", 0, N);
    publish(&broker, "b", 0, N);
    assert_stored_exactly(&influx, &sw, N);

    // Stopped: the broker keeps both partitions' sessions and queues their QoS 1 messages.
    let status = sw.terminate().expect("was running");
    assert!(status.success(), "sitewatch exit: {status}");
    publish(&broker, "a", N, WHILE_DOWN);
    publish(&broker, "b", N, WHILE_DOWN);
    assert_eq!(stored(&influx, "a"), N, "stored while sitewatch was down?");

    sw.launch();
    assert_stored_exactly(&influx, &sw, N + WHILE_DOWN);
    let log = sw.log();
    assert!(
        log.contains("session_present=true"),
        "the partitions did not resume their sessions:\n{log}"
    );
}
