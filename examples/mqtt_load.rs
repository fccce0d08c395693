//! Load generator and measuring sink for the MQTT end-to-end benchmark (`benches/mqtt_load.sh`).
//!
//! - `publish`: N MQTT connections publish JSON readings `{"t": <send ns>, "temperature": ..,
//!   "humidity": .., "power": .., "seq": ..}` (4 fields and the timestamp, like the issue's
//!   harness) on `load/<site>/<rack>/temperature` at a target total rate.
//! - `sink`: an InfluxDB `/write` endpoint for sitewatch to write to. Without `--upstream` it
//!   discards (measures sitewatch alone); with `--upstream` it forwards every request to a
//!   real InfluxDB and answers with its reply (measures the whole chain). Either way it reads
//!   the point timestamps (= the publisher's send time, via the subscription's `timestamp`
//!   path) and records, per line, the time from publish to stored, then prints a summary.
//!
//! Not part of sitewatch: a benchmark tool, loopback only, plain HTTP.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish `count` messages in total at `rate` messages/s over `publishers` connections.
    Publish {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        qos: u8,
        #[arg(long)]
        count: u64,
        /// Messages per second in total; 0 = as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 4)]
        publishers: u64,
        /// Distinct racks (series) the messages are spread over.
        #[arg(long, default_value_t = 1000)]
        series: u64,
        /// Sites the racks are spread over (rack n is on site `s<n % sites>`): the matrix
        /// spreads narrow rules over sites.
        #[arg(long, default_value_t = 4)]
        sites: u64,
    },
    /// Serve `POST /write`, discard or forward, and measure.
    Sink {
        #[arg(long)]
        listen: u16,
        /// Forward to this InfluxDB base URL, e.g. http://127.0.0.1:8086.
        #[arg(long)]
        upstream: Option<String>,
        /// Only lines of this measurement are counted and timed.
        #[arg(long, default_value = "load")]
        measurement: String,
        /// Print the summary and exit once this many lines have arrived.
        #[arg(long)]
        expect: u64,
        /// Give up (and still print the summary) after this long.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    match Cli::parse().cmd {
        Cmd::Publish {
            host,
            port,
            qos,
            count,
            rate,
            publishers,
            series,
            sites,
        } => {
            publish(
                host,
                port,
                qos,
                count,
                rate,
                publishers.max(1),
                series.max(1),
                sites.max(1),
            )
            .await
        }
        Cmd::Sink {
            listen,
            upstream,
            measurement,
            expect,
            timeout,
        } => sink(listen, upstream, measurement, expect, timeout).await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    host: String,
    port: u16,
    qos: u8,
    count: u64,
    rate: u64,
    publishers: u64,
    series: u64,
    sites: u64,
) {
    let qos = if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let n = count / publishers + u64::from(p < count % publishers);
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut o =
                MqttOptions::new(format!("load-pub-{p}-{}", std::process::id()), host, port);
            o.set_keep_alive(Duration::from_secs(30))
                .set_inflight(1000)
                .set_clean_session(true);
            let (client, mut eventloop) = AsyncClient::new(o, 1000);
            let done = Arc::new(AtomicU64::new(0));
            let done_loop = done.clone();
            let driver = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => {
                            done_loop.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                            done_loop.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("publisher {p}: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            });
            // Each publisher paces itself to rate / publishers.
            let per_msg =
                (rate > 0).then(|| Duration::from_secs_f64(publishers as f64 / rate as f64));
            let t0 = Instant::now();
            for i in 0..n {
                if let Some(d) = per_msg {
                    let due = t0 + d.mul_f64(i as f64);
                    let now = Instant::now();
                    if due > now + Duration::from_millis(1) {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let seq = i * publishers + p;
                let rack = seq % series;
                let temp = 20.0 + (rack % 10) as f64 * 0.5 + (seq % 7) as f64 * 0.01;
                let humidity = 40.0 + (rack % 20) as f64 * 0.5;
                let power = 1000 + (rack % 50) * 3 + seq % 5;
                let topic = format!("load/s{}/r{rack:05}/temperature", rack % sites);
                let payload = format!(
                    r#"{{"t":{},"temperature":{temp},"humidity":{humidity},"power":{power},"seq":{seq}}}"#,
                    now_ns()
                );
                if client.publish(topic, qos, false, payload).await.is_err() {
                    break;
                }
            }
            while done.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
            n
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "published {sent} messages (qos {}) in {secs:.2} s: {:.0} msg/s",
        qos as u8,
        sent as f64 / secs
    );
}

struct Stats {
    lines: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Publish-to-stored latency per line, microseconds.
    latencies_us: Vec<u64>,
    requests: u64,
    bytes: u64,
}

async fn sink(
    listen: u16,
    upstream: Option<String>,
    measurement: String,
    expect: u64,
    timeout: Duration,
) {
    let listener = TcpListener::bind(("127.0.0.1", listen))
        .await
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{listen}: {e}"));
    let stats = Arc::new(Mutex::new(Stats {
        lines: 0,
        first: None,
        last: None,
        latencies_us: Vec::with_capacity(expect as usize),
        requests: 0,
        bytes: 0,
    }));
    let counted = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let prefix: Arc<[u8]> = format!("{measurement},").into_bytes().into();
    let deadline = Instant::now() + timeout;
    loop {
        if counted.load(Ordering::Relaxed) >= expect || Instant::now() > deadline {
            break;
        }
        let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        let Ok(Ok((stream, _))) = accepted else {
            continue;
        };
        let stats = stats.clone();
        let counted = counted.clone();
        let client = client.clone();
        let upstream = upstream.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let _ = serve(stream, stats, counted, client, upstream, prefix).await;
        });
    }
    let s = stats.lock().await;
    let mut lat = s.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() - 1) as f64 * p).round() as usize;
        lat[i] as f64 / 1000.0
    };
    let span = match (s.first, s.last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    println!(
        "sink: {} lines of {measurement} in {} requests ({} bytes); first-to-last {span:.2} s: \
         {:.0} lines/s; publish-to-{} latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        s.lines,
        s.requests,
        s.bytes,
        if span > 0.0 {
            s.lines as f64 / span
        } else {
            0.0
        },
        if upstream.is_some() {
            "influxdb"
        } else {
            "sink"
        },
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
    );
}

