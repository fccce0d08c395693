//! The rules stage of the pipeline: collectors → rules → sinks and the alert router.
//!
//! Besides batches and reloads, a one-second wall-clock timer drives [`Engine::tick`] (stale
//! detection) and sends silenced alerts whose silence has ended; with a state file, state is
//! saved every [`SAVE_EVERY`] and on shutdown, and alerts open at the last save are
//! re-announced to the alert router at start (not re-written as new events).
//!
//! Silences are applied here: every event goes to every sink, a silenced one marked
//! [`EventRecord::silenced`], and only notified ones go to `alerts_tx`.
//!
//! Acknowledgements arrive here from the API (the stage owns the open alerts): each is
//! written as an `acknowledged` events row and an updated `alerts` point, told to the alert
//! router (which stops escalating and repeating it) and saved with the state.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{now_ns, Event, Sample};
use crate::pipeline::{Action, AlertNotice, Batch, BatchReceiver, EventRecord, SinkSenders};

use super::acknowledge::{AckReceiver, AckRequest};
use super::config::RuleSet;
use super::engine::Engine;
use super::handover::{HeldUnits, UnitCheckpoint, UnitCommand, UnitLink};
use super::open_alerts::{self, OpenAlerts};
use super::silence::Gate;
use super::units::UnitRestore;

/// How often the engine's clock advances (stale detection resolution).
pub const TICK: Duration = Duration::from_secs(1);
/// How often every open alert is written again to the `alerts` measurement (see
/// [`super::open_alerts`]): a dashboard looking back a few minutes sees each one.
pub const ALERTS_EVERY: Duration = open_alerts::DEFAULT_ALERTS_EVERY;
/// How often state is saved when a state file is configured.
pub const SAVE_EVERY: Duration = Duration::from_secs(30);

/// Evaluates samples in order and returns the events they caused (used by `sitewatch once`).
pub fn evaluate_batch(engine: &mut Engine, samples: &[Sample]) -> Vec<Event> {
    let mut out = Vec::new();
    for s in samples {
        engine.observe(s, &mut out);
    }
    out
}

/// Runs the stage until `rx` closes or `shutdown` fires; see [`run_with_reload`].
pub async fn run(
    engine: Engine,
    rx: BatchReceiver,
    sinks: SinkSenders,
    alerts_tx: Option<mpsc::Sender<AlertNotice>>,
    shutdown: CancellationToken,
) {
    // Held open for the whole run so the reload and ack branches simply never fire.
    let (_no_reloads, reload_rx) = mpsc::channel(1);
    let (_no_acks, acks_rx) = mpsc::channel(1);
    let inputs = StageInputs {
        reload: reload_rx,
        acks: acks_rx,
        units: None,
    };
    run_with_reload(engine, rx, sinks, alerts_tx, inputs, shutdown).await
}

/// What reaches the stage besides sample batches.
pub struct StageInputs {
    /// Replacement rule sets (file change, SIGHUP).
    pub reload: mpsc::Receiver<RuleSet>,
    /// Acknowledgements from the API.
    pub acks: AckReceiver,
    /// Cluster mode: the handover that moves units' rule state in and out.
    pub units: Option<UnitLink>,
}

struct Outputs {
    sinks: SinkSenders,
    alerts_tx: Option<mpsc::Sender<AlertNotice>>,
    open: OpenAlerts,
    /// Cluster mode: the units whose state is held here, and where their checkpoints go.
    held: Option<HeldUnits>,
    checkpoints: Option<mpsc::Sender<UnitCheckpoint>>,
}

impl Outputs {
    async fn emit(&mut self, engine: &mut Engine, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let now = now_ns();
        if let Some(held) = &mut self.held {
            for ev in &events {
                held.touched(engine.unit_of(&ev.series));
            }
        }
        let gates: Vec<Gate> = events.iter().map(|ev| engine.gate_alert(ev, now)).collect();
        let applied = self.open.apply(
            events
                .iter()
                .zip(&gates)
                .map(|(ev, g)| (ev, *g == Gate::Silenced)),
            now,
        );
        for (ev, gate) in events.iter().zip(&gates) {
            tracing::info!(
                rule = %ev.rule,
                series = %ev.series,
                severity = %ev.severity,
                state = %ev.state,
                message = %ev.message,
                silenced = *gate == Gate::Silenced,
                "rule event"
            );
        }
        // Alerts first: try_send never waits, and a flood alarm should not queue behind a
        // slow InfluxDB.
        self.alert(
            events
                .iter()
                .zip(&gates)
                .filter(|(_, g)| **g == Gate::Notify)
                .map(|(ev, _)| ev),
        );
        let records = events
            .into_iter()
            .zip(gates)
            .zip(applied.responses)
            .map(|((event, gate), response)| EventRecord {
                response,
                ..EventRecord::change(event, gate == Gate::Silenced)
            })
            .collect();
        self.sinks.send_events(records).await;
        self.write_open_alerts(applied.rows).await;
        // An alert change goes to etcd now, not at the next tick: a member killed right
        // after a notification must leave the notified state behind.
        let touched = self
            .held
            .as_mut()
            .map(HeldUnits::take_touched)
            .unwrap_or_default();
        self.send_checkpoints(engine, touched);
    }

