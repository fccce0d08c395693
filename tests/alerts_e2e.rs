//! Alerts end to end through the built binary: MQTT sample → `sitewatch run` → rule →
//! Prometheus Alertmanager, a webhook and the `events` measurement in InfluxDB, with a dead
//! and a hanging receiver configured alongside. Also measures the time from publishing a
//! threshold-crossing sample to the webhook request arriving.
//!
//! `cargo test --test alerts_e2e -- --ignored --nocapture alert_latency_200_crossings` runs
//! the longer latency measurement recorded in docs/BENCHMARKS.md.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::alertmanager::{http_get, Alertmanager, WebhookReceiver};
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::{free_tcp_port, ServiceProcess};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::Value;

const DB: &str = "sitewatch";
const RULE: &str = "e2e_rack_hot";

const RULES: &str = r#"
[[rule]]
name = "e2e_rack_hot"
measurement = "environment"
field = "temperature"
match = { site = "*", rack = "*" }
above = { critical = 30.0, critical_clear = 28.0 }
message = "{rack}: inlet {value} °C above {threshold} °C"
"#;

/// Everything one test needs, stopped on drop.
struct Stack {
    influx: Influxd,
    _broker: Broker,
    am: Alertmanager,
    hook: WebhookReceiver,
    sitewatch: ServiceProcess,
    metrics_port: u16,
    mqtt: AsyncClient,
    mqtt_task: tokio::task::JoinHandle<()>,
    /// Accepts TCP connections into its backlog and never answers.
    hanging: TcpListener,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.mqtt_task.abort();
    }
}

enum Broker {
    Harness(Mosquitto),
    /// A broker with `set_tcp_nodelay true`, for the latency comparison.
    NoDelay {
        /// Held so the broker stops when the stack is dropped.
        _proc: ServiceProcess,
        port: u16,
    },
}

impl Broker {
    fn port(&self) -> u16 {
        match self {
            Broker::Harness(m) => m.port,
            Broker::NoDelay { port, .. } => *port,
        }
    }

    /// Mosquitto like the harness's, but with Nagle's algorithm off on client sockets.
    fn start_nodelay() -> Broker {
        use std::os::unix::fs::MetadataExt;
        let bin = common::require_binary("mosquitto", "mosquitto");
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-mosquitto-nodelay")
            .tempdir()
            .unwrap();
        let port = free_tcp_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nmax_inflight_messages 1000\nmax_queued_messages 100000\nlog_dest stdout\n"
        );
        if std::fs::metadata(dir.path()).map(|m| m.uid()).unwrap_or(1) == 0 {
            // Mosquitto 2 started as root would switch to a user that cannot use this dir.
            conf.push_str("user root\n");
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(dir.path().join("mosquitto.conf"));
        let mut proc = ServiceProcess::spawn("mosquitto-nodelay", cmd, dir);
        proc.wait_for_tcp(port, Duration::from_secs(10));
        Broker::NoDelay { _proc: proc, port }
    }
}

/// Runs blocking harness calls without starving the runtime that serves the webhook.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn start() -> Stack {
    start_with(false).await
}

