//! The Prometheus remote-write sink against a real VictoriaMetrics (`/api/v1/write`).
//!
//! - Library level: the sink fed directly; what VictoriaMetrics stores (names, labels,
//!   values, timestamps, rule events), and that acks wait for it while it is frozen (SIGSTOP)
//!   or dead (SIGKILL) and complete once it is back.
//! - Through the binary: MQTT → sitewatch with `[influx]` and `[remote_write]` → the same data
//!   in both from one run; and with VictoriaMetrics dead and InfluxDB up, MQTT QoS 1 messages
//!   stay unacknowledged at the broker until both hold them.
//!
//! Run: `cargo test --test remote_write` (needs `victoria-metrics`, `influxdb`, `mosquitto`,
//! `mosquitto-clients`).
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::eventually;
use common::influx::{Influxd, VictoriaMetrics};
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;
use serde_json::Value;
use sitewatch::ack::{Ack, Delivery};
use sitewatch::model::{Event, EventState, FieldValue, Sample, SeriesKey, Severity, TagSet};
use sitewatch::pipeline::{Action, Batch, EventRecord, SinkInputs, SinkPort};
use sitewatch::sink::remote_write::{RemoteWriteConfig, RemoteWriteSink};
use sitewatch::sink::Sink;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Runs blocking harness calls (HTTP/1.0 over `TcpStream`, sleeps) inside an async test.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn config(vm: &VictoriaMetrics, extra: &str) -> RemoteWriteConfig {
    toml::from_str(&format!(
        "url = \"{}\"\nflush_interval = \"50ms\"\ntimeout = \"1s\"\nmax_retry_delay = \"300ms\"\n{extra}",
        vm.remote_write_url()
    ))
    .expect("test config")
}

struct Running {
    port: Option<SinkPort>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

impl Running {
    async fn start(cfg: RemoteWriteConfig) -> Running {
        let mut sink = Box::new(RemoteWriteSink::new(cfg).expect("valid config"));
        sink.open().await.expect("open");
        let (port, inputs) = SinkInputs::channel(64);
        let stop = CancellationToken::new();
        let task = tokio::spawn(sink.run(inputs, stop.clone()));
        Running {
            port: Some(port),
            stop,
            task,
            seen: Arc::default(),
        }
    }

    async fn send(&self, samples: Vec<Sample>) {
        let seen = self.seen.clone();
        let batch = Batch::new(samples).with_ack(Ack::new(move |d| seen.lock().unwrap().push(d)));
        self.port
            .as_ref()
            .expect("inputs open")
            .series
            .send(batch)
            .await
            .expect("sink running");
    }

    async fn send_events(&self, events: Vec<EventRecord>) {
        self.port
            .as_ref()
            .expect("inputs open")
            .events
            .send(events)
            .await
            .expect("sink running");
    }