    /// Sends the checkpoints of `units` to the handover (never waits: a full queue drops
    /// one, counted, and the next round carries the state).
    fn send_checkpoints(&self, engine: &Engine, units: Vec<Arc<str>>) {
        let Some(tx) = &self.checkpoints else {
            return;
        };
        for unit in units {
            let bytes = checkpoint(engine, &self.open, &unit);
            if tx
                .try_send(UnitCheckpoint {
                    unit,
                    bytes,
                    last: false,
                })
                .is_err()
            {
                metrics::counter!("sitewatch_cluster_checkpoints_dropped_total").increment(1);
            }
        }
    }

    /// Acknowledges an open alert for the API: the events row, the alert's new point, the
    /// router's notice, then the answer. Returns whether the desk changed (save the state).
    async fn acknowledge(&mut self, req: AckRequest) -> bool {
        let now = now_ns();
        let acked = match self.open.acknowledge(&req.id, &req.by, &req.comment, now) {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(alert = %req.id, by = %req.by, error = %e, "acknowledgement refused");
                let _ = req.reply.send(Err(e));
                return false;
            }
        };
        tracing::info!(
            alert = %req.id,
            rule = %acked.event.rule,
            series = %acked.event.series,
            by = %req.by,
            comment = %req.comment,
            time_to_ack_s = acked.response.time_to_ack_s.unwrap_or_default(),
            "alert acknowledged"
        );
        metrics::counter!("sitewatch_alerts_acknowledged_total").increment(1);
        self.notify(AlertNotice::Acknowledged(
            acked.event.clone(),
            acked.ack.clone(),
        ));
        let mut event = acked.event;
        event.timestamp_ns = now;
        event.message = if req.comment.is_empty() {
            format!("acknowledged by {}", req.by)
        } else {
            format!("acknowledged by {}: {}", req.by, req.comment)
        };
        let record = EventRecord {
            event,
            silenced: false,
            action: Action::Acknowledged,
            response: Some(acked.response),
        };
        self.sinks.send_events(vec![record]).await;
        self.write_open_alerts(vec![acked.row]).await;
        let _ = req.reply.send(Ok(acked.view));
        true
    }

    /// Takes up a unit's state from its checkpoint: its open alerts are the router's again
    /// without a new notification (the previous owner sent it), acknowledgements included.
    async fn take_over(
        &mut self,
        engine: &mut Engine,
        unit: Arc<str>,
        checkpoint: Option<Vec<u8>>,
    ) -> Result<usize, String> {
        let restored = match checkpoint.map(|bytes| engine.restore_unit(&unit, &bytes)) {
            None => Ok(Default::default()),
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(format!(
                "unit {unit}: checkpoint not restored ({e}); it starts with fresh rule state"
            )),
        };
        if let Some(held) = &mut self.held {
            held.hold(unit.clone());
        }
        let restored: UnitRestore = restored?;
        tracing::debug!(unit = %unit, records = restored.records, open = restored.open.len(), "rule state taken up");
        self.open.take_over(restored.desk);
        let applied = self
            .open
            .apply(restored.open.iter().map(|ev| (ev, false)), now_ns());
        self.write_open_alerts(applied.rows).await;
        for ev in restored.open {
            let ack = self.open.ack_of(&ev.alert_id());
            self.notify(AlertNotice::Adopted(ev, ack));
        }
        Ok(restored.records)
    }

    /// Gives a unit's state away: its checkpoint, with its open alerts, which the router
    /// forgets without resolving them (the next owner carries them on).
    fn hand_over(&mut self, engine: &mut Engine, unit: &str) -> Vec<u8> {
        let of_unit = |ev: &Event| engine.unit_of(&ev.series).is_some_and(|u| **u == *unit);
        let (desk, events) = self.open.hand_over(of_unit);
        let bytes = engine.unit_snapshot(unit).with_open_alerts(desk).to_bytes();
        for ev in events {
            self.notify(AlertNotice::Forgotten(ev));
        }
        let series = engine.forget_unit(unit);
        if let Some(held) = &mut self.held {
            held.release(unit);
        }
        tracing::debug!(unit, series, bytes = bytes.len(), "rule state handed over");
        bytes
    }

    /// Points of the `alerts` measurement go to the sinks like samples (no ack: they are
    /// rebuilt from rule state, and re-written every [`ALERTS_EVERY`] anyway).
    async fn write_open_alerts(&mut self, rows: Vec<Sample>) {
        if !rows.is_empty() {
            self.sinks.send_series(Batch::new(rows)).await;
        }
    }

    /// Sends to the alert router only (events already in history, or re-announcements).
    fn alert<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        for ev in events {
            self.notify(AlertNotice::Change(ev.clone()));
        }
    }

    fn notify(&self, notice: AlertNotice) {
        let Some(tx) = &self.alerts_tx else {
            return;
        };
        match tx.try_send(notice) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(n)) => {
                metrics::counter!("sitewatch_rules_alerts_dropped_total", "reason" => "full")
                    .increment(1);
                let ev = n.event();
                tracing::warn!(rule = %ev.rule, series = %ev.series, state = %ev.state, "alert router queue full; notification dropped (the event is still written to the events measurement)");
            }
            Err(mpsc::error::TrySendError::Closed(n)) => {
                metrics::counter!("sitewatch_rules_alerts_dropped_total", "reason" => "closed")
                    .increment(1);
                let ev = n.event();
                tracing::error!(rule = %ev.rule, series = %ev.series, "alert router has stopped; notification dropped");
            }
        }
    }
}

