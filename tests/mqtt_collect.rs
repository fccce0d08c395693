//! MQTT collector against a real Mosquitto: decoding, bad payloads, at-least-once delivery
//! across collector restarts, and broker restarts.

mod common;

use std::time::Duration;

use common::mosquitto::Mosquitto;
use sitewatch::collect::mqtt::{self, MqttConfig};
use sitewatch::model::{now_ns, FieldValue, Sample};
use sitewatch::pipeline::{Batch, BatchReceiver};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn config(port: u16, client_id: &str, subscriptions: &str) -> MqttConfig {
    let src = format!(
        "host = \"127.0.0.1\"\nport = {port}\nclient_id = \"{client_id}\"\n\
         keep_alive = \"5s\"\nreconnect_backoff_max = \"1s\"\nshutdown_grace = \"300ms\"\n\
         {subscriptions}"
    );
    toml::from_str(&src).unwrap_or_else(|e| panic!("test config: {e}\n{src}"))
}

struct Collector {
    rx: BatchReceiver,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), mqtt::MqttError>>,
}

impl Collector {
    fn start(cfg: MqttConfig) -> Collector {
        // Collector logs show up in the output of a failing test; RUST_LOG widens them.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "sitewatch=info".into()),
            )
            .try_init();
        let (tx, rx) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(mqtt::run(cfg, None, tx, shutdown.clone()));
        Collector { rx, shutdown, task }
    }

    /// Next batch, or panics after `timeout`.
    async fn next(&mut self, timeout: Duration, what: &str) -> Batch {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}"))
            .expect("collector channel closed")
    }

    /// Nothing arrives within `wait`.
    async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(b)) = tokio::time::timeout(wait, self.rx.recv()).await {
            panic!("expected no more messages, got {:?}", b.samples);
        }
    }

    /// Aborts the collector task as a crash would: no DISCONNECT, no acks.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("collector stops within 10s")
            .expect("collector task")
            .expect("collector ends without error");
    }
}

/// Publishes without stalling the runtime thread that drives the collector.
async fn publish(broker: &Mosquitto, topic: &str, payload: &[u8], qos: u8) {
    tokio::task::block_in_place(|| broker.publish(topic, payload, qos, false));
}

fn field_f64(s: &Sample, name: &str) -> f64 {
    s.field(name)
        .and_then(FieldValue::as_f64)
        .unwrap_or_else(|| panic!("field {name} in {s:?}"))
}

