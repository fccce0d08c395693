//! MQTT faults through the real binary, a real Mosquitto and a real InfluxDB, each counting
//! exactly what was published, acknowledged and stored:
//!
//! - one 5 MB message among 10,000 good QoS 1 messages: skipped, counted and acknowledged;
//!   the connection does not loop and every good message lands;
//! - a value that does not fit its field (`{"value":"12,5"}`) ahead of good values of the same
//!   field: dropped and counted, and never blocks the good values (InfluxDB fixes a field's
//!   type at its first write).
//!
//! Run: `cargo test --test mqtt_faults -- --nocapture` (prints the counts; a few seconds).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::{metric_sum, Sitewatch as Sw};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const DB: &str = "mqtt_faults";

/// Milliseconds an hour ago (inside the decoder's accepted timestamp range).
fn base_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    now - 3_600_000
}

fn config(influx: &Influxd, broker: &Mosquitto, client_id: &str, subscriptions: &str) -> String {
    format!(
        r#"[influx]
url = "{}"
database = "{DB}"
batch_size = 5000
flush_interval = "100ms"
timeout = "5s"
max_retry_delay = "300ms"
spool_dir = "{{spool}}"

[mqtt]
host = "127.0.0.1"
port = {}
client_id = "{client_id}"
keep_alive = "5s"
reconnect_backoff_max = "500ms"

# A subscriber is ready once this retained marker is stored.
[[mqtt.subscription]]
topic = "ready/{{sensor}}"
measurement = "ready"
format = "number"
{subscriptions}"#,
        influx.url(),
        broker.port
    )
}

/// Publishes a retained marker and waits until sitewatch has stored it: from then on the
/// subscriptions exist and every message published is delivered (QoS 1, persistent session).
fn wait_subscribed(influx: &Influxd, broker: &Mosquitto, sw: &Sw) {
    broker.publish("ready/marker", b"1", 1, true);
    let deadline = Instant::now() + Duration::from_secs(20);
    while int(influx, "SELECT count(value) FROM ready") < 1 {
        assert!(
            Instant::now() < deadline,
            "sitewatch did not subscribe within 20 s; log:\n{}",
            sw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first value of the first row of an InfluxQL answer as an integer, 0 when empty.
fn int(influx: &Influxd, q: &str) -> u64 {
    influx
        .rows(DB, q)
        .first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// Publishes every message at QoS 1 on one connection (in order, like one device) with
/// rumqttc and returns how many the broker acknowledged (PUBACK).
fn publish_all(port: u16, client_id: &str, messages: Vec<(String, Vec<u8>)>) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(200)
            .set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 256);
        let n = messages.len();
        let publisher = tokio::spawn(async move {
            for (topic, payload) in messages {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("queue publish");
            }
            client
        });
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acked < n {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Err(_) => panic!("publisher: {acked} of {n} acknowledged after 60 s"),
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("publisher connection failed: {e}"),
            }
        }
        let client = publisher.await.expect("publisher task");
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
        acked
    })
}

