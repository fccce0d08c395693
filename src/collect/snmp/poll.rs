//! One poll of one device: which profiles apply, one batched GET for scalars, one bulk walk
//! per table, and the `snmp_poll` health sample. Written against [`MibView`], so a live
//! agent and a recording of it (`sitewatch profile test`) go through the same code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{now_ns, FieldValue, Sample, SeriesKey, TagSet};

use super::client::{Client, Endpoint};
use super::config::{SnmpConfig, SnmpVersion, TargetConfig};
use super::decode::{
    entity_sensor_type_name, entity_sensor_value, raw_number, text_of, Decoded, Raw, ScalarValues,
    ValueSpec,
};
use super::detect::{answered_anchors, choose};
use super::mib_view::MibView;
use super::profile::{
    ColumnRole, Profile, ProfileSet, Table, Transform, ENT_SENSOR_OPER_STATUS,
    ENT_SENSOR_PRECISION, ENT_SENSOR_SCALE, ENT_SENSOR_TYPE, ENT_SENSOR_VALUE,
};
use super::rate::{CounterState, RateOutcome};
use super::value::{ObjectId, Received, SnmpValue};
use super::SnmpError;

/// Measurement of the per-poll health sample.
pub const POLL_MEASUREMENT: &str = "snmp_poll";

pub(crate) const SYS_DESCR: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 1, 0];
pub(crate) const SYS_OBJECT_ID: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 2, 0];
const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];

/// Where one written field came from: what `probe` and `profile test` print beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldOrigin {
    /// The sample's series in line-protocol key form (`ups,device=ups-a1`).
    pub series: String,
    pub field: String,
    pub oid: String,
    pub profile: String,
}

/// A target ready to poll: endpoint, schedule, tags, profiles.
pub(crate) struct TargetRt {
    pub ep: Arc<Endpoint>,
    pub interval: Duration,
    pub base_tags: TagSet,
    /// Profiles named in the config (no detection).
    pub fixed_profiles: Vec<Arc<Profile>>,
    /// Set when no profiles are named: detect on the first poll and whenever the device
    /// says it changed.
    pub auto: Option<ProfileSet>,
    /// Record a [`FieldOrigin`] per field (probe and profile test only: it allocates).
    pub trace: bool,
}

/// The detection result kept between polls.
struct Detected {
    sys_object_id: Option<ObjectId>,
    profiles: Vec<Arc<Profile>>,
}

#[derive(Default)]
pub(crate) struct TargetState {
    pub counters: CounterState,
    detected: Option<Detected>,
    warned_no_profile: bool,
    /// Profiles already warned about for yielding nothing (cleared when they yield again).
    warned_empty: HashSet<String>,
    /// An SNMPv3 conversation kept between polls: its engine ID, boots/time and localized
    /// keys stay valid, so the next poll skips engine discovery (two exchanges and a 1 MB
    /// password hash per key). Costs one open UDP socket per v3 target; dropped after any
    /// failed poll so a rebooted or replaced agent is rediscovered. v1/v2c need no state.
    pub v3_client: Option<Client>,
    pub origins: Vec<FieldOrigin>,
}

pub(crate) struct PollResult {
    pub samples: Vec<Sample>,
    pub error: Option<SnmpError>,
    /// Profiles used in this poll, in order.
    pub profiles: Vec<String>,
    /// Profiles used that produced no value.
    pub empty_profiles: Vec<String>,
}

pub(crate) fn build_target(
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
    let fixed = t
        .profiles
        .iter()
        .map(|name| named_profile(profiles, name, &t.name))
        .collect::<Result<Vec<_>, _>>()?;
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
        trace: false,
    })
}

pub(crate) fn named_profile(
    profiles: &ProfileSet,
    name: &str,
    target: &str,
) -> Result<Arc<Profile>, SnmpError> {
    profiles
        .get(name)
        .cloned()
        .ok_or_else(|| SnmpError::Config {
            target: target.to_string(),
            message: format!(
                "unknown profile {name:?}; known: {}",
                profiles.names().join(", ")
            ),
        })
}

