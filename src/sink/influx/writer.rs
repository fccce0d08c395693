//! The batching, retrying HTTP writer.
//!
//! One writer and one batching/retry path serve every flavour; only the URL and the
//! authorization header differ (see [`InfluxApi`]). It is a thin layer over `reqwest` rather
//! than the `influxdb2` crate because that crate only POSTs `/api/v2/write`, so it cannot
//! write to InfluxDB 1.x (`/write`) nor InfluxDB 3 (`/api/v3/write_lp`), has no retries, and
//! is still on reqwest 0.11.
//!
//! # How server answers are handled
//!
//! Checked against influxd 1.6 and VictoriaMetrics:
//!
//! - 2xx: written.
//! - Transport errors, timeouts, 429, 5xx: retried forever with full-jitter exponential
//!   backoff (250 ms doubling, capped at `max_retry_delay`), or after `Retry-After` seconds
//!   when the server sends it. 401/403/404 (bad token, missing database/bucket) are retried the
//!   same way with an error log: they are fixed by an operator, and dropping a night of data
//!   because a token expired would be worse than holding it. influxd 1.x answers 500 for a
//!   missing retention policy, which lands here too.
//! - 413: the batch is split in halves that are sent in order; a single line still too large
//!   is dropped as rejected.
//! - Other 4xx whose body says `partial write` (influxd 1.x answers
//!   `400 {"error":"partial write: field type conflict: ... dropped=N"}`; for lines it could not
//!   parse it writes the rest and reports `unable to parse '...'` per line; InfluxDB 3 answers
//!   `partial write of line protocol occurred` with one entry per bad line): the good points
//!   are stored, so the batch is done; the bad lines are counted as rejected.
//! - Other 4xx (a 400 where nothing was written): the batch is bisected until the bad lines are
//!   isolated; only they are dropped (warn log with the server's message, counter
//!   `sitewatch_influx_dropped_total{reason="rejected"}`). Resending the good halves is
//!   harmless because the same series and timestamp overwrite rather than duplicate.
//!
//! VictoriaMetrics skips lines it cannot parse and answers 204, so nothing is rejected there.
//!
//! Acks of a batch are completed once all its lines are written or rejected. New batches are
//! accepted while a request is retried, up to `buffer_limit` samples (then the oldest series
//! samples are dropped, never events). On shutdown both channels are drained and the buffer is
//! flushed for at most `shutdown_timeout`.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng as _;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Batch, BatchReceiver};

use super::buffer::{Buffer, Flight, Source};
use super::config::{InfluxApi, InfluxConfig, InfluxError};
use super::line_protocol::EncodeOptions;

/// Longest server message kept for logs.
const MAX_LOGGED_BODY: usize = 512;
/// Upper bound for an honoured `Retry-After`, so a confused proxy cannot park the writer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// First backoff step; doubles per failed attempt up to `max_retry_delay`.
const BASE_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Buffer-full drops are summarised in one log line per this period.
const DROP_LOG_PERIOD: Duration = Duration::from_secs(10);

enum Auth {
    None,
    Basic { user: String, password: String },
    Header(HeaderValue),
}

/// Everything a request needs; shared by the in-flight delivery future.
struct Target {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    auth: Auth,
    gzip: bool,
    max_retry_delay: Duration,
}

/// Writes series and events to InfluxDB (v1, v2 or v3 API) or anything that speaks one.
pub struct InfluxWriter {
    target: Arc<Target>,
    batch_size: usize,
    flush_interval: Duration,
    buffer_limit: usize,
    shutdown_timeout: Duration,
    events_measurement: String,
    encode: EncodeOptions,
}

