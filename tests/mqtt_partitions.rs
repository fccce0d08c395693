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

/// Waits until each partition's session is subscribed: a probe message on its topics
/// (published again until one arrives) is stored. Mosquitto's log only reaches its file when
/// it exits, so it is read at the end of the test.
fn wait_subscribed(broker: &Mosquitto, influx: &Influxd) {
    for site in ["a", "b"] {
        let mut n = 0;
        eventually(Duration::from_secs(20), "partition subscribed", || {
            n += 1;
            broker.publish(
                &format!("site/{site}/probe"),
                format!("probe,site={site} n={n}i").as_bytes(),
                1,
                false,
            );
            std::thread::sleep(Duration::from_millis(200));
            let rows = influx.rows(
                "parts",
                &format!("SELECT count(n) FROM probe WHERE site = '{site}'"),
            );
            (!rows.is_empty()).then_some(())
        });
    }
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
    wait_subscribed(&broker, &influx);
    let sw_log = sw.log();
    for p in ["a", "b"] {
        assert!(
            sw_log.lines().any(|l| l.contains("MQTT partition started")
                && l.contains(&format!("client_id={CLIENT_ID}-{p} "))),
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
    for p in ["a", "b"] {
        assert!(
            log.lines().any(|l| l.contains("connected to MQTT broker")
                && l.contains(&format!("client_id={CLIENT_ID}-{p} "))
                && l.contains("session_present=true")),
            "partition {p} did not resume its session:\n{log}"
        );
    }

    // The broker's side: two sessions named by the partition, none under the bare client
    // id, each subscribed to its share of `site/#` only.
    sw.terminate();
    let mut broker = broker;
    broker.stop();
    let log = broker.log();
    for p in ["a", "b"] {
        assert!(
            log.matches(&format!(" as {CLIENT_ID}-{p} (")).count() == 2,
            "session {CLIENT_ID}-{p} not connected once per run in the broker log:\n{log}"
        );
        assert!(
            log.contains(&format!("{CLIENT_ID}-{p} 1 site/{p}/#")),
            "partition {p} did not subscribe to site/{p}/#:\n{log}"
        );
    }
    assert!(!log.contains(&format!(" as {CLIENT_ID} (")), "{log}");
    assert!(!log.contains(" 1 site/#"), "someone subscribed to all of site/#:\n{log}");
}