/// Runs the stage: for each batch from `rx`, evaluates every sample, sends the resulting events
/// to every sink and to `alerts_tx`, then forwards the batch with its acks to every sink. A [`RuleSet`] received on `reload` replaces the
/// rules (see [`Engine::replace_rules`]) and its events are delivered the same way.
///
/// Returns when `rx` is closed and drained, or on `shutdown` after forwarding every batch
/// already queued; dropping the senders then lets the writers finish.
pub async fn run_with_reload(
    mut engine: Engine,
    mut rx: BatchReceiver,
    sinks: SinkSenders,
    alerts_tx: Option<mpsc::Sender<AlertNotice>>,
    inputs: StageInputs,
    shutdown: CancellationToken,
) {
    let StageInputs {
        mut reload,
        mut acks,
        units,
    } = inputs;
    let (mut unit_commands, checkpoints) = match units {
        Some(link) => (Some(link.commands), Some(link.checkpoints)),
        None => (None, None),
    };
    let mut out = Outputs {
        sinks,
        alerts_tx,
        open: OpenAlerts::new(open_alerts::board()),
        held: checkpoints.as_ref().map(|_| HeldUnits::default()),
        checkpoints,
    };
    out.open.restore(engine.take_restored_open());
    let restored = engine.take_restored_alerts();
    if !restored.is_empty() {
        tracing::info!(
            alerts = restored.len(),
            "re-announcing alerts open before the restart"
        );
        out.alert(&restored);
        let applied = out
            .open
            .apply(restored.iter().map(|ev| (ev, false)), now_ns());
        out.write_open_alerts(applied.rows).await;
        // The router forgot acknowledgements with the restart: no escalation, no repeats.
        for (ev, ack) in out.open.acknowledged() {
            out.notify(AlertNotice::Acknowledged(ev, ack));
        }
    }
    let mut acks_open = true;
    let mut rewriter =
        tokio::time::interval_at(tokio::time::Instant::now() + ALERTS_EVERY, ALERTS_EVERY);
    rewriter.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saver = tokio::time::interval_at(tokio::time::Instant::now() + SAVE_EVERY, SAVE_EVERY);
    saver.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saving = Saver::default();
    let mut reload_open = true;
    let mut drain = true;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            rules = reload.recv(), if reload_open => match rules {
                Some(rules) => {
                    let n = rules.len();
                    let events = engine.replace_rules(rules);
                    tracing::info!(rules = n, "rules replaced");
                    out.emit(&mut engine, events).await;
                }
                None => reload_open = false,
            },
            req = acks.recv(), if acks_open => match req {
                Some(req) => {
                    let id = req.id.clone();
                    let acked = out.acknowledge(req).await;
                    if acked {
                        if let (Some(held), Some(ev)) = (&mut out.held, out.open.event_of(&id)) {
                            held.touched(engine.unit_of(&ev.series));
                        }
                    }
                    if acked && engine.state_file().is_some() {
                        // An acknowledgement is a person's word: saved now, not in 30 s.
                        saving.start(&engine, &out.open);
                    }
                }
                None => acks_open = false,
            },
            cmd = next_command(&mut unit_commands) => match cmd {
                Some(UnitCommand::Restore { unit, checkpoint, reply }) => {
                    let _ = reply.send(out.take_over(&mut engine, unit, checkpoint).await);
                }
                Some(UnitCommand::Release { unit, reply }) => {
                    let _ = reply.send(out.hand_over(&mut engine, &unit));
                }
                None => unit_commands = None,
            },
            _ = ticker.tick() => {
                tick(&mut engine, &mut out).await;
                let due = out.held.as_mut().map(|h| h.due(tokio::time::Instant::now())).unwrap_or_default();
                out.send_checkpoints(&engine, due);
            }
            _ = saver.tick(), if engine.state_file().is_some() => saving.start(&engine, &out.open),
            _ = rewriter.tick(), if !out.open.is_empty() => {
                let rows = out.open.rewrite(now_ns());
                out.write_open_alerts(rows).await;
            }
            batch = rx.recv() => match batch {
                Some(batch) => {
                    // Batches still waiting behind this one: the pipeline's backlog.
                    metrics::gauge!("sitewatch_pipeline_queue_batches").set(rx.len() as f64);
                    process(&mut engine, &mut out, batch).await
                }
                None => {
                    drain = false;
                    break;
                }
            },
        }
    }
    if drain {
        // Shutdown: take no new batches, but finish the ones collectors already handed over.
        rx.close();
        while let Some(batch) = rx.recv().await {
            process(&mut engine, &mut out, batch).await;
        }
    }
    // Cluster mode: every unit's state goes to the handover, which writes it as released.
    if let (Some(tx), Some(held)) = (&out.checkpoints, &out.held) {
        for unit in held.all() {
            let bytes = checkpoint(&engine, &out.open, &unit);
            let _ = tx
                .send(UnitCheckpoint {
                    unit,
                    bytes,
                    last: true,
                })
                .await;
        }
    }
    // The last save: after any periodic one still writing, so the newest state wins.
    saving.finish().await;
    if engine.state_file().is_some() {
        saving.start(&engine, &out.open);
        saving.finish().await;
    }
}