/// One live poll: the profile samples plus the `snmp_poll` sample.
pub(crate) async fn poll_target(rt: &TargetRt, state: &mut TargetState) -> PollResult {
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
    let res = poll_view(rt, state, &mut client, ts, &mut samples).await;
    let (requests, varbinds) = (client.requests, client.varbinds);
    if res.is_ok() && rt.ep.version == SnmpVersion::V3 {
        state.v3_client = Some(client);
    }
    let duration = started.elapsed().as_secs_f64();
    let result = match &res {
        Ok(_) => "ok",
        Err(SnmpError::Timeout { .. }) => "timeout",
        Err(_) => "error",
    };
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
    let health = PollHealth {
        duration_s: Some(duration),
        varbinds: Some(varbinds),
        requests: Some(requests),
    };
    finish(rt, state, ts, res, health, samples)
}

/// The numbers only a live poll has.
pub(crate) struct PollHealth {
    pub duration_s: Option<f64>,
    pub varbinds: Option<u64>,
    pub requests: Option<u64>,
}

/// Turns a poll's outcome into its samples plus `snmp_poll`, with the warnings an operator
/// needs (poll failed, profile matched but yielded nothing).
pub(crate) fn finish(
    rt: &TargetRt,
    state: &mut TargetState,
    ts: i64,
    res: Result<(Vec<String>, Vec<String>), SnmpError>,
    health: PollHealth,
    mut samples: Vec<Sample>,
) -> PollResult {
    if res.is_ok() {
        state.counters.end_poll();
    }
    let mut poll = Sample::new(SeriesKey::new(POLL_MEASUREMENT, rt.base_tags.clone()), ts)
        .with_field("up", FieldValue::Bool(res.is_ok()));
    if let Some(d) = health.duration_s {
        poll = poll.with_field("duration_s", FieldValue::Float(d));
    }
    if let Some(v) = health.varbinds {
        poll = poll.with_field("varbinds", FieldValue::Int(v as i64));
    }
    if let Some(r) = health.requests {
        poll = poll.with_field("requests", FieldValue::Int(r as i64));
    }
    let (profiles, empty_profiles, error) = match res {
        Ok((profiles, empty)) => {
            for name in &empty {
                if state.warned_empty.insert(name.clone()) {
                    tracing::warn!(
                        device = %rt.ep.name,
                        profile = %name,
                        "SNMP profile matched this device but returned no values; check it with `sitewatch probe` (a wrong profile, or a MIB the card does not serve)"
                    );
                }
            }
            state.warned_empty.retain(|n| empty.contains(n));
            if !profiles.is_empty() {
                poll = poll.with_field("profiles", FieldValue::Str(profiles.join(",").into()));
            }
            if !empty.is_empty() {
                poll = poll.with_field("empty_profiles", FieldValue::Str(empty.join(",").into()));
            }
            (profiles, empty, None)
        }
        Err(e) => {
            // Debug: the schedule logs the device going down and coming back, once each.
            tracing::debug!(device = %rt.ep.name, error = %e, "SNMP poll failed");
            poll = poll.with_field("error", FieldValue::Str(e.to_string().into()));
            (Vec::new(), Vec::new(), Some(e))
        }
    };
    samples.push(poll);
    PollResult {
        samples,
        error,
        profiles,
        empty_profiles,
    }
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

/// Where decoded fields go: the sample's field list, plus their origins when tracing.
struct FieldSink {
    fields: Vec<(Arc<str>, FieldValue)>,
    origins: Option<Vec<(Arc<str>, ObjectId)>>,
}

impl FieldSink {
    fn new(trace: bool) -> FieldSink {
        FieldSink {
            fields: Vec::new(),
            origins: trace.then(Vec::new),
        }
    }

    /// Decodes one value into fields, feeding counters through the rate state.
    fn push(
        &mut self,
        counters: &mut CounterState,
        device: &str,
        spec: &ValueSpec,
        key: &ObjectId,
        rec: &Received,
        scalars: &ScalarValues,
    ) {
        let before = self.fields.len();
        match spec.decode(&rec.value, scalars) {
            Decoded::Missing => {}
            Decoded::Undecodable => {
                metrics::counter!("sitewatch_snmp_decode_errors_total", "device" => device.to_string())
                    .increment(1);
                tracing::debug!(device, oid = %key, field = %spec.name, value = ?rec.value, "value not decodable as the profile asks; field left out");
            }
            Decoded::Fields(f) => self.fields.extend(f),
            Decoded::Counter { value, width } => {
                match counters.observe(key, value, rec.at_ns, width) {
                    RateOutcome::First => {}
                    RateOutcome::Rate(r) | RateOutcome::Wrapped(r) => {
                        let v = spec.scaled(r);
                        if v.is_finite() {
                            self.fields.push((spec.name.clone(), FieldValue::Float(v)));
                        }
                    }
                    RateOutcome::Reset => {
                        metrics::counter!("sitewatch_snmp_counter_resets_total").increment(1);
                        tracing::info!(device, oid = %key, "counter reset; skipping one interval");
                    }
                }
            }
        }
        if let Some(o) = &mut self.origins {
            for (name, _) in &self.fields[before..] {
                o.push((name.clone(), key.clone()));
            }
        }
    }

    /// The collected fields as a sample (none if empty), recording origins under its series.
    fn into_sample(
        self,
        series: SeriesKey,
        ts: i64,
        profile: &str,
        origins: &mut Vec<FieldOrigin>,
    ) -> Option<Sample> {
        if self.fields.is_empty() {
            return None;
        }
        if let Some(o) = self.origins {
            let key = series.to_string();
            origins.extend(o.into_iter().map(|(field, oid)| FieldOrigin {
                series: key.clone(),
                field: field.to_string(),
                oid: oid.to_string(),
                profile: profile.to_string(),
            }));
        }
        let mut sample = Sample::new(series, ts);
        sample.fields = self.fields;
        Some(sample)
    }
}

/// The profiles for this poll: fixed, or detected (kept until the device says it changed).
async fn profiles_for<V: MibView>(
    rt: &TargetRt,
    state: &mut TargetState,
    view: &mut V,
    sys_object_id: Option<ObjectId>,
    rebooted: bool,
) -> Result<Vec<Arc<Profile>>, SnmpError> {
    let Some(set) = &rt.auto else {
        return Ok(rt.fixed_profiles.clone());
    };
    if let Some(d) = &state.detected {
        if !rebooted && d.sys_object_id == sys_object_id {
            return Ok(d.profiles.clone());
        }
        tracing::info!(device = %rt.ep.name, "device changed (sysObjectID or restart); detecting its profiles again");
    }
    let answered = answered_anchors(view, set).await?;
    let profiles = choose(set, sys_object_id.as_ref(), &answered);
    if profiles.is_empty() {
        if !state.warned_no_profile {
            state.warned_no_profile = true;
            tracing::warn!(
                device = %rt.ep.name,
                sys_object_id = %sys_object_id.as_ref().map(ToString::to_string).unwrap_or_default(),
                "no SNMP profile for this device; only its poll health is recorded (record it with `sitewatch probe --record` and see docs/profiles.md)"
            );
        }
    } else {
        state.warned_no_profile = false;
        tracing::info!(
            device = %rt.ep.name,
            profiles = %profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(","),
            "SNMP profiles detected"
        );
    }
    state.detected = Some(Detected {
        sys_object_id,
        profiles: profiles.clone(),
    });
    Ok(profiles)
}

/// One poll through `view`: pushes the profile samples, returns (profiles used, profiles
/// that yielded nothing).
pub(crate) async fn poll_view<V: MibView>(
    rt: &TargetRt,
    state: &mut TargetState,
    view: &mut V,
    ts: i64,
    samples: &mut Vec<Sample>,
) -> Result<(Vec<String>, Vec<String>), SnmpError> {
    let device = rt.ep.name.as_str();
    let first_sample = samples.len();
    // First request: cheap liveness check, reboot detection and detection input in one PDU.
    let sys = view
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
    let rebooted = state.counters.begin_poll(uptime);
    if rebooted {
        metrics::counter!("sitewatch_snmp_counter_resets_total").increment(1);
        tracing::info!(
            device,
            "sysUpTime went backwards (device restarted); counter rates restart"
        );
    }
    let profiles = profiles_for(rt, state, view, sys_object_id, rebooted).await?;

    // Scalars, row counts and `invalid_when` inputs: one batched GET for all profiles.
    let mut scalar_oids: Vec<ObjectId> = profiles
        .iter()
        .flat_map(|p| {
            p.scalars
                .iter()
                .map(|s| s.oid.clone())
                .chain(p.context_oids().cloned())
        })
        .collect();
    scalar_oids.sort();
    scalar_oids.dedup();
    let scalars: ScalarValues = if scalar_oids.is_empty() {
        HashMap::new()
    } else {
        view.get(&scalar_oids).await?.into_iter().collect()
    };
    let mut used = Vec::with_capacity(profiles.len());
    let mut empty = Vec::new();
    for p in &profiles {
        let before = samples.len();
        let mut by_measurement: BTreeMap<Arc<str>, FieldSink> = BTreeMap::new();
        for s in &p.scalars {
            if let Some(rec) = scalars.get(&s.oid) {
                by_measurement
                    .entry(s.measurement.clone())
                    .or_insert_with(|| FieldSink::new(rt.trace))
                    .push(&mut state.counters, device, &s.spec, &s.oid, rec, &scalars);
            }
        }
        for (m, sink) in by_measurement {
            let series = SeriesKey::new(m, rt.base_tags.clone());
            if let Some(s) = sink.into_sample(series, ts, &p.name, &mut state.origins) {
                samples.push(s);
            }
        }
        // Tables: one bulk walk per table (its columns, lookups and transform inputs together).
        for t in &p.tables {
            poll_table(rt, &p.name, t, view, state, &scalars, ts, samples).await?;
        }
        used.push(p.name.clone());
        if samples.len() == before {
            empty.push(p.name.clone());
        }
    }
    merge_same_series(samples, first_sample);
    Ok((used, empty))
}

/// One sample per series: two tables describing the same thing (APC's switched and metered
/// outlet tables, both `pdu_outlet` by outlet) become one row with the fields of both, so
/// rules and panels see one series. The first value of a field wins.
fn merge_same_series(samples: &mut Vec<Sample>, from: usize) {
    let mut seen: HashMap<SeriesKey, usize> = HashMap::new();
    let mut i = from;
    while i < samples.len() {
        match seen.get(&samples[i].series) {
            Some(&first) => {
                let dup = samples.remove(i);
                let target = &mut samples[first];
                for (name, value) in dup.fields {
                    if target.fields.iter().all(|(n, _)| *n != name) {
                        target.fields.push((name, value));
                    }
                }
            }
            None => {
                seen.insert(samples[i].series.clone(), i);
                i += 1;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn poll_table<V: MibView>(
    rt: &TargetRt,
    profile: &str,
    t: &Table,
    view: &mut V,
    state: &mut TargetState,
    scalars: &ScalarValues,
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
            ENT_SENSOR_OPER_STATUS,
        ] {
            roots.push(t.oid.child(&[sub]));
        }
    }
    let lookup_base = roots.len();
    for l in &t.lookups {
        roots.push(l.oid.clone());
    }
    // Rows the device says are valid: agents that keep unused rows filled with zeros.
    let row_limit: Option<u32> = t.rows_from.as_ref().and_then(|o| {
        scalars.get(o).and_then(|r| match raw_number(&r.value) {
            Some(Raw::Int(i)) if i >= 0 => u32::try_from(i).ok(),
            _ => None,
        })
    });
    let walked = view.walk(&roots).await?;
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
            if row_limit.is_some_and(|limit| index[0] > limit) {
                continue;
            }
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
        let mut sink = FieldSink::new(rt.trace);
        for (i, c) in t.columns.iter().enumerate() {
            let Some((oid, rec)) = &row[i] else { continue };
            match c.role {
                ColumnRole::Tag => {
                    if let Some(v) = c.spec.decode_tag(&rec.value, scalars) {
                        tags.push((c.spec.name.to_string(), v));
                    }
                }
                ColumnRole::Field => {
                    sink.push(&mut state.counters, device, &c.spec, oid, rec, scalars)
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
                .and_then(text_of)
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
            // A sensor the agent marks unavailable or nonoperational has no reading: its
            // value column holds whatever was last there (often 0).
            let operational = get(4).is_none_or(|status| status == 1);
            if let (Some(ty), Some(sc), Some(pr), Some(val)) = (get(0), get(1), get(2), get(3)) {
                tags.push(("sensor_type".into(), entity_sensor_type_name(ty)));
                if let Some(v) = entity_sensor_value(ty, sc, pr, val).filter(|_| operational) {
                    sink.fields.push(("value".into(), FieldValue::Float(v)));
                    if let Some(o) = &mut sink.origins {
                        if let Some((oid, _)) = &row[es_base + 3] {
                            o.push(("value".into(), oid.clone()));
                        }
                    }
                }
            }
        }
        let tagset = TagSet::new(
            rt.base_tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(tags),
        );
        let series = SeriesKey::new(t.measurement.clone(), tagset);
        if let Some(s) = sink.into_sample(series, ts, profile, &mut state.origins) {
            samples.push(s);
        }
    }
    Ok(())
}