fn tags(s: &Sample) -> Vec<(String, String)> {
    s.series
        .tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const DECODE_SUBS: &str = r#"
[[subscription]]
topic = "dc/{site}/{room}/+/temperature"
measurement = "environment"
format = "number"
field = "temperature_c"
tags = { source = "mqtt" }

[[subscription]]
topic = "z2m/{sensor}"
measurement = "environment"
format = "json"
fields = { humidity_pct = "humidity", leak = "water_leak", temperature_c = "temp.value" }
tag_paths = { model = "device.model" }
timestamp = "ts"
timestamp_unit = "ms"

[[subscription]]
topic = "lp/{site}/{path...}"
format = "line_protocol"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_decoders_produce_exact_samples() {
    let broker = Mosquitto::start();
    let mut c = Collector::start(config(broker.port, "sw-decode", DECODE_SUBS));
    // Retained message: arrives as soon as the subscription exists, so it tells us when the
    // collector is subscribed without racing.
    tokio::task::block_in_place(|| {
        broker.publish("dc/ams1/hall2/r14/temperature", b"21.5", 1, true)
    });
    let before = now_ns();
    let mut b = c.next(Duration::from_secs(10), "number sample").await;
    assert_eq!(b.samples.len(), 1);
    let s = &b.samples[0];
    assert_eq!(&*s.series.measurement, "environment");
    assert_eq!(
        tags(s),
        owned(&[("room", "hall2"), ("site", "ams1"), ("source", "mqtt")])
    );
    assert_eq!(s.fields.len(), 1);
    assert_eq!(s.field("temperature_c"), Some(&FieldValue::Float(21.5)));
    // No payload timestamp: receive time (the message was published just before `before`).
    assert!((before - s.timestamp_ns).abs() < 10_000_000_000);
    b.complete_acks();

    publish(
        &broker,
        "z2m/rack7-inlet",
        br#"{"humidity":41,"water_leak":false,"temp":{"value":23.25},"device":{"model":"WSD"},"ts":1700000000123}"#,
        1,
    )
    .await;
    let mut b = c.next(Duration::from_secs(10), "json sample").await;
    assert_eq!(b.samples.len(), 1);
    let s = &b.samples[0];
    assert_eq!(&*s.series.measurement, "environment");
    assert_eq!(
        tags(s),
        owned(&[("model", "WSD"), ("sensor", "rack7-inlet")])
    );
    assert_eq!(s.fields.len(), 3);
    assert_eq!(s.field("humidity_pct"), Some(&FieldValue::Float(41.0)));
    assert_eq!(s.field("leak"), Some(&FieldValue::Bool(false)));
    assert_eq!(s.field("temperature_c"), Some(&FieldValue::Float(23.25)));
    assert_eq!(s.timestamp_ns, 1_700_000_000_123_000_000);
    b.complete_acks();

    publish(
        &broker,
        "lp/ams1/ups/u1",
        b"ups,ups=u1 load_pct=41.5,on_battery=f,alarms=2i 1700000000000000001\nups,ups=u2 load_pct=12 1700000000000000002",
        1,
    )
    .await;
    let mut b = c
        .next(Duration::from_secs(10), "line protocol samples")
        .await;
    assert_eq!(b.samples.len(), 2);
    let (u1, u2) = (&b.samples[0], &b.samples[1]);
    assert_eq!(&*u1.series.measurement, "ups");
    assert_eq!(
        tags(u1),
        owned(&[("path", "ups/u1"), ("site", "ams1"), ("ups", "u1")])
    );
    assert_eq!(u1.field("load_pct"), Some(&FieldValue::Float(41.5)));
    assert_eq!(u1.field("on_battery"), Some(&FieldValue::Bool(false)));
    assert_eq!(u1.field("alarms"), Some(&FieldValue::Int(2)));
    assert_eq!(u1.timestamp_ns, 1_700_000_000_000_000_001);
    assert_eq!(u2.series.tags.get("ups"), Some("u2"));
    assert_eq!(field_f64(u2, "load_pct"), 12.0);
    assert_eq!(u2.timestamp_ns, 1_700_000_000_000_000_002);
    b.complete_acks();

    // QoS 0 carries no ack.
    publish(&broker, "dc/ams1/hall2/r15/temperature", b"19", 0).await;
    let b = c.next(Duration::from_secs(10), "qos0 sample").await;
    assert!(b.acks.is_empty());
    assert_eq!(field_f64(&b.samples[0], "temperature_c"), 19.0);

    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_dropped_and_acked_without_stalling() {
    let broker = Mosquitto::start();
    let cid = "sw-malformed";
    let mut c = Collector::start(config(broker.port, cid, DECODE_SUBS));
    tokio::task::block_in_place(|| broker.publish("dc/s/r/k/temperature", b"1", 1, true));
    c.next(Duration::from_secs(10), "subscription ready")
        .await
        .complete_acks();
    // Clear the retained marker so the restart below does not get it again.
    tokio::task::block_in_place(|| broker.publish("dc/s/r/k/temperature", b"", 1, true));

    let bad: [(&str, &[u8]); 5] = [
        ("z2m/x", b"{\"humidity\": 4"),
        ("dc/s/r/k/temperature", b"warm"),
        ("dc/s/r/k/temperature", b"\xff\xfe\x00"),
        ("lp/s/x", b"ups load=NaN"),
        ("z2m/x", br#"{"humidity":1,"ts":12}"#),
    ];
    let mut expected = Vec::new();
    for i in 0..25 {
        if i % 5 == 2 {
            let (topic, payload) = bad[i / 5];
            publish(&broker, topic, payload, 1).await;
        } else {
            publish(&broker, "dc/s/r/k/temperature", i.to_string().as_bytes(), 1).await;
            expected.push(i as f64);
        }
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let mut b = c
            .next(Duration::from_secs(10), "good samples after bad ones")
            .await;
        got.extend(b.samples.iter().map(|s| field_f64(s, "temperature_c")));
        b.complete_acks();
    }
    assert_eq!(got, expected, "every good message arrives, in order");
    c.stop().await;

    // The bad messages were acknowledged too: a restart with the same session redelivers
    // nothing, the first thing to arrive is a fresh marker.
    let mut c = Collector::start(config(broker.port, cid, DECODE_SUBS));
    publish(&broker, "dc/s/r/k/temperature", b"1000", 1).await;
    let b = c.next(Duration::from_secs(10), "marker").await;
    assert_eq!(field_f64(&b.samples[0], "temperature_c"), 1000.0);
    c.expect_silence(Duration::from_millis(500)).await;
    c.stop().await;
}

fn values(batches: &[Batch]) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| b.samples.iter().map(|s| field_f64(s, "temperature_c")))
        .collect()
}

/// One number subscription on `dc/{site}/{room}/+/temperature`.
const TEMPERATURE_SUB: &str = r#"
[[subscription]]
topic = "dc/{site}/{room}/+/temperature"
measurement = "environment"
format = "number"
field = "temperature_c"
"#;

/// A collector on [`TEMPERATURE_SUB`] whose persistent session is created and subscribed.
async fn start_subscribed(broker: &Mosquitto, cid: &str) -> Collector {
    // First start creates the persistent session; the retained message marks "subscribed".
    let mut c = Collector::start(config(broker.port, cid, TEMPERATURE_SUB));
    tokio::task::block_in_place(|| broker.publish("dc/a/b/c/temperature", b"-1", 1, true));
    c.next(Duration::from_secs(10), "subscription ready")
        .await
        .complete_acks();
    // Re-subscribing on every start would deliver the retained marker again; clear it (the
    // empty payload reaches the collector as an undecodable message, acked and dropped).
    tokio::task::block_in_place(|| broker.publish("dc/a/b/c/temperature", b"", 1, true));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_redelivered_after_collector_restart() {
    let broker = Mosquitto::start();
    let cid = "sw-at-least-once";
    let subs = TEMPERATURE_SUB;
    let mut c = start_subscribed(&broker, cid).await;
    for v in 1..=5 {
        publish(&broker, "dc/a/b/c/temperature", v.to_string().as_bytes(), 1).await;
    }
    let mut held = Vec::new();
    while values(&held).len() < 5 {
        held.push(c.next(Duration::from_secs(10), "first delivery").await);
    }
    assert_eq!(values(&held), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    // Not stored: stop without completing the acks.
    c.stop().await;
    drop(held);

    let mut c = Collector::start(config(broker.port, cid, subs));
    let mut again = Vec::new();
    while values(&again).len() < 5 {
        again.push(c.next(Duration::from_secs(10), "redelivery").await);
    }
    assert_eq!(values(&again), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    for b in &mut again {
        // Publishes read together may share a batch: one ack per message (one sample each).
        assert_eq!(b.acks.len(), b.samples.len());
        b.complete_acks();
    }
    c.stop().await;

    // Acknowledged now: nothing comes back, only a new message.
    let mut c = Collector::start(config(broker.port, cid, subs));
    publish(&broker, "dc/a/b/c/temperature", b"6", 1).await;
    let mut b = c.next(Duration::from_secs(10), "new message").await;
    assert_eq!(values(std::slice::from_ref(&b)), vec![6.0]);
    b.complete_acks();
    c.expect_silence(Duration::from_millis(500)).await;

    // A crash (no DISCONNECT, acks never completed) also leads to redelivery.
    publish(&broker, "dc/a/b/c/temperature", b"7", 1).await;
    let held = c
        .next(Duration::from_secs(10), "message before the crash")
        .await;
    assert_eq!(values(std::slice::from_ref(&held)), vec![7.0]);
    c.crash().await;
    drop(held);
    let mut c = Collector::start(config(broker.port, cid, subs));
    let mut b = c
        .next(Duration::from_secs(10), "redelivery after a crash")
        .await;
    assert_eq!(values(std::slice::from_ref(&b)), vec![7.0]);
    b.complete_acks();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes_after_broker_restarts() {
    let mut broker = Mosquitto::start();
    let subs = r#"
[[subscription]]
topic = "dc/{site}/{room}/+/temperature"
measurement = "environment"
format = "number"
field = "temperature_c"
"#;
    let mut c = Collector::start(config(broker.port, "sw-broker-restart", subs));
    tokio::task::block_in_place(|| broker.publish("dc/a/b/c/temperature", b"1", 1, true));
    c.next(Duration::from_secs(10), "first message")
        .await
        .complete_acks();

    // Restart with persistence: the session survives, a message published while the
    // collector is still reconnecting is queued for it.
    tokio::task::block_in_place(|| broker.restart());
    publish(&broker, "dc/a/b/c/temperature", b"2", 1).await;
    let mut b = c
        .next(
            Duration::from_secs(15),
            "message queued across broker restart",
        )
        .await;
    assert_eq!(values(std::slice::from_ref(&b)), vec![2.0]);
    b.complete_acks();

    // Restart without state: the broker forgot the subscription, so only a re-subscribe
    // brings messages. Publish until one arrives (the reconnect time is the backoff's).
    tokio::task::block_in_place(|| broker.restart_without_state());
    let mut got = None;
    for i in 0..50 {
        publish(
            &broker,
            "dc/a/b/c/temperature",
            format!("{}", 100 + i).as_bytes(),
            1,
        )
        .await;
        if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(300), c.rx.recv()).await {
            got = Some(b);
            break;
        }
    }
    let mut b = got.unwrap_or_else(|| {
        panic!(
            "no message after the broker lost its state; log:\n{}",
            broker.log()
        )
    });
    let v = values(std::slice::from_ref(&b))[0];
    assert!(v >= 100.0, "{v}");
    b.complete_acks();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_for_returns_retained_and_live_samples() {
    let broker = Mosquitto::start();
    tokio::task::block_in_place(|| broker.publish("dc/ams1/h1/r1/temperature", b"30.5", 1, true));
    let cfg = config(broker.port, "sw-once", DECODE_SUBS);
    let samples = mqtt::collect_for(&cfg, Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(
        samples[0].field("temperature_c"),
        Some(&FieldValue::Float(30.5))
    );
    assert_eq!(samples[0].series.tags.get("site"), Some("ams1"));

    // A broker that is not there is an error naming it, not an empty result.
    let dead = config(common::free_tcp_port(), "sw-once", DECODE_SUBS);
    let e = mqtt::collect_for(&dead, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot connect to MQTT broker 127.0.0.1:"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_configured_ca_and_client_certificate() {
    let broker = Mosquitto::start_tls();
    let tls = broker.tls.as_ref().expect("tls listener");
    let tls_config = |ca: &std::path::Path, with_client_cert: bool| {
        let mut t = format!("tls = {{ ca_file = {:?}", ca.display().to_string());
        if with_client_cert {
            t.push_str(&format!(
                ", client_cert = {:?}, client_key = {:?}",
                tls.client_cert.display().to_string(),
                tls.client_key.display().to_string()
            ));
        }
        t.push_str(" }\n");
        let mut cfg = config(tls.port, "sw-tls", &format!("{t}{DECODE_SUBS}"));
        // The server certificate names localhost; the name is checked.
        cfg.host = "localhost".into();
        cfg
    };
    tokio::task::block_in_place(|| broker.publish("dc/tls/h1/r1/temperature", b"25.5", 1, true));

    let samples = mqtt::collect_for(&tls_config(&tls.ca_file, true), Duration::from_secs(1))
        .await
        .expect("TLS connection with the right CA and a client certificate");
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].series.tags.get("site"), Some("tls"));
    assert_eq!(
        samples[0].field("temperature_c"),
        Some(&FieldValue::Float(25.5))
    );

    // The long-running collector over the same TLS settings.
    let mut c = Collector::start(tls_config(&tls.ca_file, true));
    let mut b = c
        .next(Duration::from_secs(10), "retained sample over TLS")
        .await;
    assert_eq!(field_f64(&b.samples[0], "temperature_c"), 25.5);
    b.complete_acks();
    c.stop().await;

    // An unknown server CA and a missing client certificate both fail the first connection.
    let e = mqtt::collect_for(
        &tls_config(&tls.other_ca_file, true),
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");
    let e = mqtt::collect_for(&tls_config(&tls.ca_file, false), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_holds_messages_at_the_broker_without_loss() {
    let broker = Mosquitto::start();
    let cid = "sw-backpressure";
    let subs = r#"
[[subscription]]
topic = "dc/{site}/{room}/+/temperature"
measurement = "environment"
format = "number"
field = "temperature_c"
"#;
    // A pipeline of one batch that nobody reads for a while.
    let (tx, mut rx) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(mqtt::run(
        config(broker.port, cid, subs),
        None,
        tx,
        shutdown.clone(),
    ));
    tokio::task::block_in_place(|| broker.publish("dc/a/b/c/temperature", b"0", 2, true));
    let mut first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("subscribed")
        .expect("batch");
    first.complete_acks();
    tokio::task::block_in_place(|| broker.publish("dc/a/b/c/temperature", b"", 2, true));
    for v in 1..=40 {
        publish(&broker, "dc/a/b/c/temperature", v.to_string().as_bytes(), 2).await;
    }
    // Stalled sink: the collector must wait, not drop or reorder.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = Vec::new();
    while got.len() < 40 {
        let mut b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("messages after the stall")
            .expect("batch");
        assert_eq!(
            b.acks.len(),
            b.samples.len(),
            "QoS 2 publishes arrive as QoS 1, each with an ack"
        );
        got.extend(values(std::slice::from_ref(&b)));
        b.complete_acks();
    }
    assert_eq!(got, (1..=40).map(f64::from).collect::<Vec<_>>());
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // All 40 were acknowledged once stored: a restart gets only new traffic.
    let mut c = Collector::start(config(broker.port, cid, subs));
    publish(&broker, "dc/a/b/c/temperature", b"41", 2).await;
    let mut b = c.next(Duration::from_secs(10), "new message").await;
    assert_eq!(values(std::slice::from_ref(&b)), vec![41.0]);
    b.complete_acks();
    c.expect_silence(Duration::from_millis(500)).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_acks_reaches_the_broker_while_it_is_idle() {
    // A sink releases a whole write's acks at once; the collector writes them in one batch
    // (one wake-up request, the rest staged and flushed by the event loop). They must reach
    // the broker with no further traffic and no shutdown to flush them: the collector is
    // then aborted like a crash, and a restart must get nothing redelivered.
    let broker = Mosquitto::start();
    let cid = "sw-ack-burst";
    let subs = TEMPERATURE_SUB;
    let mut c = start_subscribed(&broker, cid).await;
    let n = 600;
    let lines: Vec<String> = (1..=n).map(|v| v.to_string()).collect();
    tokio::task::block_in_place(|| broker.publish_lines("dc/a/b/c/temperature", &lines, 1));
    let mut held = Vec::new();
    while values(&held).len() < n {
        held.push(c.next(Duration::from_secs(10), "the burst").await);
    }
    assert_eq!(values(&held), (1..=n).map(|v| v as f64).collect::<Vec<_>>());
    // All at once, as after one sink write; then the broker stays quiet.
    for b in &mut held {
        assert_eq!(b.acks.len(), b.samples.len());
        b.complete_acks();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.crash().await;

    let mut c = Collector::start(config(broker.port, cid, subs));
    publish(&broker, "dc/a/b/c/temperature", b"9999", 1).await;
    let mut b = c.next(Duration::from_secs(10), "new message").await;
    assert_eq!(
        values(std::slice::from_ref(&b)),
        vec![9999.0],
        "acks of the burst were lost: the broker redelivered"
    );
    b.complete_acks();
    c.expect_silence(Duration::from_millis(500)).await;
    c.stop().await;
}