/// Lines of the broker's log (`log_type all`) that contain `needle`.
fn broker_log_count(broker: &Mosquitto, needle: &str) -> usize {
    broker.log().lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn oversized_message_among_10000_is_skipped_and_the_session_keeps_flowing() {
    let started = Instant::now();
    let influx = Influxd::start();
    influx.create_database(DB);
    // The test broker sets no message_size_limit (0: any MQTT message), so the 5 MB message
    // reaches sitewatch.
    let broker = Mosquitto::start();
    let cid = "mqtt-faults-oversized";
    let subs = r#"
[[mqtt.subscription]]
topic = "faults/seq/{sensor}"
measurement = "seq"
format = "json"
fields = { seq = { path = "seq", type = "integer" }, value = "value" }
timestamp = "ts"
timestamp_unit = "ms"
"#;
    let sw = Sw::start(&config(&influx, &broker, cid, subs), "info", &[]);
    wait_subscribed(&influx, &broker, &sw);

    let base = base_ms();
    let good = 10_000usize;
    let big_len = 5_000_000usize;
    let mut messages = Vec::with_capacity(good + 1);
    for i in 0..good {
        if i == good / 2 {
            let mut big = format!(r#"{{"seq":{},"ts":{base},"pad":""#, 1_000_000).into_bytes();
            big.resize(big_len - 2, b'x');
            big.extend_from_slice(b"\"}");
            messages.push(("faults/seq/s1".to_string(), big));
        }
        let payload = format!(
            r#"{{"seq":{i},"value":{},"ts":{}}}"#,
            i as f64 / 2.0,
            base + i as i64
        );
        messages.push(("faults/seq/s1".to_string(), payload.into_bytes()));
    }
    let published = messages.len();
    let acked_by_broker = publish_all(broker.port, "mqtt-faults-publisher", messages);
    assert_eq!(
        acked_by_broker, published,
        "the broker acknowledged every publish"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let c = int(&influx, "SELECT count(seq) FROM seq");
        if c as usize >= good || Instant::now() > deadline {
            break c as usize;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let distinct = int(&influx, "SELECT count(distinct(seq)) FROM seq") as usize;
    let m = sw.metrics();
    // `+ 0.0`: an absent counter sums to -0.
    let oversized = metric_sum(
        &m,
        "sitewatch_mqtt_decode_errors_total",
        &["reason=\"oversized\""],
    ) + 0.0;
    let reconnects = metric_sum(&m, "sitewatch_mqtt_reconnects_total", &[]) + 0.0;
    let connected = metric_sum(&m, "sitewatch_mqtt_connected", &[]);
    // Every message sitewatch got, the oversized one included, was acknowledged to the broker
    // exactly once (Mosquitto logs each PUBACK it receives; the marker is one more). Stop
    // sitewatch (SIGTERM: acks of stored data still in flight go out), then the broker, which
    // flushes its block-buffered log.
    let want_acks = published + 1;
    let mut sw = sw;
    let sw_log = sw.log();
    sw.terminate();
    let mut broker = broker;
    broker.stop();
    let sw_acks = broker_log_count(&broker, &format!("Received PUBACK from {cid}"));
    let deliveries = broker_log_count(&broker, &format!("Sending PUBLISH to {cid}"));
    eprintln!(
        "oversized fault: published {published} ({good} good + 1 of {big_len} bytes), \
         acknowledged by the broker {acked_by_broker}, delivered to sitewatch {} (+1 marker), \
         acknowledged by sitewatch {} (+1 marker), stored {stored} (distinct seq {distinct}), \
         lost {}, oversized counted {oversized}, reconnects {reconnects}, {:.1} s",
        deliveries.saturating_sub(1),
        sw_acks.saturating_sub(1),
        good - stored.min(good),
        started.elapsed().as_secs_f64()
    );

    assert_eq!(
        stored, good,
        "{stored} of {good} good messages in InfluxDB; sitewatch log:\n{sw_log}"
    );
    assert_eq!(distinct, good, "every sequence number once");
    assert_eq!(
        int(&influx, "SELECT max(seq) FROM seq"),
        good as u64 - 1,
        "the oversized message's seq was not stored"
    );
    assert_eq!(oversized, 1.0, "{m}");
    assert_eq!(reconnects, 0.0, "the connection did not loop: {m}");
    assert_eq!(sw_acks, want_acks, "each message acknowledged once");
    assert_eq!(deliveries, want_acks, "no redelivery");
    assert!(
        sw_log.contains("faults/seq/s1") && sw_log.contains(&format!("{big_len} bytes")),
        "the log names the topic and size:\n{sw_log}"
    );
    assert_eq!(connected, 1.0, "still connected");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_value_never_blocks_later_good_values_of_the_field() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let cid = "mqtt-faults-types";
    // `env`: fields without a type (the issue's case); `quoted`: a firmware that quotes its
    // numbers, declared float with parse_numeric_strings.
    let subs = r#"
[[mqtt.subscription]]
topic = "faults/env/{sensor}"
measurement = "env"
format = "json"
fields = { value = "value", humidity_pct = "humidity" }
timestamp = "ts"
timestamp_unit = "ms"

[[mqtt.subscription]]
topic = "faults/quoted/{sensor}"
measurement = "quoted"
format = "json"
parse_numeric_strings = true
fields = { value = { path = "value", type = "float" } }
timestamp = "ts"
timestamp_unit = "ms"
"#;
    let sw = Sw::start(&config(&influx, &broker, cid, subs), "info", &[]);
    wait_subscribed(&influx, &broker, &sw);
    let base = base_ms();

    // The bad value first: stored as a string it would fix `value` as a string field and
    // InfluxDB would reject all ten good values after it.
    broker.publish(
        "faults/env/s1",
        format!(r#"{{"value":"12,5","ts":{base}}}"#).as_bytes(),
        1,
        false,
    );
    broker.publish(
        "faults/quoted/s1",
        format!(r#"{{"value":"12,5","ts":{base}}}"#).as_bytes(),
        1,
        false,
    );
    let mut want = Vec::new();
    for i in 1..=10i64 {
        // Whole numbers too: without a type every number is a float.
        let v = if i % 2 == 0 {
            format!("{}", 10 + i)
        } else {
            format!("{}.5", 10 + i)
        };
        let ts = base + i;
        broker.publish(
            "faults/env/s1",
            format!(r#"{{"value":{v},"ts":{ts}}}"#).as_bytes(),
            1,
            false,
        );
        broker.publish(
            "faults/quoted/s1",
            format!(r#"{{"value":"{v}","ts":{ts}}}"#).as_bytes(),
            1,
            false,
        );
        want.push(v.parse::<f64>().expect("number"));
    }
    // The rest of a point with a bad value is kept.
    broker.publish(
        "faults/env/s2",
        format!(r#"{{"value":"abc","humidity":40,"ts":{base}}}"#).as_bytes(),
        1,
        false,
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let env = int(&influx, "SELECT count(value) FROM env WHERE sensor = 's1'");
        let quoted = int(&influx, "SELECT count(value) FROM quoted");
        let rest = int(
            &influx,
            "SELECT count(humidity_pct) FROM env WHERE sensor = 's2'",
        );
        if (env, quoted, rest) == (10, 10, 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored env {env}, quoted {quoted}, rest {rest} after 30 s; sitewatch log:\n{}",
            sw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for measurement in ["env", "quoted"] {
        let rows = influx.rows(
            DB,
            &format!("SELECT value FROM {measurement} WHERE sensor = 's1'"),
        );
        let got: Vec<f64> = rows
            .iter()
            .map(|r| r[1].as_f64().expect("a number"))
            .collect();
        assert_eq!(got, want, "{measurement}: the ten good values, in order");
        assert_eq!(
            rows[0][0].as_i64(),
            Some((base + 1) * 1_000_000),
            "{measurement}: nothing stored for the bad value"
        );
        let keys = influx.query(DB, &format!("SHOW FIELD KEYS FROM {measurement}"));
        let value_type = keys["results"][0]["series"][0]["values"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r[0] == "value"))
            .map(|r| r[1].clone());
        assert_eq!(
            value_type,
            Some(serde_json::json!("float")),
            "{measurement}: {keys}"
        );
    }
    assert_eq!(
        int(&influx, "SELECT count(value) FROM env WHERE sensor = 's2'"),
        0,
        "\"abc\" was not stored"
    );

    let m = sw.metrics();
    let field_errors = |sub: &str, reason: &str| {
        metric_sum(
            &m,
            "sitewatch_mqtt_field_errors_total",
            &[
                &format!("subscription=\"{sub}\""),
                "field=\"value\"",
                &format!("reason=\"{reason}\""),
            ],
        )
    };
    let env_errors = field_errors("faults/env/{sensor}", "type_mismatch");
    let quoted_errors = field_errors("faults/quoted/{sensor}", "not_a_number");
    let dropped_messages = metric_sum(
        &m,
        "sitewatch_mqtt_decode_errors_total",
        &["reason=\"no_valid_fields\""],
    );
    eprintln!(
        "type fault: published 23 (2 bad, 20 good, 1 with a bad and a good field), stored \
         env {} + quoted {} good values as float and 1 humidity, lost 0, field errors \
         env {env_errors} quoted {quoted_errors}, messages without a valid field {dropped_messages}",
        want.len(),
        want.len()
    );
    assert_eq!(env_errors, 2.0, "\"12,5\" and \"abc\": {m}");
    assert_eq!(quoted_errors, 1.0, "{m}");
    assert_eq!(dropped_messages, 2.0, "{m}");
    let log = sw.log();
    assert!(
        log.contains("faults/env/s1") && log.contains("\"value\"") && log.contains("12,5"),
        "the log names topic and field:\n{log}"
    );
}
