//! The polling schedule and what one poll of one device produces.
//!
//! Each target has its own task: a slow or dead device only delays itself. A global
//! semaphore bounds polls in flight (and so sockets and memory, whatever the number of
//! targets). Start times are spread across the interval by a stable hash of the target name,
//! so a restart does not send every poll at the same instant. A poll that outlasts its
//! interval makes the schedule skip (and count) the missed ticks instead of overlapping.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::model::{now_ns, FieldValue, Sample, SeriesKey, TagSet};
use crate::pipeline::{Batch, BatchSender};

use super::client::{Client, Endpoint, ObjectId, Received, SnmpValue};
use super::config::{SnmpConfig, SnmpVersion, TargetConfig};
use super::profile::{
    entity_sensor_type_name, entity_sensor_value, raw_number, ColumnRole, Decoded, Profile,
    ProfileSet, Raw, Table, Transform, ValueSpec, ENT_SENSOR_PRECISION, ENT_SENSOR_SCALE,
    ENT_SENSOR_TYPE, ENT_SENSOR_VALUE,
};
use super::rate::{CounterState, RateOutcome};
use super::trap::TrapListener;
use super::SnmpError;

/// Measurement of the per-poll health sample.
pub const POLL_MEASUREMENT: &str = "snmp_poll";

const SYS_DESCR: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 1, 0];
const SYS_OBJECT_ID: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 2, 0];
const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];

/// What `sitewatch probe` prints.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub sys_object_id: String,
    pub sys_descr: String,
    /// Profiles used (forced, or matched by sysObjectID prefix, most specific first).
    pub profiles: Vec<String>,
    /// Samples of the last poll, including the `snmp_poll` sample.
    pub samples: Vec<Sample>,
    /// Human note, e.g. that rates needed a second poll or no profile matched.
    pub note: Option<String>,
}

/// A target ready to poll: endpoint, schedule, tags, profiles.
struct TargetRt {
    ep: Arc<Endpoint>,
    interval: Duration,
    base_tags: TagSet,
    /// Profiles named in the config.
    fixed_profiles: Vec<Arc<Profile>>,
    /// Set when no profiles are named: auto-detect by sysObjectID on every poll (cheap: it
    /// rides on the first GET, and a swapped device model picks up its new profile).
    auto: Option<ProfileSet>,
}

#[derive(Default)]
struct TargetState {
    counters: CounterState,
    warned_no_profile: bool,
    /// An SNMPv3 conversation kept between polls: its engine ID, boots/time and localized
    /// keys stay valid, so the next poll skips engine discovery (two exchanges and a 1 MB
    /// password hash per key). Costs one open UDP socket per v3 target; dropped after any
    /// failed poll so a rebooted or replaced agent is rediscovered. v1/v2c need no state.
    v3_client: Option<Client>,
}

struct PollResult {
    samples: Vec<Sample>,
    error: Option<SnmpError>,
}

fn build_target(
    cfg: &SnmpConfig,
    t: &TargetConfig,
    profiles: &ProfileSet,
) -> Result<TargetRt, SnmpError> {
    let ep = Endpoint::new(
        t,
        t.timeout.unwrap_or(cfg.timeout),
        t.retries.unwrap_or(cfg.retries),
        t.max_repetitions.unwrap_or(cfg.max_repetitions),
        cfg.max_oids_per_get,
    )?;
    let mut fixed = Vec::new();
    for name in &t.profiles {
        fixed.push(
            profiles
                .get(name)
                .cloned()
                .ok_or_else(|| SnmpError::Config {
                    target: t.name.clone(),
                    message: format!(
                        "unknown profile {name:?}; known: {}",
                        profiles.names().join(", ")
                    ),
                })?,
        );
    }
    let base_tags = TagSet::new(
        t.tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("device", t.name.as_str())]),
    );
    let auto = fixed.is_empty().then(|| profiles.clone());
    Ok(TargetRt {
        ep: Arc::new(ep),
        interval: t.interval.unwrap_or(cfg.interval),
        base_tags,
        fixed_profiles: fixed,
        auto,
    })
}

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
    run_with_traps(cfg, profiles, traps, tx, shutdown).await;
}

