//! The polling schedule every polled collector shares (SNMP targets, Modbus devices): one
//! task per device, so a slow or dead device only delays itself; a semaphore shared by the
//! collector's devices bounds polls in flight; start times spread across the interval by a
//! stable hash of the device name, so a restart does not send every poll at one instant; and
//! a poll that outlasts its interval skips (and counts) the missed ticks instead of
//! overlapping. A device going down or coming back is logged here, once per transition
//! (a dead device polled every 10 s must not write a warning every 10 s).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cluster::UnitGate;
use crate::model::Sample;
use crate::pipeline::{Batch, BatchSender};

/// What one poll of one device produced.
#[derive(Debug, Default)]
pub struct PollResult {
    /// Every sample of the poll, including the collector's health row (`snmp_poll`, ...).
    pub samples: Vec<Sample>,
    /// Whether the device answered.
    pub up: bool,
    /// Why it did not, for the one warning logged when it goes down.
    pub error: Option<String>,
}

/// One device's place in the schedule.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Which collector polls it (`SNMP`, `Modbus`), for the log lines.
    pub collector: &'static str,
    /// The device name (the `device` tag): logs and the start offset.
    pub device: Arc<str>,
    /// Where it is polled (`host:port`), for the log lines.
    pub address: Arc<str>,
    pub interval: Duration,
    /// The collector's poll counter, e.g. `sitewatch_snmp_polls_total`; missed ticks are
    /// counted on it with `result="skipped"`, ticks of a device another cluster member owns
    /// with `result="not_owner"`.
    pub polls_metric: &'static str,
    /// Cluster mode: the device's unit. Polled only while this member owns it, and at once
    /// when it becomes its own (a taken-over device must not wait for its next tick).
    pub gate: Option<UnitGate>,
}

/// One device's poll, as the schedule calls it: the poller keeps whatever state it needs
/// between polls (counters for rates, a connection, detected profiles).
pub trait DevicePoller: Send {
    fn poll(&mut self) -> impl Future<Output = PollResult> + Send;
}

/// Stable per-name offset in `[0, interval)`, so schedules survive restarts and spread out.
pub fn start_offset(name: &str, interval: Duration) -> Duration {
    let h = super::shard::fnv1a(name.as_bytes());
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h % ms)
}

/// Polls one device every `slot.interval` until `shutdown` or until the channel closes.
/// `on_result(previous_up, up)` is called after each poll (status board transitions).
pub async fn run_device(
    slot: Slot,
    sem: Arc<Semaphore>,
    tx: BatchSender,
    shutdown: CancellationToken,
    mut device: impl DevicePoller,
    mut on_result: impl FnMut(Option<bool>, bool),
) {
    let mut gate = slot.gate.clone();
    let unit = gate.as_ref().map(UnitGate::unit_arc);
    let mut gained_at_start = false;
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(start_offset(&slot.device, slot.interval)) => {}
        _ = gained(&mut gate) => gained_at_start = true,
    }
    let mut ticker = tokio::time::interval(slot.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_up: Option<bool> = None;
    let mut availability = Availability::default();
    loop {
        if !std::mem::take(&mut gained_at_start) {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                // Taken over: poll now, then every interval from now.
                _ = gained(&mut gate) => ticker.reset(),
            }
        } else {
            ticker.reset();
        }
        if let Some(g) = &mut gate {
            if !g.owns() {
                metrics::counter!(slot.polls_metric, "result" => "not_owner").increment(1);
                continue;
            }
        }
        let started = Instant::now();
        // A release of the unit waits for this poll's samples to be handed downstream.
        let _running = gate.as_ref().map(UnitGate::running);
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = device.poll() => r,
        };
        drop(permit);
        availability.observe(&slot, &result);
        on_result(last_up, result.up);
        last_up = Some(result.up);
        if !result.samples.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = tx.send(Batch::new(result.samples).for_unit(unit.clone())) => {
                    if sent.is_err() {
                        tracing::warn!(device = %slot.device, "sample channel closed; device task ends");
                        return;
                    }
                }
            }
        }
        let took = started.elapsed();
        if took >= slot.interval {
            let missed = (took.as_nanos() / slot.interval.as_nanos().max(1)) as u64;
            metrics::counter!(slot.polls_metric, "result" => "skipped").increment(missed);
            tracing::warn!(
                device = %slot.device,
                took_s = took.as_secs_f64(),
                interval_s = slot.interval.as_secs_f64(),
                missed,
                "poll outlasted its interval; skipped the overlapping polls"
            );
        }
    }
}