/// Wall-clock second of the stage's latest tick: the service's watchdog pings only while it
/// keeps moving, so a stage stuck in a loop or on a send that never completes gets the
/// service restarted instead of looking healthy.
static LAST_TICK_S: AtomicI64 = AtomicI64::new(0);

/// How long ago the rules stage last ticked (it ticks every second while it runs);
/// `None` before its first tick.
pub fn since_last_tick() -> Option<Duration> {
    let at = LAST_TICK_S.load(Ordering::Relaxed);
    (at > 0).then(|| Duration::from_secs((now_ns() / 1_000_000_000 - at).max(0) as u64))
}

async fn tick(engine: &mut Engine, out: &mut Outputs) {
    let now = now_ns();
    LAST_TICK_S.store(now / 1_000_000_000, Ordering::Relaxed);
    let mut events = Vec::new();
    engine.tick(now, &mut events);
    out.emit(engine, events).await;
    let released = engine.release_silenced(now);
    if !released.is_empty() {
        tracing::info!(
            alerts = released.len(),
            "silence ended: sending alerts still firing"
        );
        out.alert(&released);
    }
}

/// State saves, off the rules task: the state is copied out here (one pass over the states)
/// and serialised, written and fsync'd on a blocking thread, at most one at a time, so a slow
/// disk delays the next save, never a sample.
#[derive(Default)]
struct Saver {
    in_flight: Option<tokio::task::JoinHandle<()>>,
}

