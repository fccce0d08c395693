//! [`RemoteWriteSink`]: batching, one request in flight, acks after a 2xx, backpressure.
//!
//! Taken data waits in two queues, events and series. A request takes up to `batch_size`
//! points, events first; it is sent as soon as events wait, a full batch of series points
//! waits, the oldest series point has waited `flush_interval`, or at shutdown. Only one
//! request is in flight, retried until it is delivered or rejected, so points reach the
//! receiver in the order they were taken (the spec asks samples of a series in order).
//!
//! A batch's acks complete once the requests that carried all its points got a 2xx; they
//! are rejected if any of its points was rejected (4xx); they are dropped (the source hears
//! "not stored", MQTT redelivers) if the sink stops before. The series points held (waiting
//! and in flight) are bounded by `max_buffered_samples`: once reached, the sink stops
//! receiving series batches until a request is delivered, which is backpressure up the
//! pipeline, never a drop. A batch is taken whole, so the bound can be passed by one batch.
//! Events (few, no acks) are always taken.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::ack::Ack;
use crate::collect::BoxError;
use crate::pipeline::{Batch, EventBatch, SinkInputs};
use crate::select::{or_pending, sleep_until};
use crate::sink::Sink;

use super::client::{Client, Outcome};
use super::config::{RemoteWriteConfig, RemoteWriteError};
use super::encode::{body, write_request, Encoder, Point};

/// Writes series and rule events to a Prometheus remote-write receiver.
pub struct RemoteWriteSink {
    cfg: RemoteWriteConfig,
    client: Option<Arc<Client>>,
}

impl std::fmt::Debug for RemoteWriteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWriteSink")
            .field("url", &self.cfg.shown_url())
            .finish_non_exhaustive()
    }
}

impl RemoteWriteSink {
    /// Validates the table (secrets are resolved by [`Sink::open`]).
    pub fn new(cfg: RemoteWriteConfig) -> Result<RemoteWriteSink, RemoteWriteError> {
        cfg.validate()?;
        Ok(RemoteWriteSink { cfg, client: None })
    }

    /// Like [`RemoteWriteSink::new`], with the secrets resolved and the client built now.
    pub fn opened(cfg: RemoteWriteConfig) -> Result<RemoteWriteSink, RemoteWriteError> {
        let client = Arc::new(Client::new(&cfg)?);
        Ok(RemoteWriteSink {
            cfg,
            client: Some(client),
        })
    }
}

#[async_trait]
impl Sink for RemoteWriteSink {
    fn name(&self) -> &'static str {
        "remote_write"
    }

    fn describe(&self) -> String {
        format!(
            "Prometheus remote write to {} ({}), {} samples per request, at most {} held in memory",
            self.cfg.shown_url(),
            self.cfg.auth_kind(),
            self.cfg.batch_size,
            self.cfg.max_buffered_samples
        )
    }

    fn check_warnings(&self, acking_sources: bool) -> Vec<String> {
        let mut w = Vec::new();
        if acking_sources {
            w.push(format!(
                "[remote_write] has no disk spool: while the receiver is down, up to \
                 max_buffered_samples ({}) samples wait in memory, then MQTT QoS 1 messages wait \
                 unacknowledged at the broker, whose limits (max_inflight_messages, \
                 max_queued_messages) decide how long an outage is held without loss",
                self.cfg.max_buffered_samples
            ));
        }
        if self.cfg.max_buffered_samples < self.cfg.batch_size {
            w.push(format!(
                "[remote_write] max_buffered_samples ({}) is below batch_size ({}): requests \
                 never fill while the receiver lags",
                self.cfg.max_buffered_samples, self.cfg.batch_size
            ));
        }
        w.extend(crate::tls::check_warning(
            self.cfg.tls.as_ref(),
            "remote_write.tls",
            &self.cfg.shown_url(),
        ));
        w
    }

    async fn open(&mut self) -> Result<(), BoxError> {
        if self.client.is_none() {
            self.client = Some(Arc::new(Client::new(&self.cfg)?));
        }
        Ok(())
    }

    async fn run(mut self: Box<Self>, inputs: SinkInputs, stop: CancellationToken) {
        if self.client.is_none() {
            if let Err(e) = self.open().await {
                tracing::error!(error = %e, "remote write sink cannot start; its copy of every batch is dropped (not acknowledged)");
                return;
            }
        }
        let client = self.client.clone().expect("opened above");
        metrics::gauge!("sitewatch_remote_write_failing").set(0.0);
        metrics::gauge!("sitewatch_remote_write_buffer_limit_samples")
            .set(self.cfg.max_buffered_samples as f64);
        // At 0 from the start, so rate() and increase() alerts work before the first sample.
        for result in ["delivered", "rejected", "shutdown", "skipped_string"] {
            metrics::counter!("sitewatch_remote_write_samples_total", "result" => result)
                .increment(0);
        }
        client.publish_status(None);
        tracing::info!(url = %client.shown, "remote write sink started");
        let mut state = State::new(&self.cfg, client);
        state.run(inputs, stop).await;
    }
}

type FlightFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Points of one taken batch (or event batch) not yet in a request, and its acks.
struct Entry {
    points: VecDeque<Point>,
    acks: Vec<Ack>,
    /// Some of its points were rejected: its acks are rejected once the rest is settled.
    tainted: bool,
    since: Instant,
}

struct Flight {
    future: FlightFuture,
    /// Acks of the entries whose last points are in this request, with their taint.
    finishes: Vec<(Vec<Ack>, bool)>,
    /// The front entry of the events / series queue lent some, not all, of its points.
    partial: [bool; 2],
    /// Points from each queue.
    taken: [usize; 2],
}

const EVENTS: usize = 0;
const SERIES: usize = 1;

struct State {
    client: Arc<Client>,
    encoder: Encoder,
    batch_size: usize,
    flush_interval: Duration,
    max_buffered: usize,
    queues: [VecDeque<Entry>; 2],
    /// Points held per queue, waiting or in flight.
    held: [usize; 2],
    current: Option<Flight>,
    gauge: Option<usize>,
}

impl State {
    fn new(cfg: &RemoteWriteConfig, client: Arc<Client>) -> State {
        State {
            client,
            encoder: Encoder::new(cfg.metric_naming, &cfg.labels),
            batch_size: cfg.batch_size,
            flush_interval: cfg.flush_interval,
            max_buffered: cfg.max_buffered_samples,
            queues: [VecDeque::new(), VecDeque::new()],
            held: [0, 0],
            current: None,
            gauge: None,
        }
    }

    async fn run(&mut self, mut inputs: SinkInputs, stop: CancellationToken) {
        let mut events_open = true;
        let mut series_open = true;
        loop {
            let draining = !events_open && !series_open;
            self.start_flight(Instant::now(), draining);
            self.update_gauge();
            if draining && self.current.is_none() && self.is_empty() {
                tracing::info!("remote write sink flushed and stopped");
                return;
            }
            let due = self
                .flush_due()
                .filter(|_| self.current.is_none())
                .map(tokio::time::Instant::from_std);
            // Backpressure: with the memory bound reached, series batches wait upstream.
            let take_series = series_open && self.held[SERIES] < self.max_buffered;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                outcome = or_pending(self.current.as_mut().map(|f| &mut f.future)) => {
                    self.finish_flight(outcome);
                }
                b = inputs.events.recv(), if events_open => match b {
                    Some(b) => self.push_events(b),
                    None => events_open = false,
                },
                b = inputs.series.recv(), if take_series => match b {
                    Some(b) => self.push_series(b),
                    None => series_open = false,
                },
                _ = sleep_until(due) => {}
            }
        }
        // `stop`: the flush cannot finish. Unsent acks are dropped, never completed, and so
        // are those of batches still queued in the inputs (counted with the rest).
        self.current = None;
        let mut left = self.held[EVENTS] + self.held[SERIES];
        inputs.series.close();
        inputs.events.close();
        while let Ok(batch) = inputs.series.try_recv() {
            left += numeric_fields(&batch.samples);
        }
        while let Ok(events) = inputs.events.try_recv() {
            left += events.len();
        }
        self.queues = [VecDeque::new(), VecDeque::new()];
        self.held = [0, 0];
        self.update_gauge();
        if left > 0 {
            metrics::counter!("sitewatch_remote_write_samples_total", "result" => "shutdown")
                .increment(left as u64);
            tracing::error!(
                samples = left,
                url = %self.client.shown,
                last_error = ?self.client.last_error(),
                "remote write sink stopped before these samples were delivered; they are not \
                 in the receiver (MQTT QoS 1 sources were not acknowledged and are redelivered)"
            );
        } else {
            tracing::info!("remote write sink stopped");
        }
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    fn push_series(&mut self, mut batch: Batch) {
        let mut points = Vec::new();
        let mut strings = 0;
        for s in &batch.samples {
            strings += self.encoder.encode_sample(s, &mut points).strings;
        }
        if strings > 0 {
            metrics::counter!("sitewatch_remote_write_samples_total", "result" => "skipped_string")
                .increment(strings as u64);
        }
        if points.is_empty() {
            // Nothing this sink can store (empty, or strings only): done with it.
            batch.complete_acks();
            return;
        }
        self.push(SERIES, points, std::mem::take(&mut batch.acks));
    }

