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
//!   missing retention policy, which lands here too. A certificate the `[influx.tls]` trust
//!   does not accept (`kind="tls"`) is the same: an error log naming the key that fixes it.
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
//! Acks of a batch are completed once all its lines are written or rejected, or once they are
//! in the spool and synced. While the server answers, a full buffer (`buffer_limit`) stops the
//! writer from taking series batches: backpressure, nothing dropped. While a request is
//! retried, new batches go to the spool (`spool_dir`); without one they are buffered in
//! memory and, beyond `buffer_limit`, the oldest series samples are dropped (never events).
//! Once the server answers again the spool is replayed, events first, while new data keeps
//! going to the spool behind it so order is kept. On shutdown both channels are drained and
//! everything is flushed for at most `shutdown_timeout` (at once to the spool if the server
//! is failing); what is still in memory then moves to the spool.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ack::Ack;
use crate::blocking::on_blocking_thread;
use crate::pipeline::{Batch, BatchReceiver};
use crate::retry::{self, Backoff};
use crate::select::{or_pending, sleep_until};

use super::client::{self, Class, InfluxClient, Purpose};
use super::config::{redacted_url, InfluxApi, InfluxConfig, InfluxError};
use super::line_protocol::EncodeOptions;
use super::line_protocol::LineEncoder;
use crate::buffer::{count_lines, Buffer, Flight, Lane, SpoolOwner};
use crate::buffer::{Cursor, FsyncPolicy, Spool};

/// The InfluxDB sink's spool: `[influx] spool_dir`, `sitewatch_influx_spool_*`, one record
/// per line.
const SPOOL_OWNER: SpoolOwner = SpoolOwner {
    sink: "influx",
    count_records: count_lines,
};

/// Longest server message kept for logs.
const MAX_LOGGED_BODY: usize = 512;
/// Upper bound for an honoured `Retry-After`, so a confused proxy cannot park the writer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// First backoff step; doubles per failed attempt up to `max_retry_delay`.
const BASE_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Buffer-full drops are summarised in one log line per this period.
const DROP_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Everything a request needs; shared by the in-flight delivery future.
struct Target {
    client: InfluxClient,
    /// The endpoint as logs and `check` show it: a password in the URL is `***`.
    shown: String,
    gzip: bool,
    max_retry_delay: Duration,
    /// True while a request is being retried (the server fails), false once it answers.
    failing: watch::Sender<bool>,
    /// The last failure while failing, for /ready.
    last_error: std::sync::Mutex<Option<String>>,
}

impl Target {
    /// True when this changes the state (the first failure, or the first success after).
    fn set_failing(&self, failing: bool) -> bool {
        self.failing.send_if_modified(|f| {
            let changed = *f != failing;
            *f = failing;
            changed
        })
    }
}

/// Writes series and events to InfluxDB (v1, v2 or v3 API) or anything that speaks one.
pub struct InfluxWriter {
    target: Arc<Target>,
    batch_size: usize,
    flush_interval: Duration,
    buffer_limit: usize,
    buffer_max_bytes: usize,
    spill_after: Duration,
    shutdown_timeout: Duration,
    events_measurement: String,
    encode: EncodeOptions,
    spool_dir: Option<PathBuf>,
    spool_max_bytes: u64,
    fsync: FsyncPolicy,
    spool: Option<Spool>,
}

impl std::fmt::Debug for InfluxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxWriter")
            .field("endpoint", &self.target.shown)
            .finish_non_exhaustive()
    }
}

impl InfluxWriter {
    /// Validates the config, resolves secrets and builds the HTTP client. Fails on a missing
    /// key, an unreadable secret or a bad URL, naming the key.
    pub fn new(cfg: &InfluxConfig) -> Result<InfluxWriter, InfluxError> {
        let client = InfluxClient::new(cfg, Purpose::Write)?;
        Ok(InfluxWriter {
            target: Arc::new(Target {
                shown: redacted_url(client.endpoint()),
                client,
                gzip: cfg.gzip,
                max_retry_delay: cfg.max_retry_delay,
                failing: watch::Sender::new(false),
                last_error: std::sync::Mutex::new(None),
            }),
            batch_size: cfg.batch_size,
            flush_interval: cfg.flush_interval,
            buffer_limit: cfg.buffer_limit,
            buffer_max_bytes: cfg.buffer_max_bytes,
            spill_after: cfg.spill_after(),
            shutdown_timeout: cfg.shutdown_timeout,
            events_measurement: cfg.events_measurement.clone(),
            encode: EncodeOptions {
                uint_as_int: cfg.api == InfluxApi::V1,
            },
            spool_dir: cfg.spool_dir.clone(),
            spool_max_bytes: cfg.spool_max_bytes,
            fsync: cfg.fsync,
            spool: None,
        })
    }

    /// The write URL with any password in it shown as `***`, for logs and `sitewatch check`.
    pub fn endpoint(&self) -> &str {
        &self.target.shown
    }