async fn serve(
    stream: TcpStream,
    stats: Arc<Mutex<Stats>>,
    counted: Arc<AtomicU64>,
    client: reqwest::Client,
    upstream: Option<String>,
    prefix: Arc<[u8]>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(stream);
    loop {
        // Request head, byte by byte up to the blank line (heads are small).
        let mut head = Vec::with_capacity(512);
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if r.read(&mut b).await? == 0 {
                return Ok(());
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut len = 0usize;
        let mut gzip = false;
        let mut headers = Vec::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("content-encoding") && v.eq_ignore_ascii_case("gzip") {
                    gzip = true;
                }
                headers.push((k.to_string(), v.to_string()));
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (status, reply) = match &upstream {
            None => (204u16, Vec::new()),
            Some(base) => {
                let mut req = client.post(format!("{base}{path}")).body(body.clone());
                for (k, v) in &headers {
                    if k.eq_ignore_ascii_case("content-encoding")
                        || k.eq_ignore_ascii_case("content-type")
                        || k.eq_ignore_ascii_case("authorization")
                    {
                        req = req.header(k.as_str(), v.as_str());
                    }
                }
                match req.send().await {
                    Ok(resp) => {
                        let st = resp.status().as_u16();
                        (
                            st,
                            resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                        )
                    }
                    Err(_) => (503, b"upstream unreachable".to_vec()),
                }
            }
        };
        let stored = Instant::now();
        let stored_ns = now_ns();
        if (200..300).contains(&status) {
            let text = if gzip {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out)?;
                out
            } else {
                body
            };
            let mut n = 0u64;
            let mut lat = Vec::new();
            for line in text.split(|&c| c == b'\n') {
                if !line.starts_with(&prefix) {
                    continue;
                }
                n += 1;
                let ts = line
                    .rsplit(|&c| c == b' ')
                    .next()
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| t.parse::<i64>().ok());
                if let Some(ts) = ts {
                    lat.push(((stored_ns - ts).max(0) / 1000) as u64);
                }
            }
            let mut s = stats.lock().await;
            s.requests += 1;
            s.bytes += len as u64;
            if n > 0 {
                s.first.get_or_insert(stored);
                s.last = Some(stored);
                s.lines += n;
                s.latencies_us.extend(lat);
                counted.fetch_add(n, Ordering::Relaxed);
            }
        }
        let reason = if status == 204 { "No Content" } else { "X" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
            reply.len()
        );
        let w = r.get_mut();
        w.write_all(resp.as_bytes()).await?;
        w.write_all(&reply).await?;
    }
}