    fn push_events(&mut self, events: EventBatch) {
        let mut points = Vec::new();
        self.encoder.encode_events(&events, &mut points);
        if !points.is_empty() {
            self.push(EVENTS, points, Vec::new());
        }
    }

    fn push(&mut self, queue: usize, points: Vec<Point>, acks: Vec<Ack>) {
        self.held[queue] += points.len();
        self.queues[queue].push_back(Entry {
            points: points.into(),
            acks,
            tainted: false,
            since: Instant::now(),
        });
    }

    /// When the oldest series point is due (events are due at once).
    fn flush_due(&self) -> Option<Instant> {
        if !self.queues[EVENTS].is_empty() {
            return Some(Instant::now());
        }
        self.queues[SERIES]
            .front()
            .map(|e| e.since + self.flush_interval)
    }

    fn start_flight(&mut self, now: Instant, draining: bool) {
        if self.current.is_some() || self.is_empty() {
            return;
        }
        let due = draining
            || !self.queues[EVENTS].is_empty()
            || self.held[SERIES] >= self.batch_size
            || self.flush_due().is_some_and(|d| d <= now);
        if !due {
            return;
        }
        let mut points: Vec<Point> = Vec::with_capacity(self.batch_size);
        let mut finishes = Vec::new();
        let mut partial = [false; 2];
        let mut taken = [0; 2];
        for q in [EVENTS, SERIES] {
            while points.len() < self.batch_size {
                let room = self.batch_size - points.len();
                let Some(front) = self.queues[q].front_mut() else {
                    break;
                };
                if front.points.len() <= room {
                    let e = self.queues[q].pop_front().expect("front exists");
                    taken[q] += e.points.len();
                    points.extend(e.points);
                    finishes.push((e.acks, e.tainted));
                } else {
                    taken[q] += room;
                    points.extend(front.points.drain(..room));
                    partial[q] = true;
                    break;
                }
            }
        }
        let n = points.len();
        let body = Bytes::from(body(&write_request(&points)));
        let future = Box::pin(self.client.clone().deliver(body, n));
        self.current = Some(Flight {
            future,
            finishes,
            partial,
            taken,
        });
    }