/// Resolves when the device's unit becomes this member's; never without a gate.
async fn gained(gate: &mut Option<UnitGate>) {
    match gate {
        Some(g) => g.gained().await,
        None => std::future::pending().await,
    }
}

/// A device's up/down state as the logs tell it: one warning when it stops answering (also
/// when it never answered since start), one info line when it answers again with how long
/// it was down; the failed polls in between are debug lines.
#[derive(Debug, Default)]
struct Availability {
    /// None until the first poll.
    up: Option<bool>,
    down_since: Option<Instant>,
    failed_polls: u64,
}

impl Availability {
    fn observe(&mut self, slot: &Slot, result: &PollResult) {
        let error = result.error.as_deref().unwrap_or("no answer");
        match (self.up, result.up) {
            (Some(false), false) => {
                self.failed_polls += 1;
                tracing::debug!(
                    collector = slot.collector, device = %slot.device, address = %slot.address,
                    error, failed_polls = self.failed_polls, "device still down"
                );
            }
            (_, false) => {
                self.down_since = Some(Instant::now());
                self.failed_polls = 1;
                tracing::warn!(
                    collector = slot.collector, device = %slot.device, address = %slot.address,
                    error, first_poll = self.up.is_none(),
                    "device down: it does not answer its polls (polling goes on; one line \
                     when it is back)"
                );
            }
            (Some(false), true) => {
                let down_for = self
                    .down_since
                    .take()
                    .map(|t| t.elapsed())
                    .unwrap_or_default();
                tracing::info!(
                    collector = slot.collector, device = %slot.device, address = %slot.address,
                    down_for_s = down_for.as_secs_f64(), failed_polls = self.failed_polls,
                    "device up: it answers again"
                );
                self.failed_polls = 0;
            }
            (_, true) => {}
        }
        self.up = Some(result.up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn offsets_are_stable_and_inside_the_interval() {
        let i = Duration::from_secs(10);
        assert_eq!(start_offset("ups-1", i), start_offset("ups-1", i));
        for name in ["a", "ups-1", "pdu-a-17", ""] {
            assert!(start_offset(name, i) < i);
        }
    }

    /// Up on even polls, down on odd ones; one sample each.
    struct Counting(Arc<AtomicUsize>);

    impl DevicePoller for Counting {
        async fn poll(&mut self) -> PollResult {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            PollResult {
                samples: vec![Sample::new(
                    crate::model::SeriesKey::new("m", crate::model::TagSet::empty()),
                    n as i64,
                )],
                up: n % 2 == 0,
                error: (n % 2 == 1).then(|| "timeout".to_string()),
            }
        }
    }

    #[tokio::test]
    async fn polls_on_schedule_and_reports_transitions() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let stop = CancellationToken::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (p, s) = (polls.clone(), seen.clone());
        let task = tokio::spawn(run_device(
            Slot {
                collector: "test",
                device: "dev".into(),
                address: "127.0.0.1:1".into(),
                interval: Duration::from_millis(20),
                polls_metric: "test_polls_total",
                gate: None,
            },
            Arc::new(Semaphore::new(1)),
            tx,
            stop.clone(),
            Counting(p),
            move |before, now| s.lock().unwrap().push((before, now)),
        ));
        for _ in 0..3 {
            rx.recv().await.expect("a batch per poll");
        }
        stop.cancel();
        task.await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[..3],
            [(None, true), (Some(true), false), (Some(false), true)]
        );
    }
}