async fn start_with(broker_nodelay: bool) -> Stack {
    let (influx, broker, am) = blocking(|| {
        let influx = Influxd::start();
        influx.create_database(DB);
        let broker = if broker_nodelay {
            Broker::start_nodelay()
        } else {
            Broker::Harness(Mosquitto::start())
        };
        (influx, broker, Alertmanager::start())
    });
    let broker_port = broker.port();
    let hook = WebhookReceiver::start().await;
    let dead_port = free_tcp_port();
    let hanging = TcpListener::bind("127.0.0.1:0").expect("bind hanging receiver");
    let hanging_port = hanging.local_addr().unwrap().port();
    let metrics_port = free_tcp_port();

    let dir = tempfile::Builder::new()
        .prefix("sitewatch-alerts-e2e")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    let cfg = dir.path().join("sitewatch.toml");
    // The dead and hanging receivers come first: if receivers were served in turn, the
    // webhook would wait behind their timeouts and retries.
    std::fs::write(
        &cfg,
        format!(
            r#"[service]
log_level = "info,sitewatch=debug"
listen = "127.0.0.1:{metrics_port}"

[influx]
url = "{influx}"
database = "{DB}"
flush_interval = "100ms"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "sitewatch-alerts-e2e-{mqtt_port}"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{rack}}/temperature"
measurement = "environment"
format = "number"
field = "temperature"

[rules]
files = ["rules.toml"]

[notify]
[[notify.receiver]]
name = "dead"
kind = "webhook"
url = "http://127.0.0.1:{dead_port}/hook"
timeout = "5s"

[[notify.receiver]]
name = "hanging"
kind = "webhook"
url = "http://127.0.0.1:{hanging_port}/hook"
timeout = "5s"

[[notify.receiver]]
name = "alertmanager"
kind = "alertmanager"
url = "{am}"

[[notify.receiver]]
name = "hook"
kind = "webhook"
url = "{hook}"
"#,
            influx = influx.url(),
            mqtt_port = broker_port,
            am = am.url(),
            hook = hook.url("/alerts"),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(common::sitewatch_bin());
    cmd.arg("run").arg("--config").arg(&cfg);
    cmd.env_remove("RUST_LOG").env_remove("SITEWATCH_CONFIG");
    let mut sitewatch = ServiceProcess::spawn("sitewatch", cmd, dir);
    blocking(|| {
        sitewatch.wait_for_tcp(metrics_port, Duration::from_secs(20));
    });

    let mut opts = MqttOptions::new(
        format!("e2e-publisher-{broker_port}"),
        "127.0.0.1",
        broker_port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (mqtt, mut eventloop) = AsyncClient::new(opts, 100);
    let mqtt_task = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let mut stack = Stack {
        influx,
        _broker: broker,
        am,
        hook,
        sitewatch,
        metrics_port,
        mqtt,
        mqtt_task,
        hanging,
    };
    stack.warm_up().await;
    stack
}

impl Stack {
    async fn publish(&self, rack: &str, value: f64) {
        self.mqtt
            .publish(
                format!("dc/dc1/{rack}/temperature"),
                QoS::AtLeastOnce,
                false,
                value.to_string(),
            )
            .await
            .expect("queue MQTT publish");
    }

    /// Publishes cool samples until one is stored: the subscription is live end to end.
    async fn warm_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.publish("warmup", 20.0).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let rows = blocking(|| {
                self.influx.rows(
                    DB,
                    "SELECT \"temperature\" FROM \"environment\" WHERE \"rack\" = 'warmup'",
                )
            });
            if !rows.is_empty() {
                return;
            }
            self.sitewatch.assert_running();
            assert!(
                Instant::now() < deadline,
                "no sample reached InfluxDB within 30 s; sitewatch log:\n{}",
                self.sitewatch.log()
            );
        }
    }

    /// Arrival times of webhook alerts of the rule for `rack` with `status`, in order.
    fn hook_alerts(&self, rack: &str, status: &str) -> Vec<(Instant, Value)> {
        let mut out = Vec::new();
        for r in self.hook.accepted() {
            for a in r.body["alerts"].as_array().into_iter().flatten() {
                if a["labels"]["alertname"] == RULE
                    && a["labels"]["rack"] == rack
                    && a["status"] == status
                {
                    out.push((r.at, a.clone()));
                }
            }
        }
        out
    }

    async fn wait_hook(&self, rack: &str, status: &str, n: usize) -> Vec<(Instant, Value)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.hook_alerts(rack, status);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "webhook: {} of {n} {status} alerts for {rack} within 10 s; requests: {:#?}\nsitewatch log:\n{}",
                got.len(),
                self.hook.requests(),
                self.sitewatch.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn am_active(&self, rack: &str) -> Vec<Value> {
        blocking(|| self.am.active_named(RULE))
            .into_iter()
            .filter(|a| a["labels"]["rack"] == rack)
            .collect()
    }

    /// (state, severity) of the `events` rows for `rack`, in time order.
    fn event_rows(&self, rack: &str) -> Vec<(String, String)> {
        let q = format!(
            "SELECT \"value\", \"state\"::tag, \"severity\"::tag FROM \"events\" WHERE \"rule\" = '{RULE}' AND \"rack\" = '{rack}'"
        );
        blocking(|| self.influx.rows(DB, &q))
            .into_iter()
            .map(|r| {
                (
                    r[2].as_str().unwrap_or_default().to_string(),
                    r[3].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn metric(&self, prefix: &str, label: &str) -> f64 {
        let (status, body) =
            blocking(|| http_get(self.metrics_port, "/metrics")).expect("GET /metrics");
        assert_eq!(status, 200);
        body.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `n` crossings on `rack`: publish a hot sample, time its webhook request, clear it.
    async fn crossings(&self, rack: &str, n: usize) -> Vec<Duration> {
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let before = self.hook_alerts(rack, "firing").len();
            let t0 = Instant::now();
            self.publish(rack, 35.0 + (i % 5) as f64).await;
            let got = self.wait_hook(rack, "firing", before + 1).await;
            latencies.push(got[before].0.saturating_duration_since(t0));
            let resolved = self.hook_alerts(rack, "resolved").len();
            self.publish(rack, 25.0).await;
            self.wait_hook(rack, "resolved", resolved + 1).await;
        }
        latencies
    }
}

/// Polls `f` (which may block briefly) every 50 ms for up to 10 s.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after 10 s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nearest-rank percentile.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn report(what: &str, mut latencies: Vec<Duration>) -> (Duration, Duration) {
    latencies.sort();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let slow = latencies
        .iter()
        .filter(|l| **l > Duration::from_millis(20))
        .count();
    println!(
        "{what}: {} crossings, publish -> webhook latency p50 {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms, {slow} over 20 ms",
        latencies.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies[0].as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
    );
    (p50, p99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_fires_everywhere_then_resolves_once() {
    let stack = start().await;

    // Cool, then hot: one alert in Alertmanager, the webhook and the events measurement.
    stack.publish("r1", 24.0).await;
    let t0 = Instant::now();
    stack.publish("r1", 33.5).await;
    let fired = stack.wait_hook("r1", "firing", 1).await;
    let first_latency = fired[0].0.saturating_duration_since(t0);
    let alert = &fired[0].1;
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["site"], "dc1");
    assert_eq!(
        alert["annotations"]["summary"],
        "r1: inlet 33.5 °C above 30 °C"
    );

    let active = eventually("alert active in Alertmanager", || {
        let a = stack.am_active("r1");
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(active.len(), 1, "{active:#?}");
    let labels = &active[0]["labels"];
    for (k, v) in [
        ("alertname", RULE),
        ("severity", "critical"),
        ("site", "dc1"),
        ("rack", "r1"),
        ("measurement", "environment"),
        ("field", "temperature"),
    ] {
        assert_eq!(labels[k], v, "label {k} in {labels}");
    }

    // Between the clear value and the level: still firing, nothing new is sent.
    stack.publish("r1", 29.0).await;
    // Back below the clear value: resolved everywhere.
    stack.publish("r1", 27.5).await;
    let resolved = stack.wait_hook("r1", "resolved", 1).await;
    assert_eq!(resolved[0].1["labels"]["severity"], "critical");
    assert_ne!(resolved[0].1["endsAt"], "0001-01-01T00:00:00Z");
    eventually("alert no longer active in Alertmanager", || {
        stack.am_active("r1").is_empty().then_some(())
    })
    .await;
    let rows = eventually("two events rows", || {
        let r = stack.event_rows("r1");
        (r.len() >= 2).then_some(r)
    })
    .await;
    assert_eq!(
        rows,
        vec![
            ("firing".to_string(), "critical".to_string()),
            ("resolved".to_string(), "critical".to_string())
        ]
    );

    // Latency over repeated crossings, with the dead and the hanging receiver still failing.
    let latencies = stack.crossings("r2", 20).await;
    let (_p50, p99) = report("alerts_e2e", latencies);
    assert!(
        first_latency < Duration::from_secs(1),
        "first alert took {first_latency:?}"
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // The dead and the hanging receiver were tried all along without holding the webhook
    // back: failures are counted for one, a connection waits in the other's backlog.
    assert!(
        stack.metric("sitewatch_notify_failures_total{", "receiver=\"dead\"") > 0.0,
        "the dead receiver was never tried"
    );
    stack.hanging.set_nonblocking(true).unwrap();
    assert!(
        stack.hanging.accept().is_ok(),
        "the hanging receiver was never contacted"
    );

    // Exactly one firing and one resolved notification and row for r1, also after the rest.
    assert_eq!(stack.hook_alerts("r1", "firing").len(), 1);
    assert_eq!(stack.hook_alerts("r1", "resolved").len(), 1);
    let r2 = eventually("one firing and one resolved row per crossing", || {
        let r = stack.event_rows("r2");
        (r.len() >= 40).then_some(r)
    })
    .await;
    assert_eq!(r2.len(), 40);
    assert!(
        r2.chunks(2)
            .all(|p| p[0].0 == "firing" && p[1].0 == "resolved"),
        "{r2:?}"
    );
    assert_eq!(stack.event_rows("r1").len(), 2);
}

/// The numbers in docs/BENCHMARKS.md (`## Alert latency`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "latency measurement, ~30 s; run with --ignored --nocapture"]
async fn alert_latency_200_crossings() {
    let stack = start().await;
    let latencies = stack.crossings("bench", 200).await;
    let (_p50, p99) = report("alert_latency_200_crossings", latencies);
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}

/// Same with `set_tcp_nodelay true` on the broker (see docs/BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "latency measurement, ~10 s; run with --ignored --nocapture"]
async fn alert_latency_200_crossings_broker_nodelay() {
    let stack = start_with(true).await;
    let latencies = stack.crossings("bench", 200).await;
    let (_p50, p99) = report("alert_latency_200_crossings_broker_nodelay", latencies);
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}
