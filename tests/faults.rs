//! Fault injection against real services through the real binary: InfluxDB outages, a
//! `kill -9` of sitewatch during one, a broker restart, bad input, and secrets in debug logs.
//! Every QoS 1 message published must end up in InfluxDB exactly (counted by distinct
//! timestamp, values checked), and every bad input must be counted in `/metrics`.
//!
//! Run: `cargo test --test faults` (each test takes seconds). The long soak is
//! `cargo test --test faults -- --ignored soak` (minutes).

mod common;

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::{metric_sum, Sitewatch as Sw};
use common::{eventually, free_tcp_port, require_binary};

const DB: &str = "faults";

/// `mosquitto_pub -l`: one QoS 1 message per line written to its stdin, on one connection.
struct Publisher {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Publisher {
    fn start(broker: &Mosquitto, topic: &str) -> Publisher {
        let bin = require_binary("mosquitto_pub", "mosquitto-clients");
        let mut child = Command::new(bin)
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-t", topic, "-q", "1", "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto_pub");
        let stdin = child.stdin.take();
        Publisher { child, stdin }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("publisher open");
        writeln!(stdin, "{line}").expect("write to mosquitto_pub");
        stdin.flush().expect("flush mosquitto_pub");
    }

    /// Closes stdin; mosquitto_pub exits once the broker has acknowledged every message.
    fn finish(mut self) {
        drop(self.stdin.take());
        let out = self
            .child
            .wait_with_output()
            .expect("wait for mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Base timestamp an hour ago (inside the decoder's accepted range), whole seconds.
fn base_ns() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    (now - 3600) * 1_000_000_000
}

/// Message `i` of a run: its own timestamp (1 ms apart) and a value derived from `i`.
fn lp_line(base: i64, i: usize) -> String {
    format!(
        "load,sensor=s1 v={}i,x={}.5 {}",
        i,
        i * 3,
        base + i as i64 * 1_000_000
    )
}

/// The fault tests' config with a 2 s request timeout (outages are noticed fast).
fn config(influx: &Influxd, broker: &Mosquitto, client_id: &str, extra_influx: &str) -> String {
    config_with(
        influx,
        broker,
        client_id,
        &format!("timeout = \"2s\"\n{extra_influx}"),
    )
}

/// The fault tests' config, `[influx]` tuning left at its defaults but for `extra_influx`.
fn config_with(
    influx: &Influxd,
    broker: &Mosquitto,
    client_id: &str,
    extra_influx: &str,
) -> String {
    format!(
        r#"[influx]
url = "{}"
database = "{DB}"
batch_size = 500
flush_interval = "100ms"
max_retry_delay = "300ms"
spool_dir = "{{spool}}"
{extra_influx}

[mqtt]
host = "127.0.0.1"
port = {}
client_id = "{client_id}"
keep_alive = "5s"
reconnect_backoff_max = "500ms"

[[mqtt.subscription]]
topic = "faults/lp/#"
format = "line_protocol"
qos = 1
"#,
        influx.url(),
        broker.port
    )
}

/// Count of distinct points of `load` in InfluxDB.
fn count(influx: &Influxd) -> usize {
    influx
        .rows(DB, "SELECT count(v) FROM load")
        .first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as usize
}

/// Waits until exactly `n` points are stored, then checks each one's values against its
/// timestamp (nothing changed, nothing extra).
fn assert_all_stored(influx: &Influxd, base: i64, n: usize, sw: &Sw, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let c = count(influx);
        if c == n {
            break;
        }
        assert!(
            c <= n,
            "{what}: {c} points stored, more than the {n} published"
        );
        if Instant::now() > deadline {
            panic!(
                "{what}: {c} of {n} messages in InfluxDB after 40 s; sitewatch log:\n{}",
                sw.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows = influx.rows(DB, "SELECT v, x FROM load");
    assert_eq!(rows.len(), n);
    for r in rows {
        let t = r[0].as_i64().expect("epoch ns");
        let i = ((t - base) / 1_000_000) as u64;
        assert_eq!((t - base) % 1_000_000, 0, "timestamp kept to the ns");
        assert_eq!(r[1].as_u64(), Some(i), "v of message {i}");
        assert_eq!(
            r[2].as_f64(),
            Some((i * 3) as f64 + 0.5),
            "x of message {i}"
        );
    }
}

/// Publishes `from..to` at a steady rate (one message per `every`), counting in `sent`.
fn publish_range(
    p: &mut Publisher,
    base: i64,
    range: std::ops::Range<usize>,
    every: Duration,
    sent: &AtomicUsize,
) {
    for i in range {
        p.send(&lp_line(base, i));
        sent.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(every);
    }
}

/// Publishes `0..n` on `topic` from a thread at one message per `every`; returns the thread
/// (it ends once the broker acknowledged all) and the running count of messages sent.
fn spawn_publisher(
    broker: &Mosquitto,
    topic: &str,
    base: i64,
    n: usize,
    every: Duration,
) -> (std::thread::JoinHandle<()>, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let mut p = Publisher::start(broker, topic);
    let counter = sent.clone();
    let thread = std::thread::spawn(move || {
        publish_range(&mut p, base, 0..n, every, &counter);
        p.finish();
    });
    (thread, sent)
}

#[test]
fn influx_outage_under_steady_load_loses_nothing() {
    let mut influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let sw = Sw::start(&config(&influx, &broker, "faults-outage", ""), "info", &[]);
    let base = base_ns();
    let n = 600;
    let (publisher, sent) =
        spawn_publisher(&broker, "faults/lp/a", base, n, Duration::from_millis(5));
    eventually(Duration::from_secs(20), "200 published", || {
        (sent.load(Ordering::SeqCst) >= 200).then_some(())
    });
    influx.stop();
    eventually(Duration::from_secs(20), "400 published", || {
        (sent.load(Ordering::SeqCst) >= 400).then_some(())
    });
    // The outage is visible: writes fail and data goes to the spool.
    let spooled = sw.metric("sitewatch_influx_spooled_samples_total", &[]);
    influx.restart();
    publisher.join().expect("publisher thread");
    assert_all_stored(&influx, base, n, &sw, "outage");
    assert!(spooled > 0.0, "nothing was spooled during the outage");
    assert!(sw.metric("sitewatch_influx_write_errors_total", &[]) > 0.0);
    assert_eq!(sw.metric("sitewatch_influx_dropped_total", &[]), 0.0);
}

#[test]
fn kill_9_during_an_outage_then_restart_replays_the_spool() {
    let mut influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let mut sw = Sw::start(&config(&influx, &broker, "faults-kill9", ""), "info", &[]);
    let base = base_ns();
    let mut p = Publisher::start(&broker, "faults/lp/k");
    let sent = AtomicUsize::new(0);
    publish_range(&mut p, base, 0..100, Duration::ZERO, &sent);
    assert_all_stored(&influx, base, 100, &sw, "before the outage");

    influx.stop();
    publish_range(&mut p, base, 100..300, Duration::from_millis(2), &sent);
    p.finish();
    // Most of the outage's data is acknowledged to the broker because it is in the spool.
    eventually(Duration::from_secs(20), "outage data spooled", || {
        (sw.metric("sitewatch_influx_spooled_samples_total", &[]) >= 150.0).then_some(())
    });
    sw.kill9();
    let spool_files = std::fs::read_dir(sw.dir().join("spool/series"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(spool_files > 0, "spool segments on disk after kill -9");

    influx.restart();
    sw.launch();
    assert_all_stored(&influx, base, 300, &sw, "after kill -9 and restart");
    assert!(
        sw.metric("sitewatch_influx_spool_replayed_samples_total", &[]) >= 150.0,
        "the restarted instance replayed the spool (not only broker redelivery)"
    );
    assert_eq!(sw.metric("sitewatch_influx_dropped_total", &[]), 0.0);
}

#[test]
fn broker_restart_under_load_loses_nothing() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let mut broker = Mosquitto::start();
    // Acks wait up to 1 s for the flush, so many messages are un-acked at the restart.
    let sw = Sw::start(
        &config(&influx, &broker, "faults-broker", "")
            .replace("flush_interval = \"100ms\"", "flush_interval = \"1s\""),
        "info",
        &[],
    );
    let base = base_ns();
    let sent = AtomicUsize::new(0);
    let mut p = Publisher::start(&broker, "faults/lp/b");
    publish_range(&mut p, base, 0..300, Duration::from_millis(1), &sent);
    p.finish();
    broker.restart();
    let mut p = Publisher::start(&broker, "faults/lp/b");
    publish_range(&mut p, base, 300..600, Duration::from_millis(1), &sent);
    p.finish();
    assert_all_stored(&influx, base, 600, &sw, "broker restart");
    assert!(sw.metric("sitewatch_mqtt_reconnects_total", &[]) >= 1.0);
}

#[test]
fn bad_input_is_counted_and_good_data_keeps_flowing() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let body = format!(
        r#"{}
[[mqtt.subscription]]
topic = "faults/num/{{sensor}}"
measurement = "num"
format = "number"
max_payload_size = 64
max_series = 5
"#,
        config(&influx, &broker, "faults-bad", "")
    );
    let sw = Sw::start(&body, "info", &[]);
    let base = base_ns();
    let good = |i: usize| lp_line(base, i);
    broker.publish("faults/lp/g", good(0).as_bytes(), 1, false);
    broker.publish("faults/num/s0", b"21.5", 1, false);
    // Oversized, invalid UTF-8, NaN and infinity.
    broker.publish("faults/num/s0", "1".repeat(100).as_bytes(), 1, false);
    broker.publish("faults/num/s0", &[0xff, 0xfe, 0x31], 1, false);
    broker.publish("faults/num/s0", b"NaN", 1, false);
    broker.publish("faults/num/s0", b"inf", 1, false);
    // Absurd timestamps: 1970 and the year 2096.
    broker.publish("faults/lp/g", b"load,sensor=s1 v=1i 1", 1, false);
    broker.publish(
        "faults/lp/g",
        b"load,sensor=s1 v=1i 4000000000000000000",
        1,
        false,
    );
    broker.publish("faults/lp/g", good(1).as_bytes(), 1, false);
    // One publisher, 20 sensors: 5 series allowed (s0 already is one), 16 dropped.
    for s in 1..=20 {
        broker.publish(&format!("faults/num/s{s}"), b"1", 1, false);
    }
    // Known series keep flowing after the cap.
    broker.publish("faults/num/s0", b"22.5", 1, false);
    broker.publish("faults/lp/g", good(2).as_bytes(), 1, false);

    assert_all_stored(
        &influx,
        base,
        3,
        &sw,
        "good line protocol between bad input",
    );
    // Five series in InfluxDB, and the known one got both of its good values.
    eventually(
        Duration::from_secs(20),
        "5 num series, 2 points of s0",
        || {
            let v = influx.query(DB, "SHOW TAG VALUES FROM num WITH KEY = sensor");
            let n = v["results"][0]["series"][0]["values"]
                .as_array()
                .map_or(0, |a| a.len());
            let s0 = influx.rows(DB, "SELECT count(value) FROM num WHERE sensor = 's0'");
            let s0 = s0.first().and_then(|r| r[1].as_u64()).unwrap_or(0);
            (n == 5 && s0 == 2).then_some(())
        },
    );
    let v = influx.query(DB, "SHOW TAG VALUES FROM num WITH KEY = sensor");
    assert_eq!(
        v["results"][0]["series"][0]["values"]
            .as_array()
            .map(|a| a.len()),
        Some(5),
        "no series past the cap"
    );
    let m = sw.metrics();
    let errors = |reason: &str| {
        metric_sum(
            &m,
            "sitewatch_mqtt_decode_errors_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(errors("oversized"), 1.0, "{m}");
    assert_eq!(errors("invalid_utf8"), 1.0, "{m}");
    assert_eq!(errors("non_finite"), 2.0, "{m}");
    assert_eq!(errors("timestamp_out_of_range"), 2.0, "{m}");
    assert_eq!(
        metric_sum(
            &m,
            "sitewatch_mqtt_dropped_total",
            &["reason=\"series_cap\""]
        ),
        16.0,
        "{m}"
    );
}

#[test]
fn secrets_from_env_never_reach_the_logs() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let nonce = std::process::id();
    let mqtt_pw = format!("mqtt-Secr3t-{nonce}");
    let influx_pw = format!("influx-Secr3t-{nonce}");
    let body = config(&influx, &broker, "faults-secrets", "")
        .replace(
            "timeout = \"2s\"",
            "timeout = \"2s\"\nusername = \"writer\"\npassword = { env = \"SW_FAULTS_INFLUX_PW\" }",
        )
        .replace(
            "keep_alive = \"5s\"",
            "keep_alive = \"5s\"\nusername = \"sitewatch\"\npassword = { env = \"SW_FAULTS_MQTT_PW\" }",
        );
    let mut sw = Sw::start(
        &body,
        "trace",
        &[
            ("SW_FAULTS_MQTT_PW", &mqtt_pw),
            ("SW_FAULTS_INFLUX_PW", &influx_pw),
            ("RUST_LOG", "trace"),
        ],
    );
    let base = base_ns();
    for i in 0..3 {
        broker.publish("faults/lp/s", lp_line(base, i).as_bytes(), 1, false);
    }
    assert_all_stored(&influx, base, 3, &sw, "with credentials");
    sw.terminate();
    let log = sw.log();
    assert!(log.len() > 1000, "trace logging produced output:\n{log}");
    // The basic auth header carries base64("writer:<password>").
    let basic = base64(format!("writer:{influx_pw}").as_bytes());
    for secret in [&mqtt_pw, &influx_pw, &basic] {
        assert!(
            !log.contains(secret.as_str()),
            "secret {secret:?} appears in the trace log"
        );
    }
}

/// A webhook that is down (nothing listens on its port) while an alarm fires, then comes up:
/// the alert still arrives, via the real binary and its retry loop.
#[test]
fn webhook_down_then_up_still_gets_the_alert() {
    use std::io::{BufRead, BufReader, Read};
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let hook_port = free_tcp_port();
    let body = format!(
        r#"{}
[[mqtt.subscription]]
topic = "faults/num/{{rack}}"
measurement = "env"
format = "number"
field = "temperature"

[rules]
files = ["rules.toml"]

[notify]
[[notify.receiver]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
timeout = "1s"
max_retry_delay = "300ms"
"#,
        config(&influx, &broker, "faults-hook", "")
    );
    // The rules file sits next to the config (its path is relative to it).
    let sw = {
        let tmp = Sw::start_paused(&body);
        std::fs::write(
            tmp.dir().join("rules.toml"),
            "[[rule]]\nname = \"rack_hot\"\nmeasurement = \"env\"\nfield = \"temperature\"\nabove = { critical = 30 }\n",
        )
        .expect("write rules");
        let mut tmp = tmp;
        tmp.launch();
        tmp
    };
    // Retained, so the reading reaches sitewatch even if its subscription is not in place
    // yet (`launch` waits for the metrics port, which opens before the MQTT session).
    broker.publish("faults/num/r7", b"35", 1, true);
    // Attempts fail while nothing listens.
    eventually(Duration::from_secs(20), "failed delivery attempts", || {
        sw.log().contains("cannot reach receiver").then_some(())
    });
    let listener = std::net::TcpListener::bind(("127.0.0.1", hook_port)).expect("bind hook port");
    listener.set_nonblocking(false).expect("blocking listener");
    let (stream, _) = listener.accept().expect("sitewatch retries the webhook");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut len = 0usize;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read request");
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("content length");
        }
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).expect("read body");
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .expect("answer");
    let payload = String::from_utf8_lossy(&payload);
    assert!(head.starts_with("POST /hook"), "{head}");
    assert!(
        payload.contains("rack_hot") && payload.contains("r7"),
        "the alarm arrived after the outage: {payload}"
    );
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Soak: 20,000 messages at ~1 kHz with three InfluxDB outages and a sitewatch kill -9.
/// Run: `cargo test --test faults -- --ignored soak` (about 30 s).
#[test]
#[ignore = "soak (~30 s); run with --ignored"]
fn soak_repeated_outages_and_a_crash() {
    let mut influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let mut sw = Sw::start(&config(&influx, &broker, "faults-soak", ""), "info", &[]);
    let base = base_ns();
    let n = 20_000;
    let (publisher, sent) =
        spawn_publisher(&broker, "faults/lp/soak", base, n, Duration::from_millis(1));
    for round in 0..3 {
        let at = (round + 1) * n / 5;
        eventually(Duration::from_secs(120), "progress", || {
            (sent.load(Ordering::SeqCst) >= at).then_some(())
        });
        influx.stop();
        std::thread::sleep(Duration::from_secs(3));
        if round == 1 {
            sw.kill9();
            sw.launch();
        }
        influx.restart();
    }
    publisher.join().expect("publisher");
    assert_all_stored(&influx, base, n, &sw, "soak");
}

/// A hung InfluxDB (SIGSTOP: connections accepted, nothing answered) under 500 msg/s, with
/// a broker at Mosquitto's default queue (`max_queued_messages 1000`) and the README's
/// in-flight window: memory moves to the spool after `spill_after` and is acknowledged, so
/// the broker never has to drop; `/ready` says 503 within the grace and 200 again after.
#[test]
fn hung_influx_loses_nothing_and_ready_tells() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start_with_limits(1000, 1000);
    let body = config_with(&influx, &broker, "faults-hung", "");
    // timeout (10 s) and spill_after (3 s) at their defaults.
    let sw = Sw::start_with_service("ready_grace = \"4s\"", &body, "info", &[]);
    let ready = |sw: &Sw| {
        common::alertmanager::http_get(sw.metrics_port, "/ready")
            .map(|(code, _)| code)
            .unwrap_or(0)
    };
    let base = base_ns();
    let n = 15_000;
    let (publisher, sent) =
        spawn_publisher(&broker, "faults/lp/hung", base, n, Duration::from_millis(2));
    eventually(Duration::from_secs(20), "ready before the fault", || {
        (ready(&sw) == 200 && sent.load(Ordering::SeqCst) >= 1500).then_some(())
    });
    influx.pause();
    let hung_at = Instant::now();
    let went_unready = eventually(Duration::from_secs(40), "/ready 503 while hung", || {
        (ready(&sw) == 503).then(|| hung_at.elapsed())
    });
    let (_, report) = common::alertmanager::http_get(sw.metrics_port, "/ready").unwrap();
    std::thread::sleep(Duration::from_secs(15).saturating_sub(hung_at.elapsed()));
    let spilled = sw.metric("sitewatch_influx_spilled_samples_total", &[]);
    influx.resume();
    let resumed_at = Instant::now();
    let back = eventually(Duration::from_secs(60), "/ready 200 after", || {
        (ready(&sw) == 200).then(|| resumed_at.elapsed())
    });
    publisher.join().expect("publisher thread");
    assert_all_stored(&influx, base, n, &sw, "hung influx");
    assert!(
        spilled > 0.0,
        "nothing was moved to the spool while InfluxDB hung"
    );
    assert!(
        report.contains("\"spooling\""),
        "/ready report while hung: {report}"
    );
    assert!(
        !broker.log().contains("Outgoing messages are being dropped"),
        "the broker dropped messages"
    );
    eprintln!(
        "hung influx: published {n}, stored {n}, spilled {spilled}, /ready 503 after {went_unready:?}, 200 again {back:?} after resume"
    );
}

/// The long soak of issue 11: InfluxDB refused (killed), hung (SIGSTOP), slow (stopped and
/// continued in quick turns) and healthy in turn, with one `kill -9` of sitewatch, under
/// ~450 msg/s for `SITEWATCH_SOAK_SECS` (default 600). Every published message must be stored.
/// Run: `SITEWATCH_SOAK_SECS=600 cargo test --release --test faults -- --ignored --nocapture soak_refused_hung_slow`
#[test]
#[ignore = "soak (10 min by default); run with --ignored"]
fn soak_refused_hung_slow_and_a_crash() {
    let secs: u64 = std::env::var("SITEWATCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let mut influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start_with_limits(1000, 10_000);
    let mut sw = Sw::start(
        &config(&influx, &broker, "faults-soak-long", ""),
        "info",
        &[],
    );
    let base = base_ns();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (sent, stop) = (sent.clone(), stop.clone());
        let mut p = Publisher::start(&broker, "faults/lp/soak");
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                p.send(&lp_line(base, i));
                sent.fetch_add(1, Ordering::SeqCst);
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            p.finish();
        })
    };
    let started = Instant::now();
    let phase = Duration::from_secs(20);
    let mut crashed = false;
    let mut phases = Vec::new();
    let mut round = 0;
    while started.elapsed() + phase < Duration::from_secs(secs) {
        let t = Instant::now();
        match round % 4 {
            0 => {
                influx.stop();
                std::thread::sleep(phase);
                influx.restart();
                phases.push("refused");
            }
            1 => {
                influx.pause();
                std::thread::sleep(phase);
                influx.resume();
                phases.push("hung");
            }
            2 => {
                while t.elapsed() < phase {
                    influx.pause();
                    std::thread::sleep(Duration::from_millis(1500));
                    influx.resume();
                    std::thread::sleep(Duration::from_millis(500));
                }
                phases.push("slow");
            }
            _ => {
                if !crashed && started.elapsed() > Duration::from_secs(secs / 2) {
                    sw.kill9();
                    sw.launch();
                    crashed = true;
                    phases.push("kill -9");
                }
                std::thread::sleep(phase.saturating_sub(t.elapsed()));
                phases.push("healthy");
            }
        }
        round += 1;
    }
    stop.store(true, Ordering::SeqCst);
    publisher.join().expect("publisher");
    let n = sent.load(Ordering::SeqCst);
    assert_all_stored(&influx, base, n, &sw, "long soak");
    eprintln!(
        "long soak: {:?}, phases {phases:?}, published {n}, stored {n}, lost 0",
        started.elapsed()
    );
}

/// Issue 12: SIGHUP reloads are counted with their result (as file-change reloads are), and
/// `/ready` shows the last reload's result.
#[test]
fn sighup_reloads_are_counted_and_reported() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let body = format!(
        "{}\n[rules]\nfiles = [\"rules.toml\"]\nwatch_interval = \"0s\"\n",
        config(&influx, &broker, "faults-hup", "")
    );
    let mut sw = Sw::start_paused(&body);
    let rule = |above: f64| {
        format!(
            "[[rule]]\nname = \"hot\"\nmeasurement = \"load\"\nfield = \"x\"\nabove = {{ critical = {above} }}\n"
        )
    };
    std::fs::write(sw.dir().join("rules.toml"), rule(10.0)).unwrap();
    sw.launch();
    let reloads = |sw: &Sw, result: &str| {
        sw.metric(
            "sitewatch_rules_reloads_total",
            &["trigger=\"sighup\"", &format!("result=\"{result}\"")],
        )
    };
    std::fs::write(sw.dir().join("rules.toml"), rule(20.0)).unwrap();
    sw.signal("-HUP");
    eventually(Duration::from_secs(10), "a counted SIGHUP reload", || {
        (reloads(&sw, "ok") == 1.0).then_some(())
    });
    std::fs::write(sw.dir().join("rules.toml"), "[[rule]]\nname = \"broken\"\n").unwrap();
    sw.signal("-HUP");
    eventually(
        Duration::from_secs(10),
        "a counted failed SIGHUP reload",
        || (reloads(&sw, "error") == 1.0).then_some(()),
    );
    let (_, report) = common::alertmanager::http_get(sw.metrics_port, "/ready").unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["rules"]["last_reload_ok"], false, "{report}");
    assert_eq!(
        report["rules"]["rules"], 1,
        "the previous rules stay: {report}"
    );
}