    /// Opens the on-disk spool when `spool_dir` is set (a relative `spool_dir` is taken
    /// relative to `base_dir`: [`crate::config::LoadedConfig::state_dir`]), replaying nothing yet. Call it
    /// before [`InfluxWriter::run`] so a bad or busy directory stops start-up with an error;
    /// `run` otherwise opens it itself and, failing that, runs memory-only with an error log.
    pub fn open_spool(mut self, base_dir: &Path) -> Result<InfluxWriter, InfluxError> {
        if let Some(dir) = &self.spool_dir {
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                base_dir.join(dir)
            };
            self.spool = Some(Spool::open(
                &dir,
                self.spool_max_bytes,
                self.fsync,
                SPOOL_OWNER,
            )?);
            self.spool_dir = Some(dir);
        }
        Ok(self)
    }

    /// Writes until `shutdown` is cancelled or both channels are closed, then drains the
    /// channels and flushes for at most `shutdown_timeout`; with a spool, what is left goes
    /// to the spool.
    pub async fn run(
        mut self,
        mut series_rx: BatchReceiver,
        mut events_rx: BatchReceiver,
        shutdown: CancellationToken,
    ) {
        let spool = match (self.spool.take(), &self.spool_dir) {
            (Some(s), _) => Some(s),
            (None, Some(dir)) => {
                match Spool::open(dir, self.spool_max_bytes, self.fsync, SPOOL_OWNER) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(error = %e, "influx spool unavailable; buffering in memory only");
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let mut state = RunState {
            target: self.target.clone(),
            buffer: Buffer::new(
                self.batch_size,
                self.flush_interval,
                self.buffer_limit,
                Box::new(LineEncoder::new(&self.events_measurement, self.encode)),
            ),
            spool,
            batch_size: self.batch_size,
            max_bytes: self.buffer_max_bytes,
            flush_interval: self.flush_interval,
            spill_after: self.spill_after,
            current: None,
            resend: VecDeque::new(),
            next_spill_attempt: None,
            down_since: None,
            status_published: None,
            last_error: None,
            unsynced: Vec::new(),
            drops_since_log: 0,
            last_drop_log: None,
            last_spool_error_log: None,
        };
        let mut failing_rx = self.target.failing.subscribe();
        tracing::info!(
            endpoint = %self.target.shown,
            spool = ?self.spool_dir,
            "influx writer started"
        );
        state.init_metrics(self.buffer_limit, self.spool_max_bytes);
        let mut events_open = true;
        let mut series_open = true;
        loop {
            let now = Instant::now();
            if state.spill_due().is_some_and(|due| due <= now) {
                state.spill_stalled(now);
            }
            state.start_flight(now, false);
            state.update_gauges();
            state.report_status(now);
            if !events_open && !series_open {
                break;
            }
            let flush_due = state.buffer.flush_due().filter(|_| state.current.is_none());
            // Wake for the next flush, the spill deadline, and once a second while a request
            // runs, so /ready sees a hung server without waiting for its answer.
            let due = [
                flush_due,
                state.spill_due(),
                state.current.as_ref().map(|_| now + Duration::from_secs(1)),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
            // Backpressure: while the server keeps up (or merely lags), a full buffer stops
            // the writer from taking series; the rules stage and collectors wait.
            let take_series = series_open && state.accepts_series();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                delivery = or_pending(state.current.as_mut().map(|c| &mut c.future)) => {
                    state.finish_flight(delivery);
                }
                b = events_rx.recv(), if events_open => match b {
                    Some(b) => {
                        state.push(Lane::Events, b);
                        state.take_waiting(&mut events_rx, &mut series_rx);
                    }
                    None => events_open = false,
                },
                b = series_rx.recv(), if take_series => match b {
                    Some(b) => {
                        state.push(Lane::Series, b);
                        state.take_waiting(&mut events_rx, &mut series_rx);
                    }
                    None => series_open = false,
                },
                // A request started failing or recovered: re-decide where data goes.
                _ = failing_rx.changed() => {
                    failing_rx.borrow_and_update();
                }
                _ = sleep_until(due) => {}
            }
            state.flush_acks();
        }

        // Shutdown: take what is already queued upstream, then flush within the deadline.
        events_rx.close();
        series_rx.close();
        while let Some(b) = events_rx.recv().await {
            state.push(Lane::Events, b);
        }
        while let Some(b) = series_rx.recv().await {
            state.push(Lane::Series, b);
        }
        state.flush_acks();
        let held = state.buffer.held();
        let spooled = state.spool.as_ref().map_or(0, Spool::unread_lines);
        tracing::info!(held, spooled, "influx writer flushing before shutdown");
        // With a spool, a failing server is not worth the wait: the spool keeps the data.
        let skip_flush = state.spool.is_some() && state.is_failing();
        let flushed = if skip_flush {
            Err(())
        } else {
            tokio::time::timeout(self.shutdown_timeout, async {
                loop {
                    if state.current.is_none() && !state.start_flight(Instant::now(), true) {
                        break;
                    }
                    let delivery = or_pending(state.current.as_mut().map(|c| &mut c.future)).await;
                    state.finish_flight(delivery);
                }
            })
            .await
            .map_err(|_| ())
        };
        if flushed.is_err() {
            state.spill_memory();
        }
        state.report_status(Instant::now());
        state.release_spool_flight();
        state.update_gauges();
        let left = state.buffer.held();
        let spooled = state.spool.as_ref().map_or(0, Spool::unread_lines);
        if left > 0 {
            metrics::counter!("sitewatch_influx_dropped_total", "reason" => "shutdown")
                .increment(left as u64);
            tracing::error!(
                samples = left,
                timeout = ?self.shutdown_timeout,
                endpoint = %self.target.shown,
                "influx writer gave up flushing at shutdown; these samples are lost (MQTT QoS 1 \
                 sources were not acknowledged and will be redelivered)"
            );
        } else if spooled > 0 {
            tracing::info!(
                spooled,
                "influx writer stopped; spooled samples are replayed at the next start"
            );
        } else {
            tracing::info!("influx writer flushed and stopped");
        }
    }
}

type FlightFuture = Pin<Box<dyn Future<Output = Delivery> + Send>>;

/// Where the lines of a request came from, to resolve them once it is done.
enum Origin {
    Memory,
    Spool(Lane, Cursor),
}

struct InFlight {
    future: FlightFuture,
    flight: Arc<Flight>,
    origin: Origin,
    started: Instant,
}

/// Batches taken from the channels in one go after a receive, so their spool appends share
/// one fsync.
const SPOOL_GROUP: usize = 256;
/// The status board (/ready) is refreshed at least this often while nothing changes.
const STATUS_PERIOD: Duration = Duration::from_millis(500);
/// Spool write errors are logged at most once per this period.
const SPOOL_ERROR_LOG_PERIOD: Duration = Duration::from_secs(10);

struct RunState {
    target: Arc<Target>,
    buffer: Buffer,
    spool: Option<Spool>,
    batch_size: usize,
    max_bytes: usize,
    flush_interval: Duration,
    spill_after: Duration,
    current: Option<InFlight>,
    /// Memory flights taken from the buffer that could not be spooled: sent before anything
    /// newer, so no line is left behind.
    resend: VecDeque<Arc<Flight>>,
    /// After a failed spill, when to try again (a failing disk must not spin the loop).
    next_spill_attempt: Option<Instant>,
    /// Since when nothing has been written: the server fails, or a request hangs.
    down_since: Option<Instant>,
    /// When and in which state the status board last heard from this writer.
    status_published: Option<(Instant, crate::status::SinkState)>,
    last_error: Option<String>,
    /// Acks of batches appended to the spool, completed once the spool is synced.
    unsynced: Vec<Ack>,
    drops_since_log: usize,
    last_drop_log: Option<Instant>,
    last_spool_error_log: Option<Instant>,
}

impl RunState {
    fn is_failing(&self) -> bool {
        *self.target.failing.borrow()
    }

    /// New data goes to the spool while the server fails, and after that until the spool
    /// is replayed, so nothing overtakes older spooled data.
    fn spooling(&self) -> bool {
        self.spool
            .as_ref()
            .is_some_and(|s| self.is_failing() || !s.is_empty())
    }

    fn accepts_series(&self) -> bool {
        (self.buffer.held() < self.buffer.limit() && self.buffer.bytes() < self.max_bytes)
            || self.is_failing()
            || self.spooling()
    }

    /// When memory must move to the spool: the oldest unwritten sample has waited
    /// `spill_after` beyond its `flush_interval` (the server hangs or is too slow). None
    /// without a spool.
    fn spill_due(&self) -> Option<Instant> {
        self.spool.as_ref()?;
        let due = self.buffer.oldest_unresolved()? + self.flush_interval + self.spill_after;
        Some(match self.next_spill_attempt {
            Some(retry) => due.max(retry),
            None => due,
        })
    }

    /// The server has kept data too long: move memory to the spool and acknowledge it, so
    /// sources (an MQTT broker's in-flight window) keep moving.
    fn spill_stalled(&mut self, now: Instant) {
        let held = self.buffer.held();
        let moved = self.spill_memory();
        self.down_since.get_or_insert(now);
        if moved > 0 {
            metrics::counter!("sitewatch_influx_spilled_samples_total").increment(moved as u64);
            tracing::warn!(
                samples = moved,
                after = ?self.spill_after,
                endpoint = %self.target.shown,
                "influx server slow or hung: moved samples waiting in memory to the spool and \
                 acknowledged them; they are written from the spool once it answers"
            );
        }
        self.next_spill_attempt = (moved < held).then(|| now + self.spill_after);
    }

    /// Publishes the writer's state for /health and /ready.
    fn report_status(&mut self, now: Instant) {
        if let Some(c) = &self.current {
            if now.duration_since(c.started) >= self.spill_after {
                // A request that long without an answer: the server hangs.
                self.down_since.get_or_insert(c.started + self.spill_after);
                self.last_error.get_or_insert_with(|| {
                    format!("no answer for {:?}", now.duration_since(c.started))
                });
            }
        }
        if self.is_failing() {
            self.down_since.get_or_insert(now);
        }
        let state = match (self.down_since, &self.spool) {
            (None, _) => crate::status::SinkState::Writing,
            (Some(_), Some(_)) => crate::status::SinkState::Spooling,
            (Some(_), None) => crate::status::SinkState::Failing,
        };
        // Called once per loop turn (per received batch): publish on a change of state and
        // otherwise at most every STATUS_PERIOD, so the hot path neither locks nor allocates.
        if self
            .status_published
            .is_some_and(|(at, s)| s == state && now.duration_since(at) < STATUS_PERIOD)
        {
            return;
        }
        self.status_published = Some((now, state));
        if self.is_failing() {
            if let Some(e) = self
                .target
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                self.last_error = Some(e);
            }
        }
        crate::status::set_sink(crate::status::SinkStatus {
            name: "influx",
            state,
            down_since: self.down_since,
            oldest_unwritten: self
                .buffer
                .oldest_unresolved()
                .map(|t| now.duration_since(t)),
            spooled_samples: self.spool.as_ref().map_or(0, |s| s.unread_lines() as u64),
            last_error: self.last_error.clone(),
        });
    }

    /// The limits, and every counter at 0 for each label value the writer can emit, so a
    /// dashboard's rate() and an alert on an increase work before the first error.
    fn init_metrics(&self, buffer_limit: usize, spool_max_bytes: u64) {
        metrics::gauge!("sitewatch_influx_buffer_limit_samples").set(buffer_limit as f64);
        metrics::gauge!("sitewatch_influx_buffer_limit_bytes").set(self.max_bytes as f64);
        let spool_limit = if self.spool.is_some() {
            spool_max_bytes as f64
        } else {
            0.0
        };
        metrics::gauge!("sitewatch_influx_spool_limit_bytes").set(spool_limit);
        metrics::counter!("sitewatch_influx_points_written_total").increment(0);
        metrics::counter!("sitewatch_influx_retries_total").increment(0);
        metrics::counter!("sitewatch_influx_spilled_samples_total").increment(0);
        metrics::counter!("sitewatch_influx_spooled_samples_total").increment(0);
        metrics::counter!("sitewatch_influx_spool_replayed_samples_total").increment(0);
        for kind in [
            "timeout",
            "transport",
            "server",
            "throttled",
            "auth",
            "not_found",
            "too_large",
            "partial",
            "rejected",
        ] {
            metrics::counter!("sitewatch_influx_write_errors_total", "kind" => kind).increment(0);
        }
        for reason in [
            "buffer_full",
            "rejected",
            "no_fields",
            "shutdown",
            "spool_full",
            "spool_corrupt",
        ] {
            metrics::counter!("sitewatch_influx_dropped_total", "reason" => reason).increment(0);
        }
    }

    fn update_gauges(&self) {
        metrics::gauge!("sitewatch_influx_buffer_samples").set(self.buffer.held() as f64);
        metrics::gauge!("sitewatch_influx_buffer_bytes").set(self.buffer.bytes() as f64);
        if let Some(s) = &self.spool {
            s.update_gauges();
        }
    }

    /// After one receive, takes what else is already waiting (bounded) while spooling, so
    /// the appends share one fsync.
    fn take_waiting(&mut self, events_rx: &mut BatchReceiver, series_rx: &mut BatchReceiver) {
        let mut n = 0;
        while n < SPOOL_GROUP && self.spooling() {
            if let Ok(b) = events_rx.try_recv() {
                self.push(Lane::Events, b);
            } else if let Ok(b) = series_rx.try_recv() {
                self.push(Lane::Series, b);
            } else {
                break;
            }
            n += 1;
        }
    }

    fn push(&mut self, source: Lane, mut batch: Batch) {
        let encoded = self.buffer.encode(source, &batch);
        if encoded.unencodable > 0 {
            metrics::counter!("sitewatch_influx_dropped_total", "reason" => "no_fields")
                .increment(encoded.unencodable as u64);
        }
        let acks = std::mem::take(&mut batch.acks);
        if encoded.ends.is_empty() {
            // Nothing to store; holding the acks would stall the source.
            for ack in acks {
                ack.complete();
            }
            return;
        }
        if self.spooling() {
            let lines = encoded.ends.len();
            let spool = self.spool.as_mut().expect("spooling() checked it");
            match on_blocking_thread(|| spool.append(source, &encoded.buf, lines)) {
                Ok(_) => {
                    metrics::counter!("sitewatch_influx_spooled_samples_total")
                        .increment(lines as u64);
                    self.unsynced.extend(acks);
                    return;
                }
                Err(e) => self.spool_error("append", &e),
            }
        }
        // Healthy server: never drop, the caller stops taking series when full. Failing
        // without a (working) spool: keep memory bounded by dropping the oldest series.
        self.buffer.drop_oldest = self.is_failing();
        let out = self
            .buffer
            .push_encoded(source, encoded, acks, Instant::now());
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
                    "influx buffer full (buffer_limit) while the server fails: dropped the \
                     oldest series samples; set spool_dir to keep them on disk"
                );
                self.drops_since_log = 0;
                self.last_drop_log = Some(now);
            }
        }
    }

    fn spool_error(&mut self, what: &'static str, e: &std::io::Error) {
        metrics::counter!("sitewatch_influx_spool_errors_total", "op" => what).increment(1);
        let now = Instant::now();
        if self
            .last_spool_error_log
            .is_none_or(|t| now.duration_since(t) >= SPOOL_ERROR_LOG_PERIOD)
        {
            tracing::error!(
                op = what, error = %e,
                "influx spool write failed (disk full or failing?); holding data in memory \
                 instead"
            );
            self.last_spool_error_log = Some(now);
        }
    }

    /// Syncs the spool per the fsync policy and completes the acks of what it now holds:
    /// spooled data counts as safely buffered. If the sync fails, the acks are dropped so
    /// the sources redeliver.
    fn flush_acks(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        match on_blocking_thread(|| spool.sync()) {
            Ok(()) => {
                for ack in self.unsynced.drain(..) {
                    ack.complete();
                }
            }
            Err(e) => {
                self.unsynced.clear();
                self.spool_error("fsync", &e);
            }
        }
    }

    /// Starts the next request if none is running: events before series, and within each,
    /// memory (older) before the spool. Memory lines wait for `flush_interval` or a full
    /// batch, unless the spool has data (then they are the oldest) or `shutting_down`.
    fn start_flight(&mut self, now: Instant, shutting_down: bool) -> bool {
        if self.current.is_some() {
            return false;
        }
        let (spool_events, spool_series) = self.spool.as_ref().map_or((false, false), |s| {
            (
                !s.queue_ref(Lane::Events).is_empty(),
                !s.queue_ref(Lane::Series).is_empty(),
            )
        });
        let mem_due = self.buffer.pending() > 0
            && (spool_events || spool_series || shutting_down || self.buffer.should_flush(now));
        let picked = if let Some(f) = self.resend.pop_front() {
            Some((f, Origin::Memory))
        } else if mem_due && (self.buffer.events_pending() > 0 || !spool_events) {
            let flight = if spool_events {
                self.buffer.take_flight_from(&[Lane::Events])
            } else {
                self.buffer.take_flight()
            };
            flight.map(|f| (Arc::new(f), Origin::Memory))
        } else if spool_events {
            self.spool_flight(Lane::Events)
        } else if spool_series {
            self.spool_flight(Lane::Series)
        } else {
            None
        };
        let Some((flight, origin)) = picked else {
            return false;
        };
        self.current = Some(InFlight {
            future: Box::pin(deliver(self.target.clone(), flight.clone())),
            flight,
            origin,
            started: now,
        });
        true
    }

    fn spool_flight(&mut self, source: Lane) -> Option<(Arc<Flight>, Origin)> {
        let spool = self.spool.as_mut()?;
        let batch_size = self.batch_size;
        let read = on_blocking_thread(|| spool.queue(source).read_batch(batch_size))?;
        Some((
            Arc::new(Flight::from_body(read.body)),
            Origin::Spool(source, read.end),
        ))
    }

    fn finish_flight(&mut self, delivery: Delivery) {
        let Some(done) = self.current.take() else {
            return;
        };
        metrics::counter!("sitewatch_influx_points_written_total")
            .increment(delivery.written as u64);
        if !self.is_failing() {
            // The server answered: it is up again.
            if let Some(since) = self.down_since.take() {
                tracing::info!(
                    sink = "influx", endpoint = %self.target.shown,
                    down_for_s = since.elapsed().as_secs_f64(),
                    "influx sink recovered: the server answers again"
                );
            }
            self.last_error = None;
        }
        if delivery.rejected > 0 {
            metrics::counter!("sitewatch_influx_dropped_total", "reason" => "rejected")
                .increment(delivery.rejected as u64);
        }
        match done.origin {
            Origin::Memory => self.buffer.resolve(&done.flight),
            Origin::Spool(source, end) => {
                metrics::counter!("sitewatch_influx_spool_replayed_samples_total")
                    .increment(done.flight.lines() as u64);
                if let Some(s) = self.spool.as_mut() {
                    // May delete a finished segment file.
                    on_blocking_thread(|| s.queue(source).commit(end));
                    if s.is_empty() {
                        tracing::info!("influx spool replayed; back to writing from memory");
                    }
                }
            }
        }
    }

    /// A spool request still running at shutdown is simply read again next time.
    fn release_spool_flight(&mut self) {
        if let Some(InFlight {
            origin: Origin::Spool(source, _),
            ..
        }) = &self.current
        {
            let source = *source;
            self.current = None;
            if let Some(s) = self.spool.as_mut() {
                s.queue(source).release();
            }
        }
    }

    /// Moves what memory holds (the request in flight, if from memory, and every pending
    /// line) to the spool and completes the acks of what got there; at shutdown, so it is
    /// written at the next start, and while running when the server hangs. A flight that
    /// cannot be spooled is kept to be sent first. Returns the lines moved.
    fn spill_memory(&mut self) -> usize {
        if self.spool.is_none() {
            return 0;
        }
        let mut next = match self.current.take() {
            Some(InFlight {
                flight,
                origin: Origin::Memory,
                ..
            }) => Some(flight),
            Some(other) => {
                self.current = Some(other);
                None
            }
            None => None,
        };
        let mut stored: Vec<Arc<Flight>> = Vec::new();
        loop {
            let flight = match next.take().or_else(|| self.resend.pop_front()) {
                Some(f) => f,
                None => match self.buffer.take_flight() {
                    Some(f) => Arc::new(f),
                    None => break,
                },
            };
            if let Err(e) = self.append_flight(&flight) {
                tracing::error!(error = %e, "influx spool: cannot move buffered data to disk; keeping it in memory");
                self.resend.push_front(flight);
                break;
            }
            stored.push(flight);
        }
        let spool = self.spool.as_mut().expect("checked above");
        match on_blocking_thread(|| spool.sync()) {
            Ok(()) => {
                let n: usize = stored.iter().map(|f| f.lines()).sum();
                for f in stored {
                    self.buffer.resolve(&f);
                }
                n
            }
            Err(e) => {
                // Not durable: send them from memory as if never spooled (a later replay of
                // the same lines overwrites, never duplicates, in InfluxDB).
                tracing::error!(error = %e, "influx spool: fsync failed; keeping the data in memory");
                for f in stored.into_iter().rev() {
                    self.resend.push_front(f);
                }
                0
            }
        }
    }

    fn append_flight(&mut self, flight: &Flight) -> std::io::Result<()> {
        let spool = self.spool.as_mut().expect("caller checked the spool");
        on_blocking_thread(|| {
            for (source, range) in flight.source_ranges() {
                let bytes = &flight.body[flight.byte_range(range.clone())];
                spool.append(source, bytes, range.len())?;
            }
            Ok(())
        })
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
    if status == 413 {
        return Verdict::TooLarge;
    }
    match client::classify(status) {
        Class::Ok => Verdict::Written,
        Class::Retry { kind } => Verdict::Retry {
            kind,
            after: retry_after,
            detail: detail(),
        },
        Class::Reject if body.contains("partial write") => Verdict::Partial {
            dropped: partial_dropped(body),
            detail: detail(),
        },
        Class::Reject => Verdict::Rejected { detail: detail() },
    }
}