    fn finish_flight(&mut self, outcome: Outcome) {
        let Some(flight) = self.current.take() else {
            return;
        };
        let n = flight.taken[EVENTS] + flight.taken[SERIES];
        self.held[EVENTS] -= flight.taken[EVENTS];
        self.held[SERIES] -= flight.taken[SERIES];
        match outcome {
            Outcome::Delivered { .. } => {
                metrics::counter!("sitewatch_remote_write_samples_total", "result" => "delivered")
                    .increment(n as u64);
                for (acks, tainted) in flight.finishes {
                    for ack in acks {
                        if tainted {
                            ack.reject();
                        } else {
                            ack.complete();
                        }
                    }
                }
            }
            Outcome::Rejected { status, message } => {
                metrics::counter!("sitewatch_remote_write_samples_total", "result" => "rejected")
                    .increment(n as u64);
                tracing::warn!(
                    url = %self.client.shown, status, samples = n, server = %message,
                    "remote write receiver rejected a request; its samples are dropped (not retried)"
                );
                for (acks, _) in flight.finishes {
                    acks.into_iter().for_each(Ack::reject);
                }
                for q in [EVENTS, SERIES] {
                    if flight.partial[q] {
                        if let Some(front) = self.queues[q].front_mut() {
                            front.tainted = true;
                        }
                    }
                }
            }
        }
    }

    fn update_gauge(&mut self) {
        let held = self.held[EVENTS] + self.held[SERIES];
        if self.gauge != Some(held) {
            self.gauge = Some(held);
            metrics::gauge!("sitewatch_remote_write_buffered_samples").set(held as f64);
        }
    }
}

/// Points the samples would make (one per numeric field).
fn numeric_fields(samples: &[crate::model::Sample]) -> usize {
    samples
        .iter()
        .flat_map(|s| &s.fields)
        .filter(|(_, v)| !matches!(v, crate::model::FieldValue::Str(_)))
        .count()
}

/// Against a scripted in-process receiver: behaviours a real one cannot be made to show on
/// demand (429 with Retry-After, 503, 400, hanging). It decodes every request as a receiver
/// would (snappy block, then protobuf) and records it with its headers.
#[cfg(test)]
mod tests {
    use super::super::proto::WriteRequest;
    use super::*;
    use crate::ack::Delivery;
    use crate::model::{Event, EventState, FieldValue, Sample, SeriesKey, Severity, TagSet};
    use crate::pipeline::{Action, EventRecord, SinkPort};
    use axum::http::{HeaderMap, StatusCode};
    use prost::Message as _;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Answer to request number n: (status, Retry-After, body).
    type Script = dyn Fn(usize) -> (u16, Option<&'static str>, &'static str) + Send + Sync;

    struct Receiver {
        seen: Arc<Mutex<Vec<(HeaderMap, WriteRequest)>>>,
        /// Requests that reached the handler (answered or hanging).
        entered: Arc<AtomicUsize>,
        hang: Arc<AtomicBool>,
        release: Arc<tokio::sync::Notify>,
        url: String,
    }

    impl Receiver {
        async fn start(script: Box<Script>) -> Receiver {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let entered = Arc::new(AtomicUsize::new(0));
            let hang = Arc::new(AtomicBool::new(false));
            let release = Arc::new(tokio::sync::Notify::new());
            let script: Arc<Script> = Arc::from(script);
            let state = (
                seen.clone(),
                entered.clone(),
                hang.clone(),
                release.clone(),
                script,
            );
            type St = (
                Arc<Mutex<Vec<(HeaderMap, WriteRequest)>>>,
                Arc<AtomicUsize>,
                Arc<AtomicBool>,
                Arc<tokio::sync::Notify>,
                Arc<Script>,
            );
            let handler =
                |axum::extract::State((seen, entered, hang, release, script)): axum::extract::State<St>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    entered.fetch_add(1, Ordering::SeqCst);
                    while hang.load(Ordering::SeqCst) {
                        release.notified().await;
                    }
                    let raw = snap::raw::Decoder::new()
                        .decompress_vec(&body)
                        .expect("snappy block body");
                    let req = WriteRequest::decode(raw.as_slice()).expect("protobuf WriteRequest");
                    let mut seen = seen.lock().unwrap();
                    let (status, retry_after, msg) = script(seen.len());
                    seen.push((headers, req));
                    let mut h = HeaderMap::new();
                    if let Some(ra) = retry_after {
                        h.insert("retry-after", ra.parse().unwrap());
                    }
                    (StatusCode::from_u16(status).unwrap(), h, msg)
                };
            let app = axum::Router::new()
                .route("/api/v1/write", axum::routing::post(handler))
                .with_state(state);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Receiver {
                seen,
                entered,
                hang,
                release,
                url,
            }
        }