impl Saver {
    fn start(&mut self, engine: &Engine, open: &OpenAlerts) {
        let Some(path) = engine.state_file().map(std::path::Path::to_path_buf) else {
            return;
        };
        let previous = self.in_flight.take();
        if previous.as_ref().is_some_and(|h| !h.is_finished()) {
            metrics::counter!("sitewatch_rules_state_saves_skipped_total").increment(1);
            tracing::warn!(path = %path.display(), "rules state: the previous save is still writing; this one waits for the next interval");
            self.in_flight = previous;
            return;
        }
        let started = std::time::Instant::now();
        let snapshot = engine.state_snapshot().with_open_alerts(open.saved());
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            match snapshot.write(&path) {
                Ok(n) => {
                    metrics::histogram!("sitewatch_rules_state_save_seconds")
                        .record(started.elapsed().as_secs_f64());
                    tracing::debug!(states = n, path = %path.display(), "rules state saved");
                }
                Err(e) => {
                    metrics::counter!("sitewatch_rules_state_errors_total", "op" => "save")
                        .increment(1);
                    tracing::error!(error = %e, "rules state not saved");
                }
            }
        }));
    }

    /// Waits for a save in flight (shutdown).
    async fn finish(&mut self) {
        if let Some(h) = self.in_flight.take() {
            let _ = h.await;
        }
    }
}

/// The next handover command; never without a link.
async fn next_command(commands: &mut Option<mpsc::Receiver<UnitCommand>>) -> Option<UnitCommand> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A unit's checkpoint: its series' state and its open alerts' desk entries.
fn checkpoint(engine: &Engine, open: &OpenAlerts, unit: &str) -> Vec<u8> {
    let desk = open.saved_where(|ev| engine.unit_of(&ev.series).is_some_and(|u| **u == *unit));
    engine.unit_snapshot(unit).with_open_alerts(desk).to_bytes()
}