/// [`run`] with an already bound trap listener (or none).
pub async fn run_with_traps(
    cfg: SnmpConfig,
    profiles: ProfileSet,
    traps: Option<TrapListener>,
    tx: BatchSender,
    shutdown: CancellationToken,
) {
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let has_listener = traps.is_some();
    if let Some(l) = traps {
        tasks.spawn(l.run(tx.clone(), shutdown.clone()));
    }
    for t in &cfg.targets {
        match build_target(&cfg, t, &profiles) {
            Ok(rt) => {
                tasks.spawn(target_loop(
                    Arc::new(rt),
                    sem.clone(),
                    tx.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                metrics::counter!("sitewatch_snmp_polls_total", "result" => "config_error")
                    .increment(1);
                tracing::error!(target = %t.name, error = %e, "SNMP target not polled");
            }
        }
    }
    tracing::info!(
        targets = tasks.len() - usize::from(has_listener),
        "SNMP poller started"
    );
    while tasks.join_next().await.is_some() {}
    tracing::info!("SNMP poller stopped");
}

/// Stable per-name offset in `[0, interval)`, so schedules survive restarts and spread out.
fn start_offset(name: &str, interval: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h % ms)
}

async fn target_loop(
    rt: Arc<TargetRt>,
    sem: Arc<Semaphore>,
    tx: BatchSender,
    shutdown: CancellationToken,
) {
    let offset = start_offset(&rt.ep.name, rt.interval);
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(offset) => {}
    }
    let mut ticker = tokio::time::interval(rt.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut state = TargetState::default();
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
            r = poll_target(&rt, &mut state) => r,
        };
        drop(permit);
        if !result.samples.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = tx.send(Batch::new(result.samples)) => {
                    if sent.is_err() {
                        tracing::warn!(device = %rt.ep.name, "sample channel closed; SNMP target task ends");
                        return;
                    }
                }
            }
        }
        let took = started.elapsed();
        if took >= rt.interval {
            let missed = (took.as_nanos() / rt.interval.as_nanos().max(1)) as u64;
            metrics::counter!("sitewatch_snmp_polls_total", "result" => "skipped")
                .increment(missed);
            tracing::warn!(
                device = %rt.ep.name,
                took_s = took.as_secs_f64(),
                interval_s = rt.interval.as_secs_f64(),
                missed,
                "SNMP poll outlasted its interval; skipped the overlapping polls"
            );
        }
    }
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
                    poll_target(&rt, &mut st).await.samples
                });
            }
            Err(e) => {
                tracing::error!(target = %t.name, error = %e, "SNMP target not polled");
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

/// Reads sysObjectID and sysDescr, picks profiles (forced, or by sysObjectID prefix), polls.
/// When the profiles have counters, polls a second time one second later so rates appear.
pub async fn probe(
    target: TargetConfig,
    profiles: &ProfileSet,
    force_profile: Option<&str>,
) -> Result<ProbeReport, SnmpError> {
    let defaults = SnmpConfig::default();
    let mut rt = build_target(&defaults, &target, profiles)?;
    let mut client = Client::new(rt.ep.clone());
    let sys = client
        .get(&[
            ObjectId(SYS_OBJECT_ID.to_vec()),
            ObjectId(SYS_DESCR.to_vec()),
        ])
        .await?;
    let sys_oid = sys.iter().find_map(|(o, r)| match &r.value {
        SnmpValue::ObjectId(v) if o.0 == SYS_OBJECT_ID => Some(v.clone()),
        _ => None,
    });
    let sys_descr = sys
        .iter()
        .find(|(o, _)| o.0 == SYS_DESCR)
        .and_then(|(_, r)| super::profile::text_of(&r.value))
        .unwrap_or_default();
    let chosen: Vec<Arc<Profile>> = match force_profile {
        Some(name) => vec![profiles
            .get(name)
            .cloned()
            .ok_or_else(|| SnmpError::Config {
                target: target.name.clone(),
                message: format!(
                    "unknown profile {name:?}; known: {}",
                    profiles.names().join(", ")
                ),
            })?],
        None => sys_oid
            .as_ref()
            .map(|o| profiles.detect(o))
            .unwrap_or_default(),
    };
    rt.fixed_profiles = chosen.clone();
    rt.auto = None;
    let mut state = TargetState::default();
    let mut note = None;
    if chosen.is_empty() {
        note = Some(format!(
            "no profile matches sysObjectID {}; pass --profile NAME (known: {})",
            sys_oid
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            profiles.names().join(", ")
        ));
    }
    let mut result = poll_target(&rt, &mut state).await;
    if chosen.iter().any(|p| p.has_counters()) && result.error.is_none() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        result = poll_target(&rt, &mut state).await;
        note.get_or_insert_with(|| "counters: rates are from two polls one second apart".into());
    }
    if let Some(e) = result.error {
        return Err(e);
    }
    Ok(ProbeReport {
        sys_object_id: sys_oid.map(|o| o.to_string()).unwrap_or_default(),
        sys_descr,
        profiles: chosen.iter().map(|p| p.name.clone()).collect(),
        samples: result.samples,
        note,
    })
}

