//! The polling schedule every polled collector shares (SNMP targets, Modbus devices): one
//! task per device, so a slow or dead device only delays itself; a semaphore shared by the
//! collector's devices bounds polls in flight; start times spread across the interval by a
//! stable hash of the device name, so a restart does not send every poll at one instant; and
//! a poll that outlasts its interval skips (and counts) the missed ticks instead of
//! overlapping.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::model::Sample;
use crate::pipeline::{Batch, BatchSender};

/// What one poll of one device produced.
#[derive(Debug, Default)]
pub struct PollResult {
    /// Every sample of the poll, including the collector's health row (`snmp_poll`, ...).
    pub samples: Vec<Sample>,
    /// Whether the device answered.
    pub up: bool,
}

/// One device's place in the schedule.
#[derive(Clone, Debug)]
pub struct Slot {
    /// The device name (the `device` tag): logs and the start offset.
    pub device: Arc<str>,
    pub interval: Duration,
    /// The collector's poll counter, e.g. `sitewatch_snmp_polls_total`; missed ticks are
    /// counted on it with `result="skipped"`.
    pub polls_metric: &'static str,
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
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(start_offset(&slot.device, slot.interval)) => {}
    }
    let mut ticker = tokio::time::interval(slot.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_up: Option<bool> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = device.poll() => r,
        };
        drop(permit);
        on_result(last_up, result.up);
        last_up = Some(result.up);
        if !result.samples.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = tx.send(Batch::new(result.samples)) => {
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
                device: "dev".into(),
                interval: Duration::from_millis(20),
                polls_metric: "test_polls_total",
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