    fn acks(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_acks(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.acks().len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} acks settled within {within:?}",
                self.acks().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the inputs and waits for the sink to flush and return.
    async fn finish(mut self) {
        drop(self.port.take());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the sink flushes and returns once its inputs close")
            .expect("sink task");
    }
}

/// One exported series: its labels and its (timestamp ms, value) pairs, duplicates removed
/// (a request that timed out while VictoriaMetrics was frozen may be ingested as well as its
/// retry: same timestamps, same values).
type Series = BTreeMap<(i64, u64), f64>;

fn export(vm: &VictoriaMetrics, selector: &str) -> Vec<(BTreeMap<String, String>, Series)> {
    vm.export(selector)
        .into_iter()
        .map(|line: Value| {
            let labels = line["metric"]
                .as_object()
                .expect("metric object")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let ts = line["timestamps"].as_array().expect("timestamps");
            let vs = line["values"].as_array().expect("values");
            let points = ts
                .iter()
                .zip(vs)
                .map(|(t, v)| {
                    let v = v.as_f64().expect("numeric value");
                    ((t.as_i64().expect("ms"), v.to_bits()), v)
                })
                .collect();
            (labels, points)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn values(s: &Series) -> Vec<(i64, f64)> {
    s.iter().map(|((t, _), v)| (*t, *v)).collect()
}

fn ups(ts_ns: i64, charge: f64) -> Sample {
    Sample::new(
        SeriesKey::new(
            "ups",
            TagSet::new([
                ("site", "dc1"),
                ("rack-id", "r7"),
                ("model", "Smart-UPS 3000"),
            ]),
        ),
        ts_ns,
    )
    .with_field("charge", FieldValue::Float(charge))
    .with_field("runtime_s", FieldValue::Int(1200))
    .with_field("on_battery", FieldValue::Bool(true))
    .with_field("status", FieldValue::Str("online".into()))
}

fn alert(state: EventState, ts_ns: i64) -> EventRecord {
    EventRecord {
        event: Event {
            labels: Vec::new(),
            annotations: Vec::new(),
            rule: "ups_low_charge".into(),
            series: SeriesKey::new("ups", TagSet::new([("site", "dc1")])),
            field: "charge".into(),
            severity: Severity::Critical,
            state,
            value: FieldValue::Float(9.0),
            threshold: Some(10.0),
            started_ns: ts_ns,
            timestamp_ns: ts_ns,
            message: "low".into(),
        },
        silenced: false,
        action: Action::Change,
        response: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoriametrics_stores_names_labels_values_timestamps_and_events() {
    let vm = blocking(VictoriaMetrics::start);
    let run = Running::start(config(&vm, "[labels]\ninstance_group = \"it\"\n")).await;
    // A minute ago, with sub-millisecond digits that must be floored away.
    let t0 = (now_s() - 60) * 1_000_000_000 + 123_456_789;
    run.send(vec![ups(t0, 97.5), ups(t0 + 1_000_000_000, 97.0)])
        .await;
    run.send_events(vec![alert(EventState::Firing, t0 + 2_000_000_000)])
        .await;
    run.send_events(vec![alert(EventState::Resolved, t0 + 3_000_000_000)])
        .await;
    run.wait_acks(1, Duration::from_secs(10)).await;
    assert_eq!(run.acks(), vec![Delivery::Delivered]);
    run.finish().await;

    let t0_ms = t0 / 1_000_000;
    let series = blocking(|| export(&vm, r#"{__name__=~"ups_.*"}"#));
    let by_name: BTreeMap<String, (BTreeMap<String, String>, Series)> = series
        .into_iter()
        .map(|(l, s)| (l["__name__"].clone(), (l, s)))
        .collect();
    assert_eq!(
        by_name.keys().collect::<Vec<_>>(),
        vec!["ups_charge", "ups_on_battery", "ups_runtime_s"],
        "one series per numeric field, strings skipped"
    );
    let (l, s) = &by_name["ups_charge"];
    assert_eq!(
        *l,
        labels(&[
            ("__name__", "ups_charge"),
            ("instance_group", "it"),
            ("model", "Smart-UPS 3000"),
            ("rack_id", "r7"),
            ("site", "dc1"),
        ])
    );
    assert_eq!(values(s), vec![(t0_ms, 97.5), (t0_ms + 1000, 97.0)]);
    assert_eq!(
        values(&by_name["ups_runtime_s"].1),
        vec![(t0_ms, 1200.0), (t0_ms + 1000, 1200.0)]
    );
    assert_eq!(
        values(&by_name["ups_on_battery"].1),
        vec![(t0_ms, 1.0), (t0_ms + 1000, 1.0)]
    );

    let alerts = blocking(|| export(&vm, "sitewatch_alert"));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0].0,
        labels(&[
            ("__name__", "sitewatch_alert"),
            ("field", "charge"),
            ("instance_group", "it"),
            ("measurement", "ups"),
            ("rule", "ups_low_charge"),
            ("severity", "critical"),
            ("site", "dc1"),
        ])
    );
    assert_eq!(
        values(&alerts[0].1),
        vec![(t0_ms + 2000, 1.0), (t0_ms + 3000, 0.0)],
        "1 while firing, 0 once resolved"
    );
    // And PromQL sees it the way the README says to ask.
    let q = blocking(|| vm.query("last_over_time(ups_charge[5m])"));
    assert_eq!(q["data"]["result"][0]["value"][1], "97");
}

fn load(i: i64, t0_ns: i64) -> Sample {
    Sample::new(
        SeriesKey::new("load", TagSet::new([("sensor", "s1")])),
        t0_ns + i * 1_000_000,
    )
    .with_field("v", FieldValue::Int(i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_victoriametrics_holds_the_acks_until_it_answers() {
    let vm = blocking(VictoriaMetrics::start);
    let run = Running::start(config(&vm, "")).await;
    let t0 = (now_s() - 60) * 1_000_000_000;
    vm.pause();
    for i in 0..5 {
        run.send(vec![load(i, t0)]).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        run.acks().is_empty(),
        "acked while VictoriaMetrics answers nothing: {:?}",
        run.acks()
    );
    vm.resume();
    run.wait_acks(5, Duration::from_secs(20)).await;
    assert!(run.acks().iter().all(|d| *d == Delivery::Delivered));
    run.finish().await;
    let series = blocking(|| export(&vm, "load_v"));
    assert_eq!(series.len(), 1);
    let t0_ms = t0 / 1_000_000;
    assert_eq!(
        values(&series[0].1),
        (0..5).map(|i| (t0_ms + i, i as f64)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_victoriametrics_holds_the_acks_and_gets_everything_once_restarted() {
    let mut vm = blocking(VictoriaMetrics::start);
    let run = Running::start(config(&vm, "batch_size = 3")).await;
    let t0 = (now_s() - 60) * 1_000_000_000;
    run.send(vec![load(0, t0)]).await;
    run.wait_acks(1, Duration::from_secs(10)).await;
    blocking(|| vm.stop());
    for i in 1..10 {
        run.send(vec![load(i, t0)]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(run.acks().len(), 1, "nothing more acked while it is down");
    blocking(|| vm.restart());
    run.wait_acks(10, Duration::from_secs(20)).await;
    assert!(run.acks().iter().all(|d| *d == Delivery::Delivered));
    run.finish().await;
    let series = blocking(|| export(&vm, "load_v"));
    let t0_ms = t0 / 1_000_000;
    // Point 0 was acknowledged by VictoriaMetrics before its SIGKILL, which loses what it has
    // not yet moved from memory to disk (`-inmemoryDataFlushInterval`, 5 s): not ours to
    // check. Everything sent while it was down must be there.
    let during: Vec<(i64, f64)> = values(&series[0].1)
        .into_iter()
        .filter(|(t, _)| *t > t0_ms)
        .collect();
    assert_eq!(
        during,
        (1..10).map(|i| (t0_ms + i, i as f64)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_an_outage_leaves_the_acks_failed_not_completed() {
    let mut vm = blocking(VictoriaMetrics::start);
    let mut run = Running::start(config(&vm, "")).await;
    blocking(|| vm.stop());
    run.send(vec![load(0, now_s() * 1_000_000_000)]).await;
    drop(run.port.take());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!run.task.is_finished(), "still trying to flush");
    assert!(run.acks().is_empty());
    run.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), &mut run.task)
        .await
        .expect("stop ends the flush")
        .unwrap();
    assert_eq!(
        run.acks(),
        vec![Delivery::Failed],
        "the broker will redeliver"
    );
}

// ---- Through the binary: MQTT → sitewatch → InfluxDB and VictoriaMetrics ----

const DB: &str = "rw";

const RULES: &str = r#"
[[rule]]
name = "load_high"
measurement = "load"
field = "v"
match = { sensor = "*" }
above = { critical = 150.0, critical_clear = 140.0 }
message = "{sensor} at {value}"
"#;

fn stack_config(influx: &Influxd, vm: &VictoriaMetrics, broker: &Mosquitto, id: &str) -> String {
    format!(
        r#"[influx]
url = "{influx}"
database = "{DB}"
flush_interval = "100ms"
timeout = "2s"
max_retry_delay = "300ms"

[remote_write]
url = "{vm}"
flush_interval = "100ms"
timeout = "2s"
max_retry_delay = "300ms"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "{id}"
keep_alive = "5s"
reconnect_backoff_max = "500ms"

[[mqtt.subscription]]
topic = "rw/lp/#"
format = "line_protocol"
qos = 1

[rules]
files = ["rules.toml"]
"#,
        influx = influx.url(),
        vm = vm.remote_write_url(),
        port = broker.port,
    )
}

fn launch(cfg: &str) -> Sitewatch {
    let mut sw = Sitewatch::start_paused(cfg);
    std::fs::write(sw.dir().join("rules.toml"), RULES).expect("write rules");
    sw.launch();
    sw
}

/// Message `i`: `v = i`, `x = 3i + 0.5`, 1 ms apart from `base` (an hour ago, whole seconds).
fn lines(base_ns: i64, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "load,sensor=s1 v={i}i,x={}.5 {}",
                i * 3,
                base_ns + i as i64 * 1_000_000
            )
        })
        .collect()
}

fn influx_count(influx: &Influxd) -> usize {
    influx
        .rows(DB, "SELECT count(v) FROM load")
        .first()
        .and_then(|r| r.get(1))
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize
}

/// Every message is in InfluxDB, once, with its values and its ns timestamp.
fn assert_influx_has_all(influx: &Influxd, base_ns: i64, n: usize, sw: &Sitewatch) {
    eventually(Duration::from_secs(30), "every message in InfluxDB", || {
        (influx_count(influx) == n).then_some(())
    });
    let rows = influx.rows(DB, "SELECT v, x FROM load");
    assert_eq!(rows.len(), n, "sitewatch log:\n{}", sw.log());
    for r in rows {
        let t = r[0].as_i64().expect("epoch ns");
        let i = ((t - base_ns) / 1_000_000) as u64;
        assert_eq!(r[1].as_u64(), Some(i));
        assert_eq!(r[2].as_f64(), Some((i * 3) as f64 + 0.5));
    }
}

/// Every message is in VictoriaMetrics with the same values, at its ms timestamp.
fn assert_vm_has_all(vm: &VictoriaMetrics, base_ns: i64, n: usize, sw: &Sitewatch) {
    let base_ms = base_ns / 1_000_000;
    let want_v: Vec<(i64, f64)> = (0..n).map(|i| (base_ms + i as i64, i as f64)).collect();
    let want_x: Vec<(i64, f64)> = (0..n)
        .map(|i| (base_ms + i as i64, (i * 3) as f64 + 0.5))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = export(vm, r#"load_v{sensor="s1"}"#);
        if v.len() == 1 && values(&v[0].1) == want_v {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "VictoriaMetrics holds {} of {n} load_v points; sitewatch log:\n{}",
            v.first().map_or(0, |s| s.1.len()),
            sw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let x = export(vm, r#"load_x{sensor="s1"}"#);
    assert_eq!(values(&x[0].1), want_x);
}

#[test]
fn mqtt_to_influxdb_and_victoriametrics_in_one_run() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let vm = VictoriaMetrics::start();
    let broker = Mosquitto::start();
    let mut sw = launch(&stack_config(&influx, &vm, &broker, "rw-both"));
    let base = (now_s() - 3600) * 1_000_000_000;
    let n = 200;
    broker.publish_lines("rw/lp/a", &lines(base, n), 1);

    assert_influx_has_all(&influx, base, n, &sw);
    assert_vm_has_all(&vm, base, n, &sw);

    // The rule fired once (v > 150) and both stores have the event.
    let alerts = export(&vm, r#"sitewatch_alert{rule="load_high"}"#);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0["severity"], "critical");
    assert_eq!(alerts[0].0["sensor"], "s1");
    let fired = values(&alerts[0].1);
    assert_eq!(fired, vec![(base / 1_000_000 + 151, 1.0)]);
    let events = influx.rows(
        DB,
        "SELECT count(value) FROM events WHERE rule = 'load_high'",
    );
    assert_eq!(events[0][1].as_u64(), Some(1), "{events:?}");

    eventually(
        Duration::from_secs(10),
        "every message acknowledged",
        || {
            (sw.metric("sitewatch_mqtt_acks_total", &["delivery=\"delivered\""]) == n as f64)
                .then_some(())
        },
    );
    let delivered = sw.metric(
        "sitewatch_remote_write_samples_total",
        &["result=\"delivered\""],
    );
    assert_eq!(
        delivered,
        (2 * n + 1) as f64,
        "v and x per message, one event"
    );
    assert_eq!(
        sw.metric(
            "sitewatch_remote_write_samples_total",
            &["result=\"rejected\""]
        ),
        0.0
    );
    assert!(sw.terminate().is_some_and(|s| s.success()));
}

#[test]
fn dead_victoriametrics_keeps_mqtt_messages_unacknowledged_until_both_hold_them() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let mut vm = VictoriaMetrics::start();
    let broker = Mosquitto::start();
    let mut sw = launch(&stack_config(&influx, &vm, &broker, "rw-outage"));
    vm.stop();
    let base = (now_s() - 3600) * 1_000_000_000;
    let n = 100;
    broker.publish_lines("rw/lp/a", &lines(base, n), 1);

    // InfluxDB holds every message, yet none is acknowledged to the broker: the remote-write
    // copy of each batch is not stored.
    assert_influx_has_all(&influx, base, n, &sw);
    eventually(Duration::from_secs(10), "remote write failing", || {
        (sw.metric("sitewatch_remote_write_failing", &[]) == 1.0).then_some(())
    });
    // The status board names the failing sink beside the healthy one.
    let (_, health) = common::alertmanager::http_get(sw.metrics_port, "/health").unwrap();
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let sinks = &health["components"]["sinks"];
    assert_eq!(sinks["remote_write"]["state"], "failing", "{health}");
    assert!(sinks["remote_write"]["last_error"].is_string(), "{health}");
    assert_eq!(sinks["influx"]["state"], "writing", "{health}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sw.metric("sitewatch_mqtt_acks_total", &["delivery=\"delivered\""]),
        0.0,
        "a message was acknowledged while VictoriaMetrics did not have it"
    );
    assert!(
        sw.metric(
            "sitewatch_remote_write_requests_total",
            &["status=\"transport\""]
        ) > 0.0
    );

    // A graceful stop while it is down: InfluxDB is flushed, remote write gives up at the
    // flush deadline without acknowledging.
    let stopped = Instant::now();
    assert!(sw.terminate().is_some_and(|s| s.success()), "{}", sw.log());
    let log = sw.log();
    assert!(
        log.contains("remote write sink stopped before these samples were delivered"),
        "{log}"
    );
    assert!(stopped.elapsed() < Duration::from_secs(60));

    // Back up: the broker redelivers every unacknowledged message to the restarted instance.
    vm.restart();
    sw.launch();
    assert_vm_has_all(&vm, base, n, &sw);
    assert_influx_has_all(&influx, base, n, &sw);
    eventually(
        Duration::from_secs(10),
        "the redelivered messages acknowledged",
        || {
            (sw.metric("sitewatch_mqtt_acks_total", &["delivery=\"delivered\""]) >= n as f64)
                .then_some(())
        },
    );
    assert!(sw.terminate().is_some_and(|s| s.success()));
}
