//! The polling schedule: one task per target, `sitewatch once`, and [`TargetPoller`].
//! What one poll does is in [`super::poll`].
//!
//! Each target has its own task on the shared schedule ([`crate::collect::schedule`]): a
//! slow or dead device only delays itself, `concurrency` bounds polls in flight, start times
//! spread across the interval, and a poll that outlasts its interval skips (and counts,
//! `result="skipped"`) the missed ticks instead of overlapping.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::assignment::snmp_unit;
use crate::cluster::{Ownership, UnitGate};
use crate::collect::schedule::{run_device, DevicePoller, PollResult, Slot};
use crate::model::{now_ns, FieldValue, Sample, SeriesKey, TagSet};
use crate::pipeline::BatchSender;

use super::config::{SnmpConfig, TargetConfig};
use super::poll::{build_target, poll_target, TargetRt, TargetState, POLL_MEASUREMENT};
use super::profile::ProfileSet;
use super::trap::TrapListener;
use super::SnmpError;

/// Runs the poller until `shutdown`. Misconfigured targets are logged and skipped (config
/// validation normally catches them first); every other target keeps polling.
///
/// With `[snmp.traps]` set, the trap listener is bound first. If it cannot bind, that is
/// logged as an error (and `sitewatch_snmp_trap_listener_up` stays 0) and polling goes on:
/// losing graphs because a trap port is taken would be worse. A caller that wants a bind
/// failure to stop startup binds with [`TrapListener::bind`] and calls [`run_with_traps`].
pub async fn run(
    cfg: SnmpConfig,
    profiles: ProfileSet,
    tx: BatchSender,
    shutdown: CancellationToken,
) {
    let traps = match &cfg.traps {
        Some(tc) => match TrapListener::bind(tc, &cfg.targets).await {
            Ok(l) => Some(l),
            Err(e) => {
                metrics::gauge!("sitewatch_snmp_trap_listener_up").set(0.0);
                tracing::error!(error = %e, "SNMP trap listener NOT running: traps are not received");
                None
            }
        },
        None => None,
    };
    run_with_traps(cfg, profiles, traps, None, tx, shutdown).await;
}

/// [`run`] with an already bound trap listener (or none). In cluster mode (`ownership`),
/// each target is polled only while this member owns its unit (`snmp:<name>`) and traps
/// are recorded only by the owner of their source.
pub async fn run_with_traps(
    cfg: SnmpConfig,
    profiles: ProfileSet,
    traps: Option<TrapListener>,
    ownership: Option<Ownership>,
    tx: BatchSender,
    shutdown: CancellationToken,
) {
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let has_listener = traps.is_some();
    if let Some(l) = traps {
        let l = match &ownership {
            Some(o) => l.with_ownership(o.clone()),
            None => l,
        };
        tasks.spawn(l.run(tx.clone(), shutdown.clone()));
    }
    for result in [
        "ok",
        "timeout",
        "error",
        "skipped",
        "config_error",
        "not_owner",
    ] {
        metrics::counter!("sitewatch_snmp_polls_total", "result" => result).increment(0);
    }
    for t in &cfg.targets {
        match build_target(&cfg, t, &profiles) {
            Ok(rt) => {
                let gate = ownership.as_ref().map(|o| o.gate(snmp_unit(&t.name)));
                tasks.spawn(target_loop(
                    Arc::new(rt),
                    gate,
                    sem.clone(),
                    tx.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                metrics::counter!("sitewatch_snmp_polls_total", "result" => "config_error")
                    .increment(1);
                tracing::error!(device = %t.name, error = %e, "SNMP target not polled");
            }
        }
    }
    let targets = tasks.len() - usize::from(has_listener);
    crate::status::set_polled("snmp", targets);
    tracing::info!(targets, "SNMP poller started");
    while tasks.join_next().await.is_some() {}
    tracing::info!("SNMP poller stopped");
}

/// One target on the shared schedule, with its state between polls.
struct ScheduledTarget {
    rt: Arc<TargetRt>,
    state: TargetState,
}

impl DevicePoller for ScheduledTarget {
    async fn poll(&mut self) -> PollResult {
        let result = poll_target(&self.rt, &mut self.state).await;
        PollResult {
            up: result.error.is_none(),
            error: result.error.map(|e| e.to_string()),
            samples: result.samples,
        }
    }
}

async fn target_loop(
    rt: Arc<TargetRt>,
    gate: Option<UnitGate>,
    sem: Arc<Semaphore>,
    tx: BatchSender,
    shutdown: CancellationToken,
) {
    let slot = Slot {
        collector: "SNMP",
        device: rt.ep.name.as_str().into(),
        address: format!("{}:{}", rt.ep.host, rt.ep.port).into(),
        interval: rt.interval,
        polls_metric: "sitewatch_snmp_polls_total",
        gate,
    };
    let device = rt.ep.name.clone();
    // At 0 from the start, so "no failed polls" is a value and not a missing series.
    for result in ["ok", "timeout", "error"] {
        metrics::counter!("sitewatch_snmp_target_polls_total", "device" => device.clone(), "result" => result)
            .increment(0);
    }
    let target = ScheduledTarget {
        rt,
        state: TargetState::default(),
    };
    run_device(slot, sem, tx, shutdown, target, move |before, up| {
        crate::status::device_result("snmp", before, up);
        let up_value = if up { 1.0 } else { 0.0 };
        metrics::gauge!("sitewatch_snmp_target_up", "device" => device.clone()).set(up_value);
    })
    .await;
}

/// Polls every target once (no rates: they need two polls), for `sitewatch once`.
pub async fn poll_once(cfg: &SnmpConfig, profiles: &ProfileSet) -> Vec<Sample> {
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut out = Vec::new();
    for t in &cfg.targets {
        match build_target(cfg, t, profiles) {
            Ok(rt) => {
                let sem = sem.clone();
                tasks.spawn(async move {
                    let _permit = sem.acquire_owned().await.ok();
                    let mut st = TargetState::default();
                    let result = poll_target(&rt, &mut st).await;
                    if let Some(e) = &result.error {
                        tracing::warn!(device = %rt.ep.name, error = %e, "SNMP poll failed");
                    }
                    result.samples
                });
            }
            Err(e) => {
                tracing::error!(device = %t.name, error = %e, "SNMP target not polled");
                out.push(
                    Sample::new(
                        SeriesKey::new(
                            POLL_MEASUREMENT,
                            TagSet::new([("device", t.name.as_str())]),
                        ),
                        now_ns(),
                    )
                    .with_field("up", FieldValue::Bool(false))
                    .with_field("error", FieldValue::Str(e.to_string().into())),
                );
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(s) => out.extend(s),
            Err(e) => tracing::error!(error = %e, "SNMP poll task failed"),
        }
    }
    out
}

/// One target polled on demand with the same logic as [`run`] (state kept between calls, so
/// counters give rates from the second call on). For tests and tools.
pub struct TargetPoller {
    rt: TargetRt,
    state: TargetState,
}

impl TargetPoller {
    pub fn new(
        cfg: &SnmpConfig,
        target: &TargetConfig,
        profiles: &ProfileSet,
    ) -> Result<Self, SnmpError> {
        Ok(TargetPoller {
            rt: build_target(cfg, target, profiles)?,
            state: TargetState::default(),
        })
    }

    /// One poll: the profile samples plus the `snmp_poll` sample.
    pub async fn poll(&mut self) -> Vec<Sample> {
        poll_target(&self.rt, &mut self.state).await.samples
    }
}