/// `Retry-After` (delta-seconds or a future HTTP-date), at most [`MAX_RETRY_AFTER`].
fn parse_retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    retry::retry_after_value(value).map(|d| d.min(MAX_RETRY_AFTER))
}

/// Full jitter: uniform in [0, min(cap, 250 ms · 2^attempt)], with a 10 ms floor so a dead
/// server is not hammered in a tight loop.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    Backoff::full_jitter(BASE_RETRY_DELAY, cap)
        .with_floor(Duration::from_millis(10))
        .delay(attempt)
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
            .request(reqwest::Method::POST, self.client.endpoint().clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let started = Instant::now();
        let result = req.send().await;
        let verdict = match result {
            Err(e) => {
                let (kind, detail) = crate::tls::send_failure(&e, "influx.tls");
                Verdict::Retry {
                    kind,
                    after: None,
                    detail,
                }
            }
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

/// Delivers every line of `flight`, retrying until each is written or rejected. Only ends
/// early if the future is dropped (shutdown deadline).
async fn deliver(target: Arc<Target>, flight: Arc<Flight>) -> Delivery {
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
            let started_failing =
                target.set_failing(matches!(verdict, Verdict::Retry { .. })) && attempt == 0;
            match verdict {
                Verdict::Written => {
                    if attempt > 0 {
                        // The recovery itself is one info line from the writer loop.
                        tracing::debug!(attempts = attempt + 1, endpoint = %target.shown, "influx write succeeded after retries");
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
                    *target.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("{kind}: {}", truncate(&detail)));
                    let delay = after.unwrap_or_else(|| backoff(attempt, target.max_retry_delay));
                    let hint = match kind {
                        "auth" => "check username/password or token",
                        "not_found" => {
                            "check that the database/bucket exists (influx: CREATE DATABASE ...)"
                        }
                        "tls" => "holding the data and retrying until TLS is fixed",
                        _ => "holding the data and retrying",
                    };
                    // One line when the sink starts failing, one when it recovers
                    // (finish_flight); the retries in between are debug lines.
                    if !started_failing {
                        tracing::debug!(endpoint = %target.shown, kind, attempt, ?delay, lines = n, error = %detail, "influx write failed again; {hint}");
                    } else if matches!(kind, "auth" | "not_found" | "tls") {
                        tracing::error!(sink = "influx", endpoint = %target.shown, kind, ?delay, server = %detail, "influx sink failing: write refused; {hint}");
                    } else {
                        tracing::warn!(sink = "influx", endpoint = %target.shown, kind, ?delay, lines = n, error = %detail, "influx sink failing: write failed; {hint}");
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
                        tracing::warn!(endpoint = %target.shown, bytes = lines.len(), line = %String::from_utf8_lossy(truncate_bytes(lines)), "influx rejected a single line as too large (413); dropped");
                    }
                }
                Verdict::Partial { dropped, detail } => {
                    metrics::counter!("sitewatch_influx_write_errors_total", "kind" => "partial")
                        .increment(1);
                    attempt = 0;
                    let dropped = dropped.min(n);
                    delivery.written += n - dropped;
                    delivery.rejected += dropped;
                    tracing::warn!(endpoint = %target.shown, lines = n, dropped, server = %detail, "influx partial write: the good points were stored, the bad ones dropped");
                }
                Verdict::Rejected { detail } => {
                    metrics::counter!("sitewatch_influx_write_errors_total", "kind" => "rejected")
                        .increment(1);
                    attempt = 0;
                    if n > 1 {
                        split(&mut todo, range);
                    } else {
                        delivery.rejected += 1;
                        tracing::warn!(endpoint = %target.shown, line = %String::from_utf8_lossy(truncate_bytes(lines)).trim_end(), server = %detail, "influx rejected a line; dropped");
                    }
                }
            }
            break;
        }
    }
    delivery
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
        use crate::ack::Ack;
        use crate::model::{FieldValue, Sample, SeriesKey, TagSet};
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
            serve_with_delay(script, Duration::ZERO).await
        }

        /// Like [`serve`], answering each request only after `delay` (a slow server).
        async fn serve_with_delay(script: Box<Script>, delay: Duration) -> Server {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let script: Arc<Script> = Arc::from(script);
            let state = (seen.clone(), script, delay);
            let handler = |axum::extract::State((seen, script, delay)): axum::extract::State<(
                Arc<Mutex<Seen>>,
                Arc<Script>,
                Duration,
            )>,
                           headers: HeaderMap,
                           body: axum::body::Bytes| async move {
                tokio::time::sleep(delay).await;
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
            .with_ack(Ack::new(move |d| {
                if !d.releases() {
                    return;
                }
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

        struct Running {
            series: tokio::sync::mpsc::Sender<Batch>,
            events: tokio::sync::mpsc::Sender<Batch>,
            shutdown: CancellationToken,
            task: tokio::task::JoinHandle<()>,
        }

        impl Running {
            /// Closes the inputs and waits for the writer to flush and return.
            async fn finish(self) {
                drop(self.series);
                drop(self.events);
                tokio::time::timeout(Duration::from_secs(20), self.task)
                    .await
                    .expect("writer returns")
                    .unwrap();
            }
        }

        fn start(server: &Server, extra: &str) -> Running {
            let cfg: InfluxConfig = toml::from_str(&format!(
                "url = \"{}\"\ndatabase = \"d\"\nflush_interval = \"20ms\"\nmax_retry_delay = \"50ms\"\n{extra}",
                server.url
            ))
            .unwrap();
            let writer = InfluxWriter::new(&cfg)
                .unwrap()
                .open_spool(Path::new("."))
                .unwrap();
            let (series, series_rx) = tokio::sync::mpsc::channel(8);
            let (events, events_rx) = tokio::sync::mpsc::channel(8);
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(writer.run(series_rx, events_rx, shutdown.clone()));
            Running {
                series,
                events,
                shutdown,
                task,
            }
        }

        async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
            tokio::time::timeout(Duration::from_secs(10), async {
                while !f() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        }

        fn segments(dir: &Path) -> usize {
            ["events", "series"]
                .iter()
                .filter_map(|q| std::fs::read_dir(dir.join(q)).ok())
                .flatten()
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                })
                .count()
        }

        #[tokio::test]
        async fn a_slow_server_gets_backpressure_not_drops() {
            // Each write takes 30 ms; 30 batches of 4 arrive at once into a 4-sample buffer.
            let server = serve_with_delay(
                Box::new(|_, _: &[String]| (204, None, "")),
                Duration::from_millis(30),
            )
            .await;
            let acks = Arc::new(AtomicUsize::new(0));
            let batches = (0..30)
                .map(|k| batch(10 + k * 4..14 + k * 4, &acks))
                .collect();
            let seen = run_writer(
                "database = \"d\"\nbatch_size = 4\nbuffer_limit = 4",
                &server,
                batches,
            )
            .await;
            let seen = seen.lock().unwrap();
            assert_eq!(seen.stored, expected(10..130), "all stored, in order");
            assert_eq!(acks.load(Ordering::SeqCst), 30);
        }

        #[tokio::test]
        async fn outage_spools_acks_then_replays_in_order_events_first() {
            let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = up.clone();
            let server = serve(Box::new(move |_, _: &[String]| {
                if flag.load(Ordering::SeqCst) {
                    (204, None, "")
                } else {
                    (503, None, "down")
                }
            }))
            .await;
            let dir = tempfile::tempdir().unwrap();
            let w = start(
                &server,
                &format!(
                    "batch_size = 4\nbuffer_limit = 8\nspool_dir = {:?}",
                    dir.path().display().to_string()
                ),
            );
            let first = Arc::new(AtomicUsize::new(0));
            w.series.send(batch(10..14, &first)).await.unwrap();
            // The first write fails: from then on data goes to the spool.
            wait_for("a failed write", || {
                server.seen.lock().unwrap().requests.len() >= 2
            })
            .await;
            let spooled = Arc::new(AtomicUsize::new(0));
            for k in 0..10 {
                w.series
                    .send(batch(14 + k * 4..18 + k * 4, &spooled))
                    .await
                    .unwrap();
            }
            let ev_acks = Arc::new(AtomicUsize::new(0));
            w.events.send(batch(1000..1002, &ev_acks)).await.unwrap();
            // Acked while the server is still down: they are durably in the spool.
            wait_for("acks of spooled batches", || {
                spooled.load(Ordering::SeqCst) == 10 && ev_acks.load(Ordering::SeqCst) == 1
            })
            .await;
            assert_eq!(first.load(Ordering::SeqCst), 0, "in memory, not acked");
            assert!(segments(dir.path()) >= 2, "events and series segments");
            up.store(true, Ordering::SeqCst);
            wait_for("everything written", || {
                server.seen.lock().unwrap().stored.len() == 4 + 40 + 2
            })
            .await;
            w.finish().await;
            assert_eq!(first.load(Ordering::SeqCst), 1);
            let stored = server.seen.lock().unwrap().stored.clone();
            let series: Vec<String> = stored
                .iter()
                .filter(|l| l.starts_with("m "))
                .cloned()
                .collect();
            assert_eq!(series, expected(10..54), "series in order, none lost");
            let first_event = stored
                .iter()
                .position(|l| l.starts_with("events "))
                .unwrap();
            let first_spooled_series = stored.iter().position(|l| l == "m v=14i 14").unwrap();
            assert!(
                first_event < first_spooled_series,
                "events replayed before the series backlog: {stored:?}"
            );
            assert_eq!(segments(dir.path()), 0, "replayed segments are deleted");
        }

        #[tokio::test]
        async fn spooled_and_buffered_data_survive_a_restart() {
            let down = serve(Box::new(|_, _: &[String]| (503, None, "down"))).await;
            let dir = tempfile::tempdir().unwrap();
            let extra = format!(
                "batch_size = 4\nshutdown_timeout = \"200ms\"\nspool_dir = {:?}",
                dir.path().display().to_string()
            );
            let w = start(&down, &extra);
            let acks = Arc::new(AtomicUsize::new(0));
            w.series.send(batch(10..14, &acks)).await.unwrap();
            wait_for("a failed write", || {
                down.seen.lock().unwrap().requests.len() >= 2
            })
            .await;
            for k in 0..5 {
                w.series
                    .send(batch(14 + k * 4..18 + k * 4, &acks))
                    .await
                    .unwrap();
            }
            wait_for("spooled", || acks.load(Ordering::SeqCst) == 5).await;
            // Shutdown while failing: the batch still in memory moves to the spool too.
            w.shutdown.cancel();
            w.finish().await;
            assert_eq!(acks.load(Ordering::SeqCst), 6);
            assert!(segments(dir.path()) >= 1);

            let up = serve(Box::new(|_, _: &[String]| (204, None, ""))).await;
            let w = start(&up, &extra);
            wait_for("replay after restart", || {
                up.seen.lock().unwrap().stored.len() >= 24
            })
            .await;
            w.finish().await;
            let stored = up.seen.lock().unwrap().stored.clone();
            let mut sorted = stored.clone();
            sorted.sort_by_key(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap());
            assert_eq!(sorted, expected(10..34), "nothing lost");
            assert_eq!(stored.len(), 24, "nothing written twice");
            assert_eq!(segments(dir.path()), 0);
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