fn index_string(index: &[u32]) -> String {
    let mut s = String::new();
    for (i, a) in index.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.push_str(&a.to_string());
    }
    s
}

/// Turns a decoded value into fields, feeding counters through the rate state.
fn push_decoded(
    spec: &ValueSpec,
    key: &ObjectId,
    rec: &Received,
    counters: &mut CounterState,
    device: &str,
    fields: &mut Vec<(Arc<str>, FieldValue)>,
) {
    match spec.decode(&rec.value) {
        Decoded::Missing => {}
        Decoded::Undecodable => {
            metrics::counter!("sitewatch_snmp_decode_errors_total", "device" => device.to_string())
                .increment(1);
            tracing::debug!(device, oid = %key, field = %spec.name, value = ?rec.value, "value not decodable as the profile asks; field left out");
        }
        Decoded::Fields(f) => fields.extend(f),
        Decoded::Counter { value, width } => match counters.observe(key, value, rec.at_ns, width) {
            RateOutcome::First => {}
            RateOutcome::Rate(r) | RateOutcome::Wrapped(r) => {
                let v = spec.scale.map_or(r, |s| r * s);
                if v.is_finite() {
                    fields.push((spec.name.clone(), FieldValue::Float(v)));
                }
            }
            RateOutcome::Reset => {
                metrics::counter!("sitewatch_snmp_counter_resets_total").increment(1);
                tracing::info!(device, oid = %key, "counter reset; skipping one interval");
            }
        },
    }
}

async fn poll_target(rt: &TargetRt, state: &mut TargetState) -> PollResult {
    let started = Instant::now();
    let ts = now_ns();
    let mut client = match state.v3_client.take() {
        Some(mut c) => {
            c.varbinds = 0;
            c.requests = 0;
            c
        }
        None => Client::new(rt.ep.clone()),
    };
    let mut samples = Vec::new();
    let res = poll_inner(rt, state, &mut client, ts, &mut samples).await;
    let (requests, varbinds) = (client.requests, client.varbinds);
    if res.is_ok() && rt.ep.version == SnmpVersion::V3 {
        state.v3_client = Some(client);
    }
    let duration = started.elapsed().as_secs_f64();
    let result = match &res {
        Ok(()) => "ok",
        Err(SnmpError::Timeout { .. }) => "timeout",
        Err(_) => "error",
    };
    if res.is_ok() {
        state.counters.end_poll();
    }
    metrics::counter!("sitewatch_snmp_polls_total", "result" => result).increment(1);
    metrics::histogram!("sitewatch_snmp_poll_duration_seconds").record(duration);
    metrics::counter!("sitewatch_snmp_varbinds_total").increment(varbinds);
    // Per device too, so a scrape alone shows which device went silent or slow; one counter
    // per (device, result) and one gauge per device stay cheap at 10,000 targets.
    metrics::counter!(
        "sitewatch_snmp_target_polls_total",
        "device" => rt.ep.name.clone(),
        "result" => result
    )
    .increment(1);
    metrics::gauge!("sitewatch_snmp_target_poll_duration_seconds", "device" => rt.ep.name.clone())
        .set(duration);
    let mut poll = Sample::new(SeriesKey::new(POLL_MEASUREMENT, rt.base_tags.clone()), ts)
        .with_field("up", FieldValue::Bool(res.is_ok()))
        .with_field("duration_s", FieldValue::Float(duration))
        .with_field("varbinds", FieldValue::Int(varbinds as i64))
        .with_field("requests", FieldValue::Int(requests as i64));
    if let Err(e) = &res {
        tracing::warn!(device = %rt.ep.name, error = %e, "SNMP poll failed");
        poll = poll.with_field("error", FieldValue::Str(e.to_string().into()));
    }
    samples.push(poll);
    PollResult {
        samples,
        error: res.err(),
    }
}

