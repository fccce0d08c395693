//! Onboarding a device model: `sitewatch probe` (live), `probe --record` (a walk saved as
//! `.snmprec`) and `sitewatch profile test` (a recording decoded offline). All three run
//! the poll code of [`super::poll`], so what they print is what `run` would write.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{now_ns, Sample};

use super::client::Client;
use super::config::{SnmpConfig, TargetConfig};
use super::decode::text_of;
use super::mib_view::MibView;
use super::poll::{
    build_target, finish, named_profile, poll_target, poll_view, FieldOrigin, PollHealth,
    PollResult, TargetRt, TargetState, SYS_DESCR, SYS_OBJECT_ID,
};
use super::profile::ProfileSet;
use super::recording::Recording;
use super::value::{ObjectId, SnmpValue};
use super::SnmpError;

/// What `sitewatch probe` and `sitewatch profile test` print.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub sys_object_id: String,
    pub sys_descr: String,
    /// Profiles used (forced, or detected), in poll order.
    pub profiles: Vec<String>,
    /// Profiles used that produced no value: a wrong match or a MIB the card lacks.
    pub empty_profiles: Vec<String>,
    /// Samples of the last poll, including the `snmp_poll` sample.
    pub samples: Vec<Sample>,
    /// The OID behind each written field.
    pub origins: Vec<FieldOrigin>,
    /// Human notes, e.g. that rates needed a second poll or no profile matched.
    pub notes: Vec<String>,
}

fn prepare(
    target: &TargetConfig,
    profiles: &ProfileSet,
    force_profile: Option<&str>,
) -> Result<TargetRt, SnmpError> {
    let mut rt = build_target(&SnmpConfig::default(), target, profiles)?;
    if let Some(name) = force_profile {
        rt.fixed_profiles = vec![named_profile(profiles, name, &target.name)?];
        rt.auto = None;
    }
    rt.trace = true;
    Ok(rt)
}

async fn identity<V: MibView>(view: &mut V) -> Result<(String, String), SnmpError> {
    let sys = view
        .get(&[
            ObjectId(SYS_OBJECT_ID.to_vec()),
            ObjectId(SYS_DESCR.to_vec()),
        ])
        .await?;
    let sys_oid = sys
        .iter()
        .find_map(|(o, r)| match &r.value {
            SnmpValue::ObjectId(v) if o.0 == SYS_OBJECT_ID => Some(v.to_string()),
            _ => None,
        })
        .unwrap_or_default();
    let sys_descr = sys
        .iter()
        .find(|(o, _)| o.0 == SYS_DESCR)
        .and_then(|(_, r)| text_of(&r.value))
        .unwrap_or_default();
    Ok((sys_oid, sys_descr))
}

fn report(
    profiles: &ProfileSet,
    (sys_object_id, sys_descr): (String, String),
    result: PollResult,
    state: TargetState,
    mut notes: Vec<String>,
) -> Result<ProbeReport, SnmpError> {
    if let Some(e) = result.error {
        return Err(e);
    }
    if result.profiles.is_empty() {
        notes.push(format!(
            "no profile matches sysObjectID {sys_object_id:?} or any anchor this device serves; pass --profile NAME (known: {}) or write one (docs/profiles.md)",
            profiles.names().join(", ")
        ));
    }
    for p in &result.empty_profiles {
        notes.push(format!(
            "profile {p} matched but returned no values: the device does not serve what it reads"
        ));
    }
    Ok(ProbeReport {
        sys_object_id,
        sys_descr,
        profiles: result.profiles,
        empty_profiles: result.empty_profiles,
        samples: result.samples,
        origins: state.origins,
        notes,
    })
}

/// Whether a profile used in this poll has counters (rates need a second reading).
fn uses_counters(result: &PollResult, profiles: &ProfileSet) -> bool {
    result
        .profiles
        .iter()
        .filter_map(|n| profiles.get(n))
        .any(|p| p.has_counters())
}

/// Polls a live device once with detection (or `force_profile`), as `run` would. When the
/// profiles have counters, polls a second time one second later so rates appear.
pub async fn probe(
    target: TargetConfig,
    profiles: &ProfileSet,
    force_profile: Option<&str>,
) -> Result<ProbeReport, SnmpError> {
    let rt = prepare(&target, profiles, force_profile)?;
    let mut client = Client::new(rt.ep.clone());
    let ident = identity(&mut client).await?;
    let mut state = TargetState::default();
    let mut notes = Vec::new();
    let mut result = poll_target(&rt, &mut state).await;
    if uses_counters(&result, profiles) && result.error.is_none() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        state.origins.clear();
        result = poll_target(&rt, &mut state).await;
        notes.push("counters: rates are from two polls one second apart".into());
    }
    report(profiles, ident, result, state, notes)
}

/// `sitewatch check --connect` for one target, with the `[snmp]` defaults `run` uses: GET
/// sysObjectID.0, then one poll as `run` does it, which detects the profiles. Returns the
/// sysObjectID and the profiles the poll used; an error is what `run` would log.
pub async fn check_target(
    cfg: &SnmpConfig,
    target: &TargetConfig,
    profiles: &ProfileSet,
) -> Result<(String, Vec<String>), SnmpError> {
    let rt = build_target(cfg, target, profiles)?;
    let mut client = Client::new(rt.ep.clone());
    let (sys_object_id, _) = identity(&mut client).await?;
    let result = poll_target(&rt, &mut TargetState::default()).await;
    match result.error {
        Some(e) => Err(e),
        None => Ok((sys_object_id, result.profiles)),
    }
}

/// Decodes a recording offline exactly as a poll of the live device would (detection
/// included, unless `force_profile`). Counters need two readings, so rates are not shown.
pub async fn profile_test(
    recording: &Recording,
    profiles: &ProfileSet,
    force_profile: Option<&str>,
    device: &str,
) -> Result<ProbeReport, SnmpError> {
    let target = TargetConfig::v2c(device, "127.0.0.1", "");
    let rt = prepare(&target, profiles, force_profile)?;
    let mut view = recording.clone();
    let ident = identity(&mut view).await?;
    let mut state = TargetState::default();
    let ts = now_ns();
    let mut samples = Vec::new();
    let res = poll_view(&rt, &mut state, &mut view, ts, &mut samples).await;
    let health = PollHealth {
        duration_s: None,
        varbinds: None,
        requests: None,
    };
    let result = finish(&rt, &mut state, ts, res, health, samples);
    let mut notes = Vec::new();
    if uses_counters(&result, profiles) {
        notes.push(
            "counters: a recording holds one reading, so per-second rates are not shown".into(),
        );
    }
    if recording.skipped > 0 {
        notes.push(format!(
            "{} recording line(s) skipped as unreadable: {}",
            recording.skipped,
            recording.first_skipped.join("; ")
        ));
    }
    report(profiles, ident, result, state, notes)
}

/// Walks the whole agent (everything under 1.3.6.1) into a recording, for `probe --record`.
pub async fn record(target: TargetConfig) -> Result<Recording, SnmpError> {
    let rt = build_target(&SnmpConfig::default(), &target, &ProfileSet::default())?;
    let mut client = Client::new(Arc::clone(&rt.ep));
    let walked = client.walk(&[ObjectId(vec![1, 3, 6, 1])]).await?;
    Ok(Recording::from_objects(
        walked.into_iter().map(|(_, oid, r)| (oid, r.value)),
    ))
}