async fn process(engine: &mut Engine, out: &mut Outputs, batch: Batch) {
    metrics::counter!("sitewatch_samples_in_total").increment(batch.samples.len() as u64);
    let judged = out
        .held
        .as_ref()
        .is_none_or(|h| h.judges(batch.unit.as_ref()));
    if judged {
        let mut events = Vec::new();
        for s in &batch.samples {
            engine.observe_from(s, batch.unit.as_ref(), &mut events);
        }
        out.emit(engine, events).await;
    } else {
        // Another member judges this unit (or will, from its checkpoint): stored only.
        metrics::counter!("sitewatch_cluster_samples_unjudged_total")
            .increment(batch.samples.len() as u64);
    }
    out.sinks.send_series(batch).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Ack;
    use crate::model::EventState;
    use crate::pipeline::SinkInputs;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    const RULES: &str = r#"
[[rule]]
name = "hot"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { warning = 27.0, critical = 32.0 }
message = "{rack} at {value}"
"#;

    /// The rule change in a notice to the router.
    fn change(notice: AlertNotice) -> Event {
        match notice {
            AlertNotice::Change(ev) => ev,
            other => panic!("expected a rule change, got {other:?}"),
        }
    }

    use crate::test_support::{rack_sample as sample, ruleset};

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("stage did not answer within 5 s")
    }

    #[tokio::test]
    async fn events_precede_their_batch_and_acks_travel_unchanged() {
        let (tx, rx) = mpsc::channel(8);
        let (port, inputs) = SinkInputs::channel(8);
        let SinkInputs {
            series: mut series_rx,
            events: mut events_rx,
        } = inputs;
        let sinks = SinkSenders::from_ports(vec![port]);
        let (alerts_tx, mut alerts_rx) = mpsc::channel(1);
        let stage = tokio::spawn(run(
            Engine::new(ruleset(RULES)),
            rx,
            sinks,
            Some(alerts_tx),
            CancellationToken::new(),
        ));
        let acked = Arc::new(AtomicUsize::new(0));
        let a = acked.clone();
        // Two series breach in one batch; the alert queue holds one, the second is dropped
        // without stalling the pipeline.
        let batch = Batch::new(vec![
            sample("r1", 1, 20.0),
            sample("r1", 2, 33.0),
            sample("r2", 2, 28.0),
        ])
        .with_ack(Ack::new(move |d| {
            if !d.releases() {
                return;
            }
            a.fetch_add(1, Ordering::SeqCst);
        }));
        tx.send(batch).await.unwrap();
        // The two alerts now open come first as points of the alerts measurement, then the
        // batch with its acks.
        let open = within(series_rx.recv()).await.unwrap();
        assert_eq!(open.samples.len(), 2);
        assert!(open
            .samples
            .iter()
            .all(|s| &*s.series.measurement == "alerts"));
        assert!(open.acks.is_empty());
        let mut forwarded = within(series_rx.recv()).await.unwrap();
        // The events were sent before the batch, so they are already waiting.
        let events = events_rx.try_recv().expect("events before the samples");
        assert_eq!(events.len(), 2);
        let e0 = &events[0].event;
        assert_eq!(&*e0.rule, "hot");
        assert_eq!(e0.severity, crate::model::Severity::Critical);
        assert_eq!(e0.series.tags.get("rack"), Some("r1"));
        assert_eq!(e0.message, "r1 at 33");
        assert_eq!(e0.timestamp_ns, 2);
        assert!(!events[0].silenced);
        assert_eq!(forwarded.samples.len(), 3);
        assert_eq!(forwarded.acks.len(), 1);
        assert_eq!(acked.load(Ordering::SeqCst), 0);
        forwarded.complete_acks();
        assert_eq!(acked.load(Ordering::SeqCst), 1);
        let alert = change(alerts_rx.try_recv().unwrap());
        assert_eq!(alert.state, EventState::Firing);
        assert!(
            alerts_rx.try_recv().is_err(),
            "second alert dropped on a full queue"
        );

        // A batch without events is forwarded alone.
        tx.send(Batch::new(vec![sample("r3", 3, 20.0)]))
            .await
            .unwrap();
        let b = within(series_rx.recv()).await.unwrap();
        assert_eq!(b.samples.len(), 1);
        assert!(events_rx.try_recv().is_err());

        // Collectors done: the stage ends and drops its senders, so writers see the end.
        drop(tx);
        within(stage).await.unwrap();
        assert!(within(series_rx.recv()).await.is_none());
        assert!(within(events_rx.recv()).await.is_none());
    }

    /// The watchdog's heartbeat: a running stage ticks every second.
    #[tokio::test]
    async fn a_running_stage_keeps_its_tick_fresh() {
        let (_tx, rx) = mpsc::channel::<Batch>(1);
        let (port, _inputs) = SinkInputs::channel(1);
        let shutdown = CancellationToken::new();
        let stage = tokio::spawn(run(
            Engine::new(ruleset(RULES)),
            rx,
            SinkSenders::from_ports(vec![port]),
            None,
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let age = since_last_tick().expect("the stage has ticked");
        assert!(age <= Duration::from_secs(2), "{age:?}");
        shutdown.cancel();
        stage.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_forwards_everything_already_received() {
        let (tx, rx) = mpsc::channel(16);
        let (port, inputs) = SinkInputs::channel(16);
        let SinkInputs {
            series: mut series_rx,
            events: mut events_rx,
        } = inputs;
        let sinks = SinkSenders::from_ports(vec![port]);
        let shutdown = CancellationToken::new();
        for i in 0..10 {
            tx.send(Batch::new(vec![sample("r1", i, 20.0 + i as f64)]))
                .await
                .unwrap();
        }
        shutdown.cancel();
        // Cancelled before it starts: the queued batches must still all come out.
        within(run(Engine::new(ruleset(RULES)), rx, sinks, None, shutdown)).await;
        let mut n = 0;
        while let Some(b) = series_rx.recv().await {
            n += b
                .samples
                .iter()
                .filter(|s| &*s.series.measurement != "alerts")
                .count();
        }
        assert_eq!(n, 10);
        let mut states = Vec::new();
        while let Some(b) = events_rx.recv().await {
            for r in b {
                states.push(r.event.severity.to_string());
            }
        }
        assert_eq!(states, vec!["warning"], "27 < 28 triggers warning once");
        // The collectors' side sees the stage is gone.
        assert!(tx.send(Batch::default()).await.is_err());
    }

    /// A stage with a handover link: its batch sender, the handover's port, the router's
    /// notices and the sink's series input (drained by the caller).
    fn cluster_stage() -> (
        mpsc::Sender<Batch>,
        crate::rules::handover::UnitPort,
        mpsc::Receiver<AlertNotice>,
        SinkInputs,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(8);
        let (port, inputs) = SinkInputs::channel(64);
        let (alerts_tx, alerts_rx) = mpsc::channel(8);
        let (unit_port, link) = crate::rules::handover::link();
        let stage = tokio::spawn(run_with_reload(
            Engine::new(ruleset(RULES)),
            rx,
            SinkSenders::from_ports(vec![port]),
            Some(alerts_tx),
            StageInputs {
                reload: mpsc::channel(1).1,
                acks: mpsc::channel(1).1,
                units: Some(link),
            },
            CancellationToken::new(),
        ));
        (tx, unit_port, alerts_rx, inputs, stage)
    }

    #[tokio::test]
    async fn a_firing_alarm_is_handed_over_without_a_second_notification() {
        use crate::rules::handover::UnitCommand;
        let unit: Arc<str> = "mqtt:hall-a".into();
        let batch =
            |v: f64, ts: i64| Batch::new(vec![sample("r1", ts, v)]).for_unit(Some(unit.clone()));
        let restore = |port: &crate::rules::handover::UnitPort, checkpoint| {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let commands = port.commands.clone();
            let unit = unit.clone();
            async move {
                commands
                    .send(UnitCommand::Restore {
                        unit,
                        checkpoint,
                        reply,
                    })
                    .await
                    .unwrap();
                within(answer).await.unwrap()
            }
        };

        let (tx_a, port_a, mut alerts_a, mut sink_a, _stage_a) = cluster_stage();
        // Not held yet: stored, not judged.
        tx_a.send(batch(40.0, 1)).await.unwrap();
        within(sink_a.series.recv()).await.unwrap();
        assert!(alerts_a.try_recv().is_err());
        assert_eq!(restore(&port_a, None).await, Ok(0));
        tx_a.send(batch(40.0, 2)).await.unwrap();
        assert!(
            matches!(within(alerts_a.recv()).await.unwrap(), AlertNotice::Change(ev) if ev.state == EventState::Firing)
        );

        let (reply, answer) = tokio::sync::oneshot::channel();
        port_a
            .commands
            .send(UnitCommand::Release {
                unit: unit.clone(),
                reply,
            })
            .await
            .unwrap();
        let bytes = within(answer).await.unwrap();
        assert!(matches!(
            within(alerts_a.recv()).await.unwrap(),
            AlertNotice::Forgotten(_)
        ));
        // Its last samples after the release are not judged there any more.
        tx_a.send(batch(10.0, 3)).await.unwrap();

        let (tx_b, port_b, mut alerts_b, _sink_b, _stage_b) = cluster_stage();
        assert!(restore(&port_b, Some(bytes)).await.unwrap() >= 1);
        let adopted = within(alerts_b.recv()).await.unwrap();
        assert!(
            matches!(&adopted, AlertNotice::Adopted(ev, None) if ev.state == EventState::Firing && ev.started_ns == 2),
            "{adopted:?}"
        );
        tx_b.send(batch(41.0, 4)).await.unwrap();
        tx_b.send(batch(10.0, 5)).await.unwrap();
        let resolved = within(alerts_b.recv()).await.unwrap();
        assert!(
            matches!(&resolved, AlertNotice::Change(ev) if ev.state == EventState::Resolved),
            "{resolved:?}"
        );
        assert!(
            alerts_a.try_recv().is_err(),
            "the first member says nothing more"
        );
    }

    #[tokio::test]
    async fn reload_resolves_alarms_of_removed_rules() {
        let (tx, rx) = mpsc::channel(8);
        let (port, inputs) = SinkInputs::channel(8);
        let SinkInputs {
            series: mut series_rx,
            events: mut events_rx,
        } = inputs;
        let sinks = SinkSenders::from_ports(vec![port]);
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let stage = tokio::spawn(run_with_reload(
            Engine::new(ruleset(RULES)),
            rx,
            sinks,
            None,
            StageInputs {
                reload: reload_rx,
                acks: mpsc::channel(1).1,
                units: None,
            },
            CancellationToken::new(),
        ));
        tx.send(Batch::new(vec![sample("r1", 1, 30.0)]))
            .await
            .unwrap();
        within(series_rx.recv()).await.unwrap();
        let firing = within(events_rx.recv()).await.unwrap();
        assert_eq!(firing[0].event.state, EventState::Firing);

        reload_tx.send(RuleSet::default()).await.unwrap();
        let resolved = within(events_rx.recv()).await.unwrap();
        assert_eq!(resolved[0].event.state, EventState::Resolved);
        assert_eq!(&*resolved[0].event.rule, "hot");

        // With no rules, samples still flow.
        tx.send(Batch::new(vec![sample("r1", 2, 40.0)]))
            .await
            .unwrap();
        assert_eq!(within(series_rx.recv()).await.unwrap().samples.len(), 1);
        drop(reload_tx);
        drop(tx);
        within(stage).await.unwrap();
        assert!(events_rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn silenced_events_are_written_marked_and_not_sent() {
        let text = format!(
            "{RULES}\n[[silence]]\ncomment = \"r1 maintenance\"\nmatch = {{ rack = \"r1\" }}\nstart = \"2000-01-01T00:00:00Z\"\nend = \"2100-01-01T00:00:00Z\"\n"
        );
        let f = crate::rules::config::parse_rule_file(&text, Path::new("t.toml")).unwrap();
        let set = RuleSet::with_silences(f.rules, f.silences).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (port, inputs) = SinkInputs::channel(8);
        let SinkInputs {
            series: mut series_rx,
            events: mut events_rx,
        } = inputs;
        let sinks = SinkSenders::from_ports(vec![port]);
        let (alerts_tx, mut alerts_rx) = mpsc::channel(8);
        let stage = tokio::spawn(run(
            Engine::new(set),
            rx,
            sinks,
            Some(alerts_tx),
            CancellationToken::new(),
        ));
        tx.send(Batch::new(vec![
            sample("r1", 1, 30.0),
            sample("r2", 1, 30.0),
        ]))
        .await
        .unwrap();
        within(series_rx.recv()).await.unwrap();
        let events = within(events_rx.recv()).await.unwrap();
        let marks: Vec<_> = events
            .iter()
            .map(|r| {
                (
                    r.event.series.tags.get("rack").unwrap().to_string(),
                    r.silenced,
                )
            })
            .collect();
        assert_eq!(
            marks,
            vec![("r1".to_string(), true), ("r2".to_string(), false)]
        );
        let alert = change(within(alerts_rx.recv()).await.unwrap());
        assert_eq!(alert.series.tags.get("rack"), Some("r2"));
        assert!(alerts_rx.try_recv().is_err(), "r1 is silenced");
        drop(tx);
        within(stage).await.unwrap();
    }

    #[tokio::test]
    async fn timer_fires_stale_and_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("rules-state.json");
        let text = "[[rule]]\nname = \"leak\"\nmeasurement = \"env\"\nfield = \"t\"\nabove = { critical = 0.5 }\nstale_after = \"1s\"\nstale_severity = \"critical\"\n";
        let mut engine = Engine::new(ruleset(text));
        engine.set_state_file(Some(state.clone()));
        let (tx, rx) = mpsc::channel(8);
        let (port, inputs) = SinkInputs::channel(8);
        let SinkInputs {
            series: mut series_rx,
            events: mut events_rx,
        } = inputs;
        let sinks = SinkSenders::from_ports(vec![port]);
        let (alerts_tx, mut alerts_rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let stage = tokio::spawn(run(engine, rx, sinks, Some(alerts_tx), stop.clone()));
        // A dead leak sensor: one dry reading, then nothing.
        tx.send(Batch::new(vec![sample("r1", crate::model::now_ns(), 0.0)]))
            .await
            .unwrap();
        within(series_rx.recv()).await.unwrap();
        let stale = change(within(alerts_rx.recv()).await.unwrap());
        assert_eq!(&*stale.rule, "leak:stale");
        assert_eq!(stale.severity, crate::model::Severity::Critical);
        let written = within(events_rx.recv()).await.unwrap();
        assert_eq!(&*written[0].event.rule, "leak:stale");
        stop.cancel();
        within(stage).await.unwrap();
        assert!(state.exists(), "state saved on shutdown");

        // Restart: the open alert is re-announced to receivers, not written again.
        let cfg: crate::rules::RulesConfig =
            toml::from_str("state_file = \"rules-state.json\"").unwrap();
        let engine =
            crate::rules::reload::prepare_engine(ruleset(text), Some(&cfg), dir.path(), true);
        assert_eq!(engine.firing_count(), 1);
        let (_tx, rx) = mpsc::channel(8);
        let (port, inputs) = SinkInputs::channel(8);
        let SinkInputs {
            series: _series_rx,
            events: mut events_rx,
        } = inputs;
        let sinks = SinkSenders::from_ports(vec![port]);
        let (alerts_tx, mut alerts_rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let stage = tokio::spawn(run(engine, rx, sinks, Some(alerts_tx), stop.clone()));
        let again = change(within(alerts_rx.recv()).await.unwrap());
        assert_eq!(&*again.rule, "leak:stale");
        assert_eq!(again.started_ns, stale.started_ns);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            events_rx.try_recv().is_err(),
            "no new event after a restart"
        );
        assert!(alerts_rx.try_recv().is_err(), "announced once");
        stop.cancel();
        within(stage).await.unwrap();
    }

    #[test]
    fn evaluate_batch_runs_samples_in_order() {
        let mut engine = Engine::new(ruleset(RULES));
        let events = evaluate_batch(
            &mut engine,
            &[
                sample("r1", 1, 28.0),
                sample("r1", 2, 33.0),
                sample("r1", 3, 10.0),
            ],
        );
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.severity.as_str(), e.state.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("warning", "firing"),
                ("critical", "firing"),
                ("critical", "resolved")
            ]
        );
    }
}