        fn requests(&self) -> Vec<(HeaderMap, WriteRequest)> {
            self.seen.lock().unwrap().clone()
        }

        fn set_hang(&self, hang: bool) {
            self.hang.store(hang, Ordering::SeqCst);
            if !hang {
                self.release.notify_waiters();
            }
        }
    }

    fn config(url: &str, extra: &str) -> RemoteWriteConfig {
        toml::from_str(&format!(
            "url = \"{url}\"\nflush_interval = \"20ms\"\nmax_retry_delay = \"50ms\"\ntimeout = \"30s\"\n{extra}"
        ))
        .unwrap()
    }

    struct Running {
        port: Option<SinkPort>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(cfg: RemoteWriteConfig, capacity: usize) -> Running {
        let (port, inputs) = SinkInputs::channel(capacity);
        let stop = CancellationToken::new();
        let sink = Box::new(RemoteWriteSink::new(cfg).unwrap());
        let task = tokio::spawn(sink.run(inputs, stop.clone()));
        Running {
            port: Some(port),
            stop,
            task,
        }
    }

    impl Running {
        fn port(&self) -> &SinkPort {
            self.port.as_ref().unwrap()
        }
    }

    type Seen = Arc<Mutex<Vec<Delivery>>>;

    fn acked(samples: Vec<Sample>, seen: &Seen) -> Batch {
        let seen = seen.clone();
        Batch::new(samples).with_ack(Ack::new(move |d| seen.lock().unwrap().push(d)))
    }

    fn samples(n: usize, t0: i64) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                Sample::new(
                    SeriesKey::new("pdu", TagSet::new([("outlet", format!("{i}"))])),
                    (t0 + i as i64) * 1_000_000,
                )
                .with_field("watts", FieldValue::Int(i as i64))
            })
            .collect()
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn ok(_: usize) -> (u16, Option<&'static str>, &'static str) {
        (204, None, "")
    }

    #[tokio::test]
    async fn delivers_with_the_spec_headers_and_acks_after_the_2xx() {
        let rx = Receiver::start(Box::new(ok)).await;
        let run = start(
            config(&rx.url, "bearer_token = \"t0k\"\nlabels = { dc = \"x\" }"),
            8,
        );
        let seen: Seen = Default::default();
        run.port()
            .series
            .send(acked(samples(3, 1000), &seen))
            .await
            .unwrap();
        wait_for("the ack", || !seen.lock().unwrap().is_empty()).await;
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
        let reqs = rx.requests();
        assert_eq!(reqs.len(), 1);
        let (h, req) = &reqs[0];
        assert_eq!(h["content-encoding"], "snappy");
        assert_eq!(h["content-type"], "application/x-protobuf");
        assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(h["authorization"], "Bearer t0k");
        assert_eq!(req.timeseries.len(), 3);
        let s = &req.timeseries[2];
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![("__name__", "pdu_watts"), ("dc", "x"), ("outlet", "2")]
        );
        assert_eq!((s.samples[0].value, s.samples[0].timestamp), (2.0, 1002));
        drop(run.port);
        tokio::time::timeout(Duration::from_secs(5), run.task)
            .await
            .expect("inputs closed and nothing left: the sink returns")
            .unwrap();
    }

    #[tokio::test]
    async fn basic_auth_from_the_table_or_the_url() {
        let rx = Receiver::start(Box::new(ok)).await;
        let with_url = rx.url.replace("http://", "http://url:cred@");
        for (url, extra, want) in [
            (
                rx.url.as_str(),
                "username = \"u\"\npassword = \"p\"",
                "Basic dTpw",
            ),
            (with_url.as_str(), "", "Basic dXJsOmNyZWQ="),
        ] {
            let cfg = config(url, extra);
            let run = start(cfg, 8);
            let seen: Seen = Default::default();
            run.port()
                .series
                .send(acked(samples(1, 0), &seen))
                .await
                .unwrap();
            wait_for("the ack", || !seen.lock().unwrap().is_empty()).await;
            let reqs = rx.requests();
            assert_eq!(reqs.last().unwrap().0["authorization"], want);
            run.stop.cancel();
        }
    }

    #[tokio::test]
    async fn retries_429_and_5xx_honouring_retry_after_then_acks() {
        let rx = Receiver::start(Box::new(|n| match n {
            0 => (429, Some("1"), "slow down"),
            1 => (503, None, "unavailable"),
            _ => (204, None, ""),
        }))
        .await;
        let run = start(config(&rx.url, ""), 8);
        let seen: Seen = Default::default();
        let sent = Instant::now();
        run.port()
            .series
            .send(acked(samples(2, 0), &seen))
            .await
            .unwrap();
        wait_for("the first answer", || rx.requests().len() == 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rx.requests().len(), 1, "Retry-After: 1 is honoured");
        assert!(seen.lock().unwrap().is_empty(), "not acked before a 2xx");
        wait_for("the ack", || !seen.lock().unwrap().is_empty()).await;
        assert!(sent.elapsed() >= Duration::from_secs(1));
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
        let reqs = rx.requests();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].1, reqs[2].1, "the same request is resent");
        run.stop.cancel();
    }

    #[tokio::test]
    async fn a_4xx_rejects_without_retrying_and_the_next_batch_goes_on() {
        let rx = Receiver::start(Box::new(|n| match n {
            0 => (400, None, "out of bounds"),
            _ => (204, None, ""),
        }))
        .await;
        let run = start(config(&rx.url, ""), 8);
        let seen: Seen = Default::default();
        run.port()
            .series
            .send(acked(samples(2, 0), &seen))
            .await
            .unwrap();
        wait_for("the reject", || !seen.lock().unwrap().is_empty()).await;
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Rejected]);
        run.port()
            .series
            .send(acked(samples(2, 10), &seen))
            .await
            .unwrap();
        wait_for("the second ack", || seen.lock().unwrap().len() == 2).await;
        assert_eq!(seen.lock().unwrap()[1], Delivery::Delivered);
        assert_eq!(rx.requests().len(), 2, "the 400 was not retried");
        run.stop.cancel();
    }

    #[tokio::test]
    async fn a_large_batch_is_split_and_one_rejected_part_rejects_its_ack() {
        let rx = Receiver::start(Box::new(|n| match n {
            1 => (400, None, "bad part"),
            _ => (204, None, ""),
        }))
        .await;
        let run = start(config(&rx.url, "batch_size = 4"), 8);
        let seen: Seen = Default::default();
        run.port()
            .series
            .send(acked(samples(10, 0), &seen))
            .await
            .unwrap();
        wait_for("the ack", || !seen.lock().unwrap().is_empty()).await;
        let sizes: Vec<usize> = rx
            .requests()
            .iter()
            .map(|(_, r)| r.timeseries.iter().map(|s| s.samples.len()).sum())
            .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Rejected]);
        run.stop.cancel();
    }

    fn alert(state: EventState) -> EventRecord {
        EventRecord {
            event: Event {
                labels: Vec::new(),
                annotations: Vec::new(),
                rule: "hot".into(),
                series: SeriesKey::new("env", TagSet::new([("site", "dc1")])),
                field: "temp".into(),
                severity: Severity::Critical,
                state,
                value: FieldValue::Float(40.0),
                threshold: Some(35.0),
                started_ns: 0,
                timestamp_ns: 5_000_000,
                message: "hot".into(),
            },
            silenced: false,
            action: Action::Change,
            response: None,
        }
    }

    #[tokio::test]
    async fn events_are_sent_before_waiting_series() {
        let rx = Receiver::start(Box::new(ok)).await;
        // Series wait for flush_interval; events are due at once and go first.
        let run = start(
            config(&rx.url, "").tap(|c| c.flush_interval = Duration::from_secs(30)),
            8,
        );
        let seen: Seen = Default::default();
        run.port()
            .series
            .send(acked(samples(2, 0), &seen))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.requests().is_empty(), "series wait for flush_interval");
        run.port()
            .events
            .send(vec![alert(EventState::Firing)])
            .await
            .unwrap();
        wait_for("a request", || !rx.requests().is_empty()).await;
        let req = &rx.requests()[0].1;
        let names: Vec<&str> = req
            .timeseries
            .iter()
            .map(|s| {
                s.labels
                    .iter()
                    .find(|l| l.name == "__name__")
                    .unwrap()
                    .value
                    .as_str()
            })
            .collect();
        assert_eq!(names, vec!["sitewatch_alert", "pdu_watts", "pdu_watts"]);
        assert_eq!(req.timeseries[0].samples[0].value, 1.0);
        wait_for("the ack", || !seen.lock().unwrap().is_empty()).await;
        run.stop.cancel();
    }

    trait Tap: Sized {
        fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
    }
    impl Tap for RemoteWriteConfig {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }

    #[tokio::test]
    async fn a_full_buffer_stops_taking_batches_until_the_receiver_answers() {
        let rx = Receiver::start(Box::new(ok)).await;
        rx.set_hang(true);
        let run = start(
            config(&rx.url, "batch_size = 5\nmax_buffered_samples = 10"),
            2,
        );
        let seen: Seen = Default::default();
        // The sink takes batches until it holds 10 samples, then the channel (2) fills.
        let mut sent = 0;
        loop {
            if run.port().series.capacity() == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if run.port().series.capacity() == 0 {
                    break;
                }
            }
            run.port()
                .series
                .try_send(acked(samples(5, sent * 10), &seen))
                .expect("room was checked");
            sent += 1;
            assert!(sent < 20, "the sink kept taking batches past its bound");
        }
        // Two batches (10 samples) held by the sink, two waiting in the channel.
        assert_eq!(sent, 4);
        assert!(seen.lock().unwrap().is_empty(), "nothing acked while hung");
        rx.set_hang(false);
        wait_for("every ack", || seen.lock().unwrap().len() == 4).await;
        assert!(seen
            .lock()
            .unwrap()
            .iter()
            .all(|d| *d == Delivery::Delivered));
        let total: usize = rx
            .requests()
            .iter()
            .map(|(_, r)| r.timeseries.iter().map(|s| s.samples.len()).sum::<usize>())
            .sum();
        assert_eq!(total, 20, "every sample delivered once");
        run.stop.cancel();
    }

    #[tokio::test]
    async fn stop_ends_a_stuck_flush_and_drops_the_acks_unsettled() {
        let rx = Receiver::start(Box::new(ok)).await;
        rx.set_hang(true);
        let mut run = start(config(&rx.url, ""), 8);
        let seen: Seen = Default::default();
        run.port()
            .series
            .send(acked(samples(3, 0), &seen))
            .await
            .unwrap();
        run.port()
            .events
            .send(vec![alert(EventState::Firing)])
            .await
            .unwrap();
        wait_for("the request", || rx.entered.load(Ordering::SeqCst) > 0).await;
        // Inputs closed: the sink keeps trying to flush.
        drop(run.port.take());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!run.task.is_finished(), "still flushing");
        run.stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), &mut run.task)
            .await
            .expect("stop ends the flush")
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Failed]);
    }

    #[tokio::test]
    async fn stop_while_backpressured_fails_held_and_queued_batches() {
        let rx = Receiver::start(Box::new(ok)).await;
        rx.set_hang(true);
        let mut run = start(
            config(&rx.url, "batch_size = 5\nmax_buffered_samples = 10"),
            2,
        );
        let seen: Seen = Default::default();
        // Two batches held by the sink (its bound), two waiting in the channel.
        for i in 0..4 {
            run.port()
                .series
                .send(acked(samples(5, i * 10), &seen))
                .await
                .unwrap();
        }
        wait_for("the request", || rx.entered.load(Ordering::SeqCst) > 0).await;
        run.stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), &mut run.task)
            .await
            .expect("stop ends the sink")
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Failed; 4]);
        assert!(rx.requests().is_empty(), "nothing was answered");
    }

    #[tokio::test]
    async fn strings_only_and_empty_batches_are_acked_at_once() {
        let run = start(config("http://127.0.0.1:9/api/v1/write", ""), 8);
        let seen: Seen = Default::default();
        let s = Sample::new(SeriesKey::new("m", TagSet::empty()), 0)
            .with_field("state", FieldValue::Str("on".into()));
        run.port().series.send(acked(vec![s], &seen)).await.unwrap();
        run.port()
            .series
            .send(acked(Vec::new(), &seen))
            .await
            .unwrap();
        wait_for("the acks", || seen.lock().unwrap().len() == 2).await;
        assert!(seen
            .lock()
            .unwrap()
            .iter()
            .all(|d| *d == Delivery::Delivered));
        run.stop.cancel();
    }

    #[test]
    fn check_warns_about_acking_sources_and_a_small_buffer() {
        let sink = RemoteWriteSink::new(config(
            "http://u:secret@vm/api/v1/write",
            "batch_size = 100\nmax_buffered_samples = 10",
        ))
        .unwrap();
        assert_eq!(sink.check_warnings(false).len(), 1);
        assert_eq!(sink.check_warnings(true).len(), 2);
        assert!(!sink.describe().contains("secret"), "{}", sink.describe());
    }

    use proptest::prelude::*;

    proptest! {
        /// The batching and ack bookkeeping alone (no network: each request's outcome is
        /// chosen by the test). For any batch sizes, request size and outcomes: every point
        /// goes out exactly once, no request is larger than `batch_size`, and every ack is
        /// settled exactly once: rejected if any of its points was in a rejected request,
        /// delivered otherwise.
        #[test]
        fn every_ack_is_settled_once_with_the_worst_outcome_of_its_points(
            sizes in prop::collection::vec(0usize..12, 1..12),
            batch_size in 1usize..8,
            outcomes in prop::collection::vec(any::<bool>(), 64),
        ) {
            let cfg = config("http://127.0.0.1:9/api/v1/write", &format!("batch_size = {batch_size}"));
            let client = Arc::new(Client::new(&cfg).unwrap());
            let mut state = State::new(&cfg, client);
            let seen: Vec<Seen> = sizes.iter().map(|_| Seen::default()).collect();
            let mut t = 0;
            for (n, seen) in sizes.iter().zip(&seen) {
                state.push_series(acked(samples(*n, t), seen));
                t += 100;
            }
            // Which batch each point belongs to, in the order points were taken.
            let owners: Vec<usize> = sizes.iter().enumerate().flat_map(|(b, n)| vec![b; *n]).collect();
            let mut rejected_batches = vec![false; sizes.len()];
            let mut sent = 0;
            let mut flights = 0;
            while !state.is_empty() {
                state.start_flight(Instant::now(), true);
                let taken = state.current.as_ref().expect("a flight while data waits").taken;
                let n = taken[SERIES];
                prop_assert!(n >= 1 && n <= batch_size);
                let reject = outcomes[flights % outcomes.len()];
                if reject {
                    for b in &owners[sent..sent + n] {
                        rejected_batches[*b] = true;
                    }
                }
                sent += n;
                flights += 1;
                state.finish_flight(if reject {
                    Outcome::Rejected { status: 400, message: String::new() }
                } else {
                    Outcome::Delivered { attempts: 1 }
                });
            }
            prop_assert_eq!(sent, owners.len(), "every point sent once");
            prop_assert_eq!(state.held, [0, 0]);
            for (b, seen) in seen.iter().enumerate() {
                let got = seen.lock().unwrap().clone();
                let want = if rejected_batches[b] { Delivery::Rejected } else { Delivery::Delivered };
                prop_assert_eq!(got, vec![want], "batch {} of {} points", b, sizes[b]);
            }
        }
    }
}