async fn poll_inner(
    rt: &TargetRt,
    state: &mut TargetState,
    client: &mut Client,
    ts: i64,
    samples: &mut Vec<Sample>,
) -> Result<(), SnmpError> {
    let device = rt.ep.name.as_str();
    // First request: cheap liveness check, reboot detection and auto-detection in one PDU.
    let sys = client
        .get(&[
            ObjectId(SYS_UPTIME.to_vec()),
            ObjectId(SYS_OBJECT_ID.to_vec()),
        ])
        .await?;
    let mut uptime = None;
    let mut sys_object_id = None;
    for (oid, r) in &sys {
        if oid.0 == SYS_UPTIME {
            uptime = match raw_number(&r.value) {
                Some(Raw::Int(i)) if i >= 0 => u64::try_from(i).ok(),
                _ => None,
            };
        } else if oid.0 == SYS_OBJECT_ID {
            if let SnmpValue::ObjectId(o) = &r.value {
                sys_object_id = Some(o.clone());
            }
        }
    }
    let profiles: Vec<Arc<Profile>> = match (&rt.auto, &sys_object_id) {
        (None, _) => rt.fixed_profiles.clone(),
        (Some(set), Some(o)) => set.detect(o),
        (Some(_), None) => Vec::new(),
    };
    if profiles.is_empty() && !state.warned_no_profile {
        state.warned_no_profile = true;
        tracing::warn!(
            device,
            sys_object_id = %sys_object_id.as_ref().map(ToString::to_string).unwrap_or_default(),
            "no SNMP profile for this device; only its poll health is recorded"
        );
    }
    if state.counters.begin_poll(uptime) {
        metrics::counter!("sitewatch_snmp_counter_resets_total").increment(1);
        tracing::info!(
            device,
            "sysUpTime went backwards (device restarted); counter rates restart"
        );
    }

    // Scalars: one batched GET for all profiles.
    let mut scalar_oids: Vec<ObjectId> = profiles
        .iter()
        .flat_map(|p| p.scalars.iter().map(|s| s.oid.clone()))
        .collect();
    scalar_oids.sort();
    scalar_oids.dedup();
    if !scalar_oids.is_empty() {
        let got: HashMap<ObjectId, Received> =
            client.get(&scalar_oids).await?.into_iter().collect();
        for p in &profiles {
            let mut by_measurement: BTreeMap<Arc<str>, Vec<(Arc<str>, FieldValue)>> =
                BTreeMap::new();
            for s in &p.scalars {
                if let Some(rec) = got.get(&s.oid) {
                    let fields = by_measurement.entry(s.measurement.clone()).or_default();
                    push_decoded(&s.spec, &s.oid, rec, &mut state.counters, device, fields);
                }
            }
            for (m, fields) in by_measurement {
                if !fields.is_empty() {
                    let mut sample = Sample::new(SeriesKey::new(m, rt.base_tags.clone()), ts);
                    sample.fields = fields;
                    samples.push(sample);
                }
            }
        }
    }

    // Tables: one bulk walk per table (its columns, lookups and transform inputs together).
    for p in &profiles {
        for t in &p.tables {
            poll_table(rt, t, client, &mut state.counters, ts, samples).await?;
        }
    }
    Ok(())
}