impl std::fmt::Debug for InfluxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxWriter")
            .field("endpoint", &self.target.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

fn config_err(key: &'static str, problem: String, fix: &'static str) -> InfluxError {
    InfluxError::Config { key, problem, fix }
}

impl InfluxWriter {
    /// Validates the config, resolves secrets and builds the HTTP client. Fails on a missing
    /// key, an unreadable secret or a bad URL, naming the key.
    pub fn new(cfg: &InfluxConfig) -> Result<InfluxWriter, InfluxError> {
        cfg.validate()?;
        let mut endpoint = reqwest::Url::parse(&cfg.url).map_err(|e| {
            config_err(
                "url",
                format!("{:?}: {e}", cfg.url),
                "write it like \"http://127.0.0.1:8086\"",
            )
        })?;
        let path: &[&str] = match cfg.api {
            InfluxApi::V1 => &["write"],
            InfluxApi::V2 => &["api", "v2", "write"],
            InfluxApi::V3 => &["api", "v3", "write_lp"],
        };
        endpoint
            .path_segments_mut()
            .map_err(|()| {
                config_err(
                    "url",
                    format!("{:?} cannot take a path", cfg.url),
                    "use http://host:port",
                )
            })?
            .pop_if_empty()
            .extend(path);
        {
            let mut q = endpoint.query_pairs_mut();
            let text = |v: &Option<String>| v.clone().unwrap_or_default();
            match cfg.api {
                InfluxApi::V1 => {
                    q.append_pair("db", &text(&cfg.database));
                    if let Some(rp) = &cfg.retention_policy {
                        q.append_pair("rp", rp);
                    }
                    q.append_pair("precision", "ns");
                }
                InfluxApi::V2 => {
                    q.append_pair("org", &text(&cfg.org));
                    q.append_pair("bucket", &text(&cfg.bucket));
                    q.append_pair("precision", "ns");
                }
                InfluxApi::V3 => {
                    q.append_pair("db", &text(&cfg.database));
                    q.append_pair("precision", "nanosecond");
                }
            }
        }
        let token = |scheme: &str| -> Result<Auth, InfluxError> {
            let Some(secret) = &cfg.token else {
                return Ok(Auth::None);
            };
            let token = secret.resolve().map_err(|source| InfluxError::Secret {
                key: "token",
                source,
            })?;
            let mut value = HeaderValue::from_str(&format!("{scheme} {token}")).map_err(|_| {
                config_err(
                    "token",
                    "contains characters not allowed in an HTTP header".into(),
                    "check the token file for stray bytes",
                )
            })?;
            value.set_sensitive(true);
            Ok(Auth::Header(value))
        };
        let auth = match cfg.api {
            InfluxApi::V1 => match (&cfg.username, &cfg.password) {
                (Some(user), Some(password)) => Auth::Basic {
                    user: user.clone(),
                    password: password.resolve().map_err(|source| InfluxError::Secret {
                        key: "password",
                        source,
                    })?,
                },
                _ => Auth::None,
            },
            InfluxApi::V2 => token("Token")?,
            InfluxApi::V3 => token("Bearer")?,
        };
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("sitewatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(InfluxError::Client)?;
        Ok(InfluxWriter {
            target: Arc::new(Target {
                client,
                endpoint,
                auth,
                gzip: cfg.gzip,
                max_retry_delay: cfg.max_retry_delay,
            }),
            batch_size: cfg.batch_size,
            flush_interval: cfg.flush_interval,
            buffer_limit: cfg.buffer_limit,
            shutdown_timeout: cfg.shutdown_timeout,
            events_measurement: cfg.events_measurement.clone(),
            encode: EncodeOptions {
                uint_as_int: cfg.api == InfluxApi::V1,
            },
        })
    }

    /// The write URL (no credentials in it), for startup logs and `sitewatch check`.
    pub fn endpoint(&self) -> &str {
        self.target.endpoint.as_str()
    }

    /// Writes until `shutdown` is cancelled or both channels are closed, then drains the
    /// channels and flushes the buffer for at most `shutdown_timeout`.
    pub async fn run(
        self,
        mut series_rx: BatchReceiver,
        mut events_rx: BatchReceiver,
        shutdown: CancellationToken,
    ) {
        let mut state = RunState {
            buffer: Buffer::new(
                self.batch_size,
                self.flush_interval,
                self.buffer_limit,
                &self.events_measurement,
                self.encode,
            ),
            flight: None,
            drops_since_log: 0,
            last_drop_log: None,
        };
        tracing::info!(endpoint = %self.target.endpoint, "influx writer started");
        let mut events_open = true;
        let mut series_open = true;
        loop {
            if state.flight.is_none() && state.buffer.should_flush(Instant::now()) {
                state.start_flight(&self.target);
            }
            metrics::gauge!("sitewatch_influx_buffer_samples").set(state.buffer.held() as f64);
            if !events_open && !series_open {
                break;
            }
            let due = state
                .buffer
                .flush_due()
                .filter(|_| state.flight.is_none())
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                done = poll_flight(state.flight.as_mut()) => {
                    state.flight = None;
                    state.finish_flight(done);
                }
                b = events_rx.recv(), if events_open => match b {
                    Some(b) => state.push(Source::Events, b),
                    None => events_open = false,
                },
                b = series_rx.recv(), if series_open => match b {
                    Some(b) => state.push(Source::Series, b),
                    None => series_open = false,
                },
                _ = sleep_until(due) => {}
            }
        }

        // Shutdown: take what is already queued upstream, then flush within the deadline.
        events_rx.close();
        series_rx.close();
        while let Some(b) = events_rx.recv().await {
            state.push(Source::Events, b);
        }
        while let Some(b) = series_rx.recv().await {
            state.push(Source::Series, b);
        }
        let held = state.buffer.held();
        tracing::info!(held, "influx writer flushing before shutdown");
        let flushed = tokio::time::timeout(self.shutdown_timeout, async {
            loop {
                if state.flight.is_none()
                    && !state
                        .buffer
                        .take_flight_into(&mut state.flight, &self.target)
                {
                    break;
                }
                let done = poll_flight(state.flight.as_mut()).await;
                state.flight = None;
                state.finish_flight(done);
            }
        })
        .await;
        let left = state.buffer.held();
        metrics::gauge!("sitewatch_influx_buffer_samples").set(left as f64);
        if flushed.is_err() && left > 0 {
            metrics::counter!("sitewatch_influx_dropped_total", "reason" => "shutdown")
                .increment(left as u64);
            tracing::error!(
                samples = left,
                timeout = ?self.shutdown_timeout,
                endpoint = %self.target.endpoint,
                "influx writer gave up flushing at shutdown; these samples are lost (MQTT QoS 1 \
                 sources were not acknowledged and will be redelivered)"
            );
        } else {
            tracing::info!("influx writer flushed and stopped");
        }
    }
}

type FlightFuture = Pin<Box<dyn Future<Output = (Flight, Delivery)> + Send>>;

struct RunState {
    buffer: Buffer,
    flight: Option<FlightFuture>,
    drops_since_log: usize,
    last_drop_log: Option<Instant>,
}

impl RunState {
    fn push(&mut self, source: Source, batch: Batch) {
        let out = self.buffer.push(source, batch, Instant::now());
        if out.unencodable > 0 {
            metrics::counter!("sitewatch_influx_dropped_total", "reason" => "no_fields")
                .increment(out.unencodable as u64);
        }
        if out.dropped_for_room > 0 {
            metrics::counter!("sitewatch_influx_dropped_total", "reason" => "buffer_full")
                .increment(out.dropped_for_room as u64);
            self.drops_since_log += out.dropped_for_room;
            let now = Instant::now();
            if self
                .last_drop_log
                .is_none_or(|t| now.duration_since(t) >= DROP_LOG_PERIOD)
            {
                tracing::warn!(
                    dropped = self.drops_since_log,
                    held = self.buffer.held(),
                    "influx buffer full (buffer_limit): dropped the oldest series samples; \
                     the server is down or too slow, or buffer_limit is too small"
                );
                self.drops_since_log = 0;
                self.last_drop_log = Some(now);
            }
        }
    }

    fn start_flight(&mut self, target: &Arc<Target>) {
        self.buffer.take_flight_into(&mut self.flight, target);
    }

    fn finish_flight(&mut self, (flight, delivery): (Flight, Delivery)) {
        metrics::counter!("sitewatch_influx_points_written_total")
            .increment(delivery.written as u64);
        if delivery.rejected > 0 {
            metrics::counter!("sitewatch_influx_dropped_total", "reason" => "rejected")
                .increment(delivery.rejected as u64);
        }
        self.buffer.resolve(&flight);
    }
}

impl Buffer {
    /// Takes a flight and starts delivering it; false when nothing is pending.
    fn take_flight_into(&mut self, slot: &mut Option<FlightFuture>, target: &Arc<Target>) -> bool {
        let Some(flight) = self.take_flight() else {
            return false;
        };
        *slot = Some(Box::pin(deliver(target.clone(), flight)));
        true
    }
}

async fn poll_flight(flight: Option<&mut FlightFuture>) -> (Flight, Delivery) {
    match flight {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How the lines of one flight ended up.
#[derive(Debug, Default, PartialEq, Eq)]
struct Delivery {
    written: usize,
    rejected: usize,
}

/// What to do after one HTTP answer.
#[derive(Debug, PartialEq)]
enum Verdict {
    Written,
    Retry {
        kind: &'static str,
        after: Option<Duration>,
        detail: String,
    },
    TooLarge,
    /// The server stored the good lines and dropped `dropped` bad ones.
    Partial {
        dropped: usize,
        detail: String,
    },
    /// Nothing was written; some line in the batch is bad.
    Rejected {
        detail: String,
    },
}

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_LOGGED_BODY {
        return s;
    }
    let mut end = MAX_LOGGED_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Number of bad lines a partial-write answer reports: influxd 1.x's `dropped=N` plus one per
/// `unable to parse` (its `dropped` does not count unparsable lines), or InfluxDB 3's
/// per-line entries.
fn partial_dropped(body: &str) -> usize {
    let dropped = body
        .rfind("dropped=")
        .map(|i| {
            body[i + "dropped=".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse::<usize>().ok())
        .unwrap_or(0);
    dropped + body.matches("unable to parse").count() + body.matches("\"line_number\"").count()
}

fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Verdict {
    let detail = || truncate(body.trim()).to_string();
    match status {
        200..=299 => Verdict::Written,
        413 => Verdict::TooLarge,
        429 => Verdict::Retry {
            kind: "throttled",
            after: retry_after,
            detail: detail(),
        },
        401 | 403 => Verdict::Retry {
            kind: "auth",
            after: retry_after,
            detail: detail(),
        },
        404 => Verdict::Retry {
            kind: "not_found",
            after: retry_after,
            detail: detail(),
        },
        400..=499 if body.contains("partial write") => Verdict::Partial {
            dropped: partial_dropped(body),
            detail: detail(),
        },
        400..=499 => Verdict::Rejected { detail: detail() },
        _ => Verdict::Retry {
            kind: "server",
            after: retry_after,
            detail: detail(),
        },
    }
}

fn parse_retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    // Only the delta-seconds form: servers in this space do not send HTTP dates.
    let secs: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Full jitter: uniform in [0, min(cap, 250 ms · 2^attempt)], with a 10 ms floor so a dead
/// server is not hammered in a tight loop.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    let exp = BASE_RETRY_DELAY.saturating_mul(1u32 << attempt.min(20));
    let ceiling = exp.min(cap).max(Duration::from_millis(10));
    let ms = rand::rng().random_range(10..=ceiling.as_millis().max(10) as u64);
    Duration::from_millis(ms)
}

fn gzip(data: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

impl Target {
    fn body(&self, lines: &[u8]) -> Bytes {
        if self.gzip {
            gzip(lines)
        } else {
            Bytes::copy_from_slice(lines)
        }
    }

    async fn post(&self, body: Bytes) -> Verdict {
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Header(v) => req.header(AUTHORIZATION, v.clone()),
        };
        let started = Instant::now();
        let result = req.send().await;
        let verdict = match result {
            Err(e) => Verdict::Retry {
                kind: if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                },
                after: None,
                detail: error_chain(&e),
            },
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = parse_retry_after(resp.headers().get(RETRY_AFTER));
                let body = resp.text().await.unwrap_or_default();
                classify(status, retry_after, &body)
            }
        };
        metrics::histogram!("sitewatch_influx_write_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        verdict
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Delivers every line of `flight`, retrying until each is written or rejected. Only ends
/// early if the future is dropped (shutdown deadline).
async fn deliver(target: Arc<Target>, flight: Flight) -> (Flight, Delivery) {
    let mut delivery = Delivery::default();
    let mut todo: VecDeque<Range<usize>> = VecDeque::new();
    todo.push_back(0..flight.lines());
    let mut attempt: u32 = 0;
    while let Some(range) = todo.pop_front() {
        let lines = &flight.body[flight.byte_range(range.clone())];
        let body = target.body(lines);
        loop {
            let verdict = target.post(body.clone()).await;
            let n = range.len();
            match verdict {
                Verdict::Written => {
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, endpoint = %target.endpoint, "influx write succeeded after retries");
                    }
                    attempt = 0;
                    delivery.written += n;
                }
                Verdict::Retry {
                    kind,
                    after,
                    detail,
                } => {
                    metrics::counter!("sitewatch_influx_write_errors_total", "kind" => kind)
                        .increment(1);
                    metrics::counter!("sitewatch_influx_retries_total").increment(1);
                    let delay = after.unwrap_or_else(|| backoff(attempt, target.max_retry_delay));
                    let hint = match kind {
                        "auth" => "check username/password or token",
                        "not_found" => {
                            "check that the database/bucket exists (influx: CREATE DATABASE ...)"
                        }
                        _ => "holding the data and retrying",
                    };
                    if matches!(kind, "auth" | "not_found") {
                        tracing::error!(endpoint = %target.endpoint, kind, attempt, ?delay, server = %detail, "influx write failed; {hint}");
                    } else {
                        tracing::warn!(endpoint = %target.endpoint, kind, attempt, ?delay, lines = n, error = %detail, "influx write failed; {hint}");
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Verdict::TooLarge => {
                    metrics::counter!("sitewatch_influx_write_errors_total", "kind" => "too_large")
                        .increment(1);
                    attempt = 0;
                    if n > 1 {
                        split(&mut todo, range);
                    } else {
                        delivery.rejected += 1;
                        tracing::warn!(endpoint = %target.endpoint, bytes = lines.len(), line = %String::from_utf8_lossy(truncate_bytes(lines)), "influx rejected a single line as too large (413); dropped");
                    }
                }
                Verdict::Partial { dropped, detail } => {
                    metrics::counter!("sitewatch_influx_write_errors_total", "kind" => "partial")
                        .increment(1);
                    attempt = 0;
                    let dropped = dropped.min(n);
                    delivery.written += n - dropped;
                    delivery.rejected += dropped;
                    tracing::warn!(endpoint = %target.endpoint, lines = n, dropped, server = %detail, "influx partial write: the good points were stored, the bad ones dropped");
                }
                Verdict::Rejected { detail } => {
                    metrics::counter!("sitewatch_influx_write_errors_total", "kind" => "rejected")
                        .increment(1);
                    attempt = 0;
                    if n > 1 {
                        split(&mut todo, range);
                    } else {
                        delivery.rejected += 1;
                        tracing::warn!(endpoint = %target.endpoint, line = %String::from_utf8_lossy(truncate_bytes(lines)).trim_end(), server = %detail, "influx rejected a line; dropped");
                    }
                }
            }
            break;
        }
    }
    (flight, delivery)
}

fn truncate_bytes(b: &[u8]) -> &[u8] {
    &b[..b.len().min(MAX_LOGGED_BODY)]
}

/// Queues both halves of `range` at the front, first half first, keeping line order.
fn split(todo: &mut VecDeque<Range<usize>>, range: Range<usize>) {
    let mid = range.start + range.len() / 2;
    todo.push_front(mid..range.end);
    todo.push_front(range.start..mid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_influxd_1x_answers() {
        // Bodies as returned by influxd 1.6.
        let conflict = r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"m\" is type string, already exists as type float dropped=1"}"#;
        assert_eq!(
            classify(400, None, conflict),
            Verdict::Partial {
                dropped: 1,
                detail: conflict.into()
            }
        );
        let parse =
            r#"{"error":"partial write: unable to parse 'm v= 7': missing field value dropped=0"}"#;
        assert!(matches!(
            classify(400, None, parse),
            Verdict::Partial { dropped: 1, .. }
        ));
        let all_bad = r#"{"error":"unable to parse 'm v= 7': missing field value"}"#;
        assert!(matches!(
            classify(400, None, all_bad),
            Verdict::Rejected { .. }
        ));
        assert!(matches!(
            classify(404, None, r#"{"error":"database not found: \"nope\""}"#),
            Verdict::Retry {
                kind: "not_found",
                ..
            }
        ));
        assert!(matches!(
            classify(500, None, r#"{"error":"retention policy not found: nope"}"#),
            Verdict::Retry { kind: "server", .. }
        ));
        assert_eq!(classify(413, None, ""), Verdict::TooLarge);
        assert_eq!(classify(204, None, ""), Verdict::Written);
    }

    #[test]
    fn classifies_v3_partial_and_throttling() {
        let v3 = r#"{"error":"partial write of line protocol occurred","data":[{"original_line":"m v=\"x\" 1","line_number":2,"error_message":"conflict"},{"original_line":"m v= 2","line_number":4,"error_message":"parse"}]}"#;
        assert!(matches!(
            classify(400, None, v3),
            Verdict::Partial { dropped: 2, .. }
        ));
        assert_eq!(
            classify(429, Some(Duration::from_secs(3)), "slow down"),
            Verdict::Retry {
                kind: "throttled",
                after: Some(Duration::from_secs(3)),
                detail: "slow down".into()
            }
        );
        assert!(matches!(
            classify(503, None, ""),
            Verdict::Retry { kind: "server", .. }
        ));
        assert!(matches!(
            classify(401, None, ""),
            Verdict::Retry { kind: "auth", .. }
        ));
    }

    #[test]
    fn retry_after_seconds_only_and_bounded() {
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("7"))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static("86400"))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after(Some(&HeaderValue::from_static(
                "Wed, 21 Oct 2015 07:28:00 GMT"
            ))),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn backoff_is_jittered_doubling_and_capped() {
        let cap = Duration::from_secs(30);
        for attempt in 0..40 {
            let ceiling = BASE_RETRY_DELAY
                .saturating_mul(1u32 << attempt.min(20))
                .min(cap);
            for _ in 0..20 {
                let d = backoff(attempt, cap);
                assert!(
                    d <= ceiling.max(Duration::from_millis(10)),
                    "{attempt}: {d:?}"
                );
                assert!(d >= Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn split_keeps_order() {
        let mut todo = VecDeque::new();
        todo.push_back(10..12);
        split(&mut todo, 0..5);
        assert_eq!(todo, VecDeque::from([0..2, 2..5, 10..12]));
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let data = b"m v=1 1\n".repeat(100);
        let z = gzip(&data);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    fn cfg(toml_text: &str) -> InfluxConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn endpoints_per_flavour() {
        let w = InfluxWriter::new(&cfg(
            "url = \"http://127.0.0.1:8086\"\ndatabase = \"s w\"\nretention_policy = \"rp\"",
        ))
        .unwrap();
        assert_eq!(
            w.endpoint(),
            "http://127.0.0.1:8086/write?db=s+w&rp=rp&precision=ns"
        );
        let w = InfluxWriter::new(&cfg(
            "url = \"http://h:1/proxy/\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"",
        ))
        .unwrap();
        assert_eq!(
            w.endpoint(),
            "http://h:1/proxy/api/v2/write?org=o&bucket=b&precision=ns"
        );
        let w = InfluxWriter::new(&cfg(
            "url = \"https://h\"\napi = \"v3\"\ndatabase = \"d\"\ntoken = \"t\"",
        ))
        .unwrap();
        assert_eq!(
            w.endpoint(),
            "https://h/api/v3/write_lp?db=d&precision=nanosecond"
        );
        assert!(!format!("{w:?}").contains("Bearer"));
    }

    #[test]
    fn unresolvable_secret_names_the_key() {
        let e = InfluxWriter::new(&cfg(
            "url = \"http://h\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = { env = \"SITEWATCH_TEST_NO_SUCH_VAR\" }",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("token") && e.contains("SITEWATCH_TEST_NO_SUCH_VAR"),
            "{e}"
        );
    }

    /// A scripted in-process HTTP server standing in for behaviours a real server cannot be
    /// made to show on demand (413, 429 with Retry-After, 503, a 400 that is not a partial
    /// write). It records each request's decoded lines and headers, and stores the lines of
    /// every request it answers with 204, like a database would.
    mod scripted {
        use super::super::*;
        use crate::model::{FieldValue, Sample, SeriesKey, TagSet};
        use crate::pipeline::Ack;
        use axum::http::{HeaderMap, StatusCode};
        use std::io::Read as _;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;

        type Script =
            dyn Fn(usize, &[String]) -> (u16, Option<&'static str>, &'static str) + Send + Sync;

        #[derive(Default)]
        struct Seen {
            requests: Vec<(HeaderMap, Vec<String>)>,
            stored: Vec<String>,
        }

        struct Server {
            seen: Arc<Mutex<Seen>>,
            url: String,
        }

        async fn serve(script: Box<Script>) -> Server {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let script: Arc<Script> = Arc::from(script);
            let state = (seen.clone(), script);
            let handler = |axum::extract::State((seen, script)): axum::extract::State<(
                Arc<Mutex<Seen>>,
                Arc<Script>,
            )>,
                           headers: HeaderMap,
                           body: axum::body::Bytes| async move {
                let mut text = String::new();
                if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_string(&mut text)
                        .unwrap();
                } else {
                    text = String::from_utf8(body.to_vec()).unwrap();
                }
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                let mut seen = seen.lock().unwrap();
                let n = seen.requests.len();
                let (status, retry_after, msg) = script(n, &lines);
                seen.requests.push((headers, lines.clone()));
                if status == 204 {
                    seen.stored.extend(lines);
                }
                let mut resp_headers = HeaderMap::new();
                if let Some(ra) = retry_after {
                    resp_headers.insert("retry-after", ra.parse().unwrap());
                }
                (StatusCode::from_u16(status).unwrap(), resp_headers, msg)
            };
            let app = axum::Router::new()
                .route("/write", axum::routing::post(handler))
                .route("/api/v2/write", axum::routing::post(handler))
                .route("/api/v3/write_lp", axum::routing::post(handler))
                .with_state(state);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Server { seen, url }
        }

        fn batch(range: std::ops::Range<i64>, acks: &Arc<AtomicUsize>) -> Batch {
            let acks = acks.clone();
            Batch::new(
                range
                    .map(|i| {
                        let v = if i == 5 {
                            FieldValue::Str("bad".into())
                        } else {
                            FieldValue::Int(i)
                        };
                        Sample::new(SeriesKey::new("m", TagSet::empty()), i).with_field("v", v)
                    })
                    .collect(),
            )
            .with_ack(Ack::new(move || {
                acks.fetch_add(1, Ordering::SeqCst);
            }))
        }

        /// Runs a writer over `batches` and shuts it down; returns what the server saw.
        async fn run_writer(extra: &str, server: &Server, batches: Vec<Batch>) -> Arc<Mutex<Seen>> {
            let cfg: InfluxConfig = toml::from_str(&format!(
                "url = \"{}\"\nflush_interval = \"20ms\"\nmax_retry_delay = \"50ms\"\n{extra}",
                server.url
            ))
            .unwrap();
            let writer = InfluxWriter::new(&cfg).unwrap();
            let (series_tx, series_rx) = tokio::sync::mpsc::channel(8);
            let (_events_tx, events_rx) = tokio::sync::mpsc::channel(8);
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(writer.run(series_rx, events_rx, shutdown.clone()));
            for b in batches {
                series_tx.send(b).await.unwrap();
            }
            drop(series_tx);
            drop(_events_tx);
            // Both channels closed: the writer flushes and returns on its own.
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .unwrap()
                .unwrap();
            server.seen.clone()
        }

        fn expected(range: std::ops::Range<i64>) -> Vec<String> {
            range
                .filter(|&i| i != 5)
                .map(|i| format!("m v={i}i {i}"))
                .collect()
        }

        #[tokio::test]
        async fn bisects_a_rejected_batch_down_to_the_bad_line() {
            let server = serve(Box::new(|_, lines: &[String]| {
                if lines.iter().any(|l| l.contains("bad")) {
                    (400, None, r#"{"error":"invalid field value"}"#)
                } else {
                    (204, None, "")
                }
            }))
            .await;
            let acks = Arc::new(AtomicUsize::new(0));
            let seen = run_writer("database = \"d\"", &server, vec![batch(0..9, &acks)]).await;
            let seen = seen.lock().unwrap();
            assert_eq!(
                seen.stored,
                expected(0..9),
                "good lines stored once, in order"
            );
            // 9 lines, one bad: 1 + 2·⌈log2 9⌉ requests at most.
            assert!(seen.requests.len() <= 9, "{}", seen.requests.len());
            assert_eq!(
                acks.load(Ordering::SeqCst),
                1,
                "deliberately dropped lines still ack"
            );
        }

        #[tokio::test]
        async fn splits_on_413_until_batches_fit() {
            let server = serve(Box::new(|_, lines: &[String]| {
                if lines.len() > 3 {
                    (413, None, "Request Entity Too Large")
                } else {
                    (204, None, "")
                }
            }))
            .await;
            let acks = Arc::new(AtomicUsize::new(0));
            let seen = run_writer(
                "database = \"d\"",
                &server,
                vec![batch(0..5, &acks), batch(6..14, &acks)],
            )
            .await;
            let seen = seen.lock().unwrap();
            assert_eq!(seen.stored, expected(0..14));
            assert_eq!(acks.load(Ordering::SeqCst), 2);
        }

        #[tokio::test]
        async fn retries_429_after_retry_after_and_5xx_with_backoff() {
            let server = serve(Box::new(|n, _: &[String]| match n {
                0 => (429, Some("1"), "slow down"),
                1 => (503, None, "overloaded"),
                _ => (204, None, ""),
            }))
            .await;
            let acks = Arc::new(AtomicUsize::new(0));
            let started = std::time::Instant::now();
            let seen = run_writer("database = \"d\"", &server, vec![batch(0..3, &acks)]).await;
            assert!(
                started.elapsed() >= Duration::from_secs(1),
                "Retry-After honoured"
            );
            let seen = seen.lock().unwrap();
            assert_eq!(seen.requests.len(), 3);
            assert_eq!(seen.stored, expected(0..3));
            assert_eq!(acks.load(Ordering::SeqCst), 1);
        }

        #[tokio::test]
        async fn shutdown_gives_up_after_its_deadline_without_acking() {
            let server = serve(Box::new(|_, _: &[String]| (503, None, "down"))).await;
            let cfg: InfluxConfig = toml::from_str(&format!(
                "url = \"{}\"\ndatabase = \"d\"\nflush_interval = \"10ms\"\nmax_retry_delay = \"50ms\"\nshutdown_timeout = \"300ms\"",
                server.url
            ))
            .unwrap();
            let writer = InfluxWriter::new(&cfg).unwrap();
            let (series_tx, series_rx) = tokio::sync::mpsc::channel(8);
            let (_events_tx, events_rx) = tokio::sync::mpsc::channel(8);
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(writer.run(series_rx, events_rx, shutdown.clone()));
            let acks = Arc::new(AtomicUsize::new(0));
            series_tx.send(batch(0..3, &acks)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let stopping = std::time::Instant::now();
            shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("writer returns after shutdown_timeout")
                .unwrap();
            assert!(stopping.elapsed() >= Duration::from_millis(250));
            assert_eq!(
                acks.load(Ordering::SeqCst),
                0,
                "unwritten data is not acked"
            );
            assert!(
                server.seen.lock().unwrap().requests.len() >= 2,
                "it kept retrying"
            );
        }

        #[tokio::test]
        async fn sends_gzip_and_the_right_authorization_per_flavour() {
            let ok = || -> Box<Script> { Box::new(|_, _: &[String]| (204, None, "")) };
            let acks = Arc::new(AtomicUsize::new(0));
            for (extra, auth) in [
                (
                    "database = \"d\"\nusername = \"u\"\npassword = \"p\"",
                    "Basic dTpw",
                ),
                (
                    "api = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"tok\"",
                    "Token tok",
                ),
                (
                    "api = \"v3\"\ndatabase = \"d\"\ntoken = \"tok\"",
                    "Bearer tok",
                ),
            ] {
                let server = serve(ok()).await;
                let seen = run_writer(extra, &server, vec![batch(0..2, &acks)]).await;
                let seen = seen.lock().unwrap();
                let (headers, lines) = &seen.requests[0];
                assert_eq!(headers.get("authorization").unwrap(), auth);
                assert_eq!(headers.get("content-encoding").unwrap(), "gzip");
                assert_eq!(lines, &expected(0..2));
            }
            // Without gzip the body goes as is.
            let server = serve(ok()).await;
            let seen = run_writer(
                "database = \"d\"\ngzip = false",
                &server,
                vec![batch(0..2, &acks)],
            )
            .await;
            let seen = seen.lock().unwrap();
            assert!(seen.requests[0].0.get("content-encoding").is_none());
            assert!(seen.requests[0].0.get("authorization").is_none());
            assert_eq!(seen.stored, expected(0..2));
        }
    }
}
