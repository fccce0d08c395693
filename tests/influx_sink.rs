//! The InfluxDB writer against real servers: influxd 1.x (v1 API) and VictoriaMetrics (v2
//! API path with a token).
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::influx::{Influxd, VictoriaMetrics};
use serde_json::{json, Value};
use sitewatch::ack::Ack;
use sitewatch::model::{FieldValue, Sample, SeriesKey, TagSet};
use sitewatch::pipeline::{Batch, BatchSender};
use sitewatch::sink::influx::{InfluxConfig, InfluxWriter};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One Prometheus recorder for the whole test binary, so counters can be read back.
fn metrics_handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install metrics recorder")
    })
}

/// Value of a counter line such as `sitewatch_influx_dropped_total{reason="rejected"}`.
fn counter(name_and_labels: &str) -> f64 {
    metrics_handle()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn v1_config(url: &str, db: &str, extra: &str) -> InfluxConfig {
    let text = format!(
        "url = \"{url}\"\ndatabase = \"{db}\"\nflush_interval = \"50ms\"\nmax_retry_delay = \"300ms\"\ntimeout = \"2s\"\n{extra}"
    );
    toml::from_str(&text).expect("test config")
}

struct Running {
    series: BatchSender,
    events: BatchSender,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    acks: Arc<AtomicUsize>,
}

impl Running {
    fn start(cfg: &InfluxConfig) -> Running {
        metrics_handle();
        let writer = InfluxWriter::new(cfg).expect("writer from config");
        let (series, series_rx) = tokio::sync::mpsc::channel(64);
        let (events, events_rx) = tokio::sync::mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(writer.run(series_rx, events_rx, shutdown.clone()));
        Running {
            series,
            events,
            shutdown,
            task,
            acks: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn acked(&self, samples: Vec<Sample>) -> Batch {
        let n = self.acks.clone();
        Batch::new(samples).with_ack(Ack::new(move |d| {
            if !d.releases() {
                return;
            }
            n.fetch_add(1, Ordering::SeqCst);
        }))
    }

    async fn send(&self, samples: Vec<Sample>) {
        let b = self.acked(samples);
        self.series.send(b).await.expect("writer alive");
    }

    fn acks(&self) -> usize {
        self.acks.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("writer stops within its shutdown deadline")
            .expect("writer task did not panic");
    }
}

/// Polls `f` (blocking queries) off the runtime's workers until it gives `Some`.
async fn eventually<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnMut() -> Option<T> + Send + 'static,
) -> T {
    let what = what.to_string();
    tokio::task::spawn_blocking(move || common::eventually(timeout, &what, f))
        .await
        .expect("poll task")
}

fn point(m: &str, tags: &[(&str, &str)], fields: Vec<(&str, FieldValue)>, ts: i64) -> Sample {
    let mut s = Sample::new(SeriesKey::new(m, TagSet::new(tags.iter().copied())), ts);
    for (k, v) in fields {
        s.fields.push((k.into(), v));
    }
    s
}

/// Columns of the first series of an influxd answer, zipped with each row.
fn rows_as_maps(v: &Value) -> Vec<BTreeMap<String, Value>> {
    let series = &v["results"][0]["series"][0];
    let cols: Vec<String> = series["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    series["values"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    cols.iter()
                        .cloned()
                        .zip(r.as_array().cloned().unwrap_or_default())
                        .filter(|(_, v)| !v.is_null())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nasty_names_and_values_round_trip_through_influxd() {
    let influxd = Arc::new(Influxd::start());
    influxd.create_database("esc");
    let w = Running::start(&v1_config(&influxd.url(), "esc", ""));
    let ts = 1_700_000_000_123_456_789;
    let nasty = point(
        "rack temp,hall=A",
        &[
            ("site name", "DC 1,hall=A"),
            ("k=ey", "DOM\\user"),
            ("nl", "line1\nline2"),
            ("uni", "Zürich ☃"),
            ("trail", "C:\\temp\\"),
        ],
        vec![
            ("temp °C", FieldValue::Float(21.5)),
            ("msg", FieldValue::Str("say \"hi\" C:\\temp\\\nnext".into())),
            ("count", FieldValue::Int(-42)),
            ("octets", FieldValue::UInt(12_345)),
            ("ok", FieldValue::Bool(true)),
            ("nan", FieldValue::Float(f64::NAN)),
            ("tiny", FieldValue::Float(1.5e-7)),
        ],
        ts,
    );
    w.send(vec![nasty]).await;

    let db = influxd.clone();
    let row = eventually(
        Duration::from_secs(15),
        "nasty point in influxd",
        move || {
            rows_as_maps(&db.query_epoch_ns("esc", r#"SELECT * FROM "rack temp,hall=A""#))
                .into_iter()
                .next()
        },
    )
    .await;
    let want: BTreeMap<String, Value> = [
        ("time", json!(ts)),
        ("site name", json!("DC 1,hall=A")),
        ("k=ey", json!("DOM\\user")),
        // Newlines become spaces so one sample stays one line.
        ("nl", json!("line1 line2")),
        ("uni", json!("Zürich ☃")),
        // A trailing backslash cannot be written unambiguously: it becomes '/'.
        ("trail", json!("C:\\temp/")),
        ("temp °C", json!(21.5)),
        ("msg", json!("say \"hi\" C:\\temp\\ next")),
        ("count", json!(-42)),
        // InfluxDB 1.x has no unsigned type: written as an integer.
        ("octets", json!(12_345)),
        ("ok", json!(true)),
        ("tiny", json!(1.5e-7)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(row, want);
    let acks = w.acks.clone();
    eventually(Duration::from_secs(5), "ack after write", move || {
        (acks.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_type_conflict_drops_only_the_bad_point_and_keeps_going() {
    let influxd = Arc::new(Influxd::start());
    influxd.create_database("conf");
    let w = Running::start(&v1_config(&influxd.url(), "conf", ""));
    let rejected_before = counter("sitewatch_influx_dropped_total{reason=\"rejected\"}");

    w.send(vec![point(
        "m",
        &[],
        vec![("v", FieldValue::Float(1.0))],
        1_000,
    )])
    .await;
    let db = influxd.clone();
    eventually(Duration::from_secs(15), "first float point", move || {
        (db.rows("conf", "SELECT v FROM m").len() == 1).then_some(())
    })
    .await;

    // One batch: the string value conflicts with the float field, the others are fine.
    w.send(vec![
        point("m", &[], vec![("v", FieldValue::Float(2.0))], 2_000),
        point("m", &[], vec![("v", FieldValue::Str("oops".into()))], 3_000),
        point("m", &[], vec![("v", FieldValue::Float(4.0))], 4_000),
        point("other", &[], vec![("x", FieldValue::Int(1))], 5_000),
    ])
    .await;
    // And the writer keeps going afterwards.
    w.send(vec![point(
        "m",
        &[],
        vec![("v", FieldValue::Float(6.0))],
        6_000,
    )])
    .await;

    let db = influxd.clone();
    let rows = eventually(
        Duration::from_secs(15),
        "good points after the conflict",
        move || {
            let rows = db.rows("conf", "SELECT v FROM m");
            (rows.len() == 4).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        rows,
        vec![
            // influxd prints whole floats without a fraction.
            vec![json!(1_000), json!(1)],
            vec![json!(2_000), json!(2)],
            vec![json!(4_000), json!(4)],
            vec![json!(6_000), json!(6)],
        ]
    );
    assert_eq!(
        influxd.rows("conf", "SELECT x FROM other"),
        vec![vec![json!(5_000), json!(1)]]
    );
    let acks = w.acks.clone();
    eventually(
        Duration::from_secs(5),
        "all three batches acked",
        move || (acks.load(Ordering::SeqCst) == 3).then_some(()),
    )
    .await;
    assert_eq!(
        counter("sitewatch_influx_dropped_total{reason=\"rejected\"}") - rejected_before,
        1.0,
        "exactly the conflicting point is counted as rejected"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_start_then_up_then_restarted_data_arrives_in_order() {
    // Nothing listens on this port until influxd is started on it.
    let port = common::free_tcp_port();
    let url = format!("http://127.0.0.1:{port}");
    let w = Running::start(&v1_config(&url, "outage", "batch_size = 7"));
    let retries_before = counter("sitewatch_influx_retries_total");

    // Each batch writes one distinct point and overwrites one shared point (same series and
    // timestamp): the shared point ends with the last batch's value only if order was kept.
    let send_round = |from: i64, to: i64| {
        let w = &w;
        async move {
            for k in from..to {
                w.send(vec![
                    point("seq", &[], vec![("k", FieldValue::Int(k))], 1_000 + k),
                    point("last", &[], vec![("k", FieldValue::Int(k))], 1),
                ])
                .await;
            }
        }
    };
    // More batches than the channel holds: the writer must keep accepting while it retries.
    send_round(0, 100).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(w.acks(), 0, "nothing can be acked while the server is down");
    assert!(counter("sitewatch_influx_retries_total") > retries_before);

    // Up, but without the database for a moment: 404 is retried too.
    let influxd = Influxd::start_on(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    influxd.create_database("outage");
    let influxd = Arc::new(std::sync::Mutex::new(influxd));
    let db = influxd.clone();
    eventually(
        Duration::from_secs(20),
        "100 points after the server came up",
        move || {
            let rows = db.lock().unwrap().rows("outage", "SELECT k FROM seq");
            (rows.len() == 100).then_some(())
        },
    )
    .await;
    let last = influxd.lock().unwrap().rows("outage", "SELECT k FROM last");
    assert_eq!(last, vec![vec![json!(1), json!(99)]]);
    let acks = w.acks.clone();
    eventually(Duration::from_secs(5), "100 acks", move || {
        (acks.load(Ordering::SeqCst) == 100).then_some(())
    })
    .await;

    // Outage in the middle of the stream.
    influxd.lock().unwrap().stop();
    send_round(100, 140).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.acks(), 100);
    tokio::task::spawn_blocking({
        let i = influxd.clone();
        move || i.lock().unwrap().restart()
    })
    .await
    .unwrap();
    let db = influxd.clone();
    let rows = eventually(
        Duration::from_secs(20),
        "140 points after the restart",
        move || {
            let rows = db.lock().unwrap().rows("outage", "SELECT k FROM seq");
            (rows.len() == 140).then_some(rows)
        },
    )
    .await;
    let ks: Vec<i64> = rows.iter().map(|r| r[1].as_i64().unwrap()).collect();
    assert_eq!(ks, (0..140).collect::<Vec<_>>());
    let last = influxd.lock().unwrap().rows("outage", "SELECT k FROM last");
    assert_eq!(last, vec![vec![json!(1), json!(139)]]);
    let acks = w.acks.clone();
    eventually(Duration::from_secs(5), "140 acks", move || {
        (acks.load(Ordering::SeqCst) == 140).then_some(())
    })
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_channels_and_flushes_the_buffer() {
    let influxd = Influxd::start();
    influxd.create_database("bye");
    // Nothing would be flushed for an hour: only shutdown writes.
    let cfg = v1_config(
        &influxd.url(),
        "bye",
        "batch_size = 100000\nbuffer_limit = 100000",
    );
    let mut cfg = cfg;
    cfg.flush_interval = Duration::from_secs(3600);
    let w = Running::start(&cfg);
    for k in 0..50 {
        w.send(vec![point(
            "s",
            &[("rack", "r1")],
            vec![("v", FieldValue::Int(k))],
            10 + k,
        )])
        .await;
    }
    let event = point(
        "anything",
        &[("rule", "hot"), ("state", "firing")],
        vec![("message", FieldValue::Str("rack r1 is hot".into()))],
        99,
    );
    w.events.send(w.acked(vec![event])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        influxd.rows("bye", "SELECT * FROM s").is_empty(),
        "nothing flushed before shutdown"
    );
    let acks = w.acks.clone();
    w.stop().await;
    assert_eq!(influxd.rows("bye", "SELECT v FROM s").len(), 50);
    // Samples from the events channel go to the events measurement.
    assert_eq!(
        influxd.rows("bye", "SELECT message FROM events"),
        vec![vec![json!(99), json!("rack r1 is hot")]]
    );
    assert_eq!(acks.load(Ordering::SeqCst), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_api_with_token_lands_in_victoria_metrics() {
    let vm = Arc::new(VictoriaMetrics::start());
    let cfg: InfluxConfig = toml::from_str(&format!(
        "url = \"{}\"\napi = \"v2\"\norg = \"dc-ops\"\nbucket = \"sitewatch\"\ntoken = \"secret-token\"\nflush_interval = \"50ms\"\nmax_retry_delay = \"300ms\"",
        vm.url()
    ))
    .unwrap();
    let w = Running::start(&cfg);
    let now_ms = sitewatch::model::now_ns() / 1_000_000;
    let samples: Vec<Sample> = (0..5)
        .map(|i| {
            point(
                "ups",
                &[("device", "ups 1"), ("site", "dc1")],
                vec![
                    ("charge", FieldValue::Float(90.0 + i as f64)),
                    ("on_battery", FieldValue::Bool(i % 2 == 1)),
                ],
                (now_ms - 5_000 + i * 1_000) * 1_000_000,
            )
        })
        .collect();
    w.send(samples).await;
    let vm2 = vm.clone();
    let series = eventually(
        Duration::from_secs(20),
        "ups_charge in victoria-metrics",
        move || {
            let s = vm2.export("{__name__=\"ups_charge\"}");
            (s.first()
                .and_then(|s| s["values"].as_array())
                .map_or(0, Vec::len)
                == 5)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["metric"]["device"], json!("ups 1"));
    assert_eq!(series[0]["metric"]["site"], json!("dc1"));
    assert_eq!(series[0]["values"], json!([90, 91, 92, 93, 94]));
    let ts: Vec<i64> = (0..5).map(|i| now_ms - 5_000 + i * 1_000).collect();
    assert_eq!(series[0]["timestamps"], json!(ts));
    let q = vm.query("ups_on_battery{site=\"dc1\"}");
    assert_eq!(q["status"], json!("success"), "{q}");
    assert_eq!(q["data"]["result"][0]["value"][1], json!("0"), "{q}");
    let acks = w.acks.clone();
    eventually(Duration::from_secs(5), "ack", move || {
        (acks.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    w.stop().await;
}