async fn poll_table(
    rt: &TargetRt,
    t: &Table,
    client: &mut Client,
    counters: &mut CounterState,
    ts: i64,
    samples: &mut Vec<Sample>,
) -> Result<(), SnmpError> {
    let device = rt.ep.name.as_str();
    let mut roots: Vec<ObjectId> = t.columns.iter().map(|c| c.oid.clone()).collect();
    let es_base = roots.len();
    let entity = t.transform == Some(Transform::EntitySensor);
    if entity {
        for sub in [
            ENT_SENSOR_TYPE,
            ENT_SENSOR_SCALE,
            ENT_SENSOR_PRECISION,
            ENT_SENSOR_VALUE,
        ] {
            roots.push(t.oid.child(&[sub]));
        }
    }
    let lookup_base = roots.len();
    for l in &t.lookups {
        roots.push(l.oid.clone());
    }
    let walked = client.walk(&roots).await?;
    let n_row_roots = lookup_base;
    let mut rows: BTreeMap<Vec<u32>, Vec<Option<(ObjectId, Received)>>> = BTreeMap::new();
    let mut lookup_maps: Vec<HashMap<Vec<u32>, SnmpValue>> = vec![HashMap::new(); t.lookups.len()];
    for (root, oid, rec) in walked {
        let Some(index) = oid.suffix_after(&roots[root]).map(<[u32]>::to_vec) else {
            continue;
        };
        if index.is_empty() {
            continue;
        }
        if root < n_row_roots {
            let row = rows.entry(index).or_insert_with(|| vec![None; n_row_roots]);
            row[root] = Some((oid, rec));
        } else {
            lookup_maps[root - lookup_base].insert(index, rec.value);
        }
    }
    for (index, row) in rows {
        let mut tags: Vec<(String, String)> = Vec::new();
        if let Some(it) = &t.index_tag {
            tags.push((it.to_string(), index_string(&index)));
        }
        let mut fields: Vec<(Arc<str>, FieldValue)> = Vec::new();
        for (i, c) in t.columns.iter().enumerate() {
            let Some((oid, rec)) = &row[i] else { continue };
            match c.role {
                ColumnRole::Tag => {
                    if let Some(v) = c.spec.decode_tag(&rec.value) {
                        tags.push((c.spec.name.to_string(), v));
                    }
                }
                ColumnRole::Field => {
                    push_decoded(&c.spec, oid, rec, counters, device, &mut fields);
                }
            }
        }
        for (li, l) in t.lookups.iter().enumerate() {
            let key: Option<Vec<u32>> = match l.index_from {
                None => Some(index.clone()),
                Some(col) => row[col].as_ref().and_then(|(_, r)| match &r.value {
                    SnmpValue::ObjectId(o) => Some(o.0.clone()),
                    v => match raw_number(v) {
                        Some(Raw::Int(i)) => u32::try_from(i).ok().map(|i| vec![i]),
                        _ => None,
                    },
                }),
            };
            if let Some(v) = key
                .and_then(|k| lookup_maps[li].get(&k))
                .and_then(super::profile::text_of)
                .filter(|s| !s.is_empty())
            {
                tags.push((l.tag.to_string(), v));
            }
        }
        if entity {
            let get = |k: usize| -> Option<i64> {
                row[es_base + k]
                    .as_ref()
                    .and_then(|(_, r)| match raw_number(&r.value) {
                        Some(Raw::Int(i)) => i64::try_from(i).ok(),
                        _ => None,
                    })
            };
            if let (Some(ty), Some(sc), Some(pr), Some(val)) = (get(0), get(1), get(2), get(3)) {
                tags.push(("sensor_type".into(), entity_sensor_type_name(ty)));
                if let Some(v) = entity_sensor_value(ty, sc, pr, val) {
                    fields.push(("value".into(), FieldValue::Float(v)));
                }
            }
        }
        if fields.is_empty() {
            continue;
        }
        let tagset = TagSet::new(
            rt.base_tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(tags),
        );
        let mut sample = Sample::new(SeriesKey::new(t.measurement.clone(), tagset), ts);
        sample.fields = fields;
        samples.push(sample);
    }
    Ok(())
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
