//! The per-series, per-rule state machine.
//!
//! For each (series, rule) the engine keeps two severities: `active`, what the condition
//! says (after `for`, `keep_firing_for` and inhibition), and `notified`, what the last event
//! told the world (they differ only while a series is flapping). One sample causes at most one
//! threshold event: Firing on every severity change upwards or downwards while the condition
//! holds, Resolved when the value is back past the lowest level's clear value.
//!
//! - **`for`** (sample time): a level fires at the first sample at least `for` after the first
//!   sample beyond it. **`keep_firing_for`** (sample time): a firing alert resolves only after
//!   the condition has been clear that long; a new breach in between continues the incident.
//! - **`rate`**: the levels apply to the change over a sliding window of samples (rising: latest
//!   minus the window's lowest; falling: the window's highest minus latest), kept in a ring of at
//!   most [`RATE_RING_CAP`] samples per series; `{value}` is that change.
//! - **Stale** (`stale_after`, wall clock): a series that matched the rule and has sent no usable
//!   value of the rule's field for that long fires `<rule>:stale` (severity `stale_severity`);
//!   the next usable value resolves it. Arrival time is the clock of the latest [`Engine::tick`]
//!   (the stage ticks every second with the wall clock), not the sample's timestamp: a device
//!   with a wrong clock or a replay of old data must not look dead, and time stamps in the past
//!   are normal after a buffer replay. Before the first tick, a sample's own time is used and
//!   the first tick resets every arrival to its clock, so a restart does not page for every
//!   series that has not reported yet.
//! - **Flapping** (`flapping = { changes, window }`, sample time): when notified changes within
//!   the window exceed `changes`, one Firing event is sent with the higher severity of the
//!   change and a message starting `FLAPPING:`; further changes are only tracked. Once there has
//!   been no change for the window, the current state is notified (Resolved, or Firing with a
//!   normal message).
//! - **Overrides**: the first `[[rule.override]]` whose `match` accepts the series replaces the
//!   levels (and rate window) for it; chosen once per series.
//! - **Inhibition**: a series tagged `device = X` is inhibited while the latest `snmp_poll`
//!   sample of device X says `up = false`, and a rule with `depends_on` is inhibited for a
//!   series while a series of the named rule with the same values of `match_tags` is firing.
//!   An inhibited series starts no new alert (threshold or stale); alerts already firing stay
//!   and resolve normally, since receivers already have them. A breach that is still there when
//!   the inhibition ends fires at the next sample (its `for` wait kept running).
//! - **Silences** are not applied here but through [`Engine::gate_alert`] (see
//!   [`super::silence`]): the stage writes every event and sends only the notified ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{now_ns, Event, EventState, FieldValue, Labels, Sample, SeriesKey, Severity};

use super::config::{
    duration_ns, format_value, Condition, MessageTemplate, RenderContext, Rule, RuleSet,
    STALE_SUFFIX,
};
use super::live_silences::LiveSilences;
use super::series::{FastMap, FastSet, MatchSets, SeriesSlot};
use super::silence::{Gate, Silencer};
use super::state::{self, RuleState, SaveEntry, SaveTrack, StateError};

/// Most samples kept per series for a `rate` rule; when samples come faster than
/// window / this, the effective window shortens to the newest samples.
pub const RATE_RING_CAP: usize = 512;

/// How often [`Engine::tick`] sets the `sitewatch_rules_series` / `_held_states` gauges.
const SIZE_REPORT_EVERY_NS: i64 = 10_000_000_000;

/// Measurement, field and tag the SNMP poller uses to say whether a device answered.
pub const POLL_MEASUREMENT: &str = "snmp_poll";
const POLL_UP_FIELD: &str = "up";
const DEVICE_TAG: &str = "device";
/// Device-health measurements: their `up` field (false = down) inhibits the rules of the
/// device named by their `device` tag. The SNMP poller's, the Modbus poller's
/// (`crate::collect::modbus::POLL_MEASUREMENT`), and the MQTT collector's Sparkplug B
/// BIRTH/DEATH rows (`crate::collect::mqtt::decode::SPARKPLUG_STATE_MEASUREMENT`).
const HEALTH_MEASUREMENTS: &[&str] = &[POLL_MEASUREMENT, "modbus_poll", "sparkplug_state"];

fn is_health(measurement: &str) -> bool {
    HEALTH_MEASUREMENTS.contains(&measurement)
}

/// What inhibition looks at; borrowed apart from the series map.
struct Deps<'a> {
    devices_down: &'a FastSet<Arc<str>>,
    firing: &'a FastMap<Arc<str>, FastSet<SeriesKey>>,
}

impl Deps<'_> {
    fn inhibited(&self, rule: &Rule, key: &SeriesKey) -> Option<&'static str> {
        if !self.devices_down.is_empty() && !is_health(&key.measurement) {
            if let Some(dev) = key.tags.get(DEVICE_TAG) {
                if self.devices_down.contains(dev) {
                    return Some("device_down");
                }
            }
        }
        let dep = rule.depends_on.as_ref()?;
        let firing = self.firing.get(&dep.rule)?;
        let hit = firing.iter().any(|f| {
            dep.match_tags
                .iter()
                .all(|t| match (f.tags.get(t), key.tags.get(t)) {
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                })
        });
        hit.then_some("depends_on")
    }
}

/// Evaluates samples against rules and emits [`Event`]s on state changes.
pub struct Engine {
    rules: RuleSet,
    /// measurement → field → indices of rules watching it. A sample no rule watches costs one
    /// lookup here.
    index: HashMap<Arc<str>, HashMap<Arc<str>, Vec<usize>>>,
    pub(crate) series: FastMap<SeriesKey, SeriesSlot>,
    match_sets: MatchSets,
    firing: usize,
    /// Devices whose latest `snmp_poll` sample said `up = false`.
    pub(crate) devices_down: FastSet<Arc<str>>,
    /// Rule name → series whose condition is active (for `depends_on`).
    firing_series: FastMap<Arc<str>, FastSet<SeriesKey>>,
    /// Clock of the latest tick.
    clock: Option<i64>,
    /// Events produced outside observe/tick (state load), handed out by the next tick.
    pending: Vec<Event>,
    pub(crate) silencer: Silencer,
    /// Silences made through the API, gated on with the rule files' (see
    /// [`super::live_silences`]).
    live_silences: LiveSilences,
    has_stale: bool,
    state_file: Option<PathBuf>,
    pub(super) restored_alerts: Vec<Event>,
    /// The desk's entries of alerts open at the last save, for the rules stage.
    pub(super) restored_open: Vec<super::open_alerts::SavedOpen>,
    /// Samples more than this ahead of the clock are not evaluated.
    max_future_ns: i64,
    /// States stepped for one field of one sample, stored once the field's track is updated
    /// (whether a state is at rest is judged against the updated track).
    stepped: Vec<(usize, Box<RuleState>)>,
    /// Clock when the size gauges were last set.
    size_reported: i64,
}

fn build_index(rules: &RuleSet) -> HashMap<Arc<str>, HashMap<Arc<str>, Vec<usize>>> {
    let mut index: HashMap<Arc<str>, HashMap<Arc<str>, Vec<usize>>> = HashMap::new();
    for (i, r) in rules.rules().iter().enumerate() {
        index
            .entry(r.measurement.clone())
            .or_default()
            .entry(r.field.clone())
            .or_default()
            .push(i);
    }
    index
}

/// Counts (and logs, once per series and field at warn) a value a rule cannot evaluate.
fn unusable(rule: &Rule, key: &SeriesKey, value: &FieldValue, warned: &mut bool) {
    metrics::counter!("sitewatch_rules_unusable_values_total", "rule" => rule.name.to_string())
        .increment(1);
    // A rule comparing a number with a text field is a configuration mistake that would
    // otherwise never fire, silently.
    if *warned {
        tracing::debug!(rule = %rule.name, series = %key, value = %format_value(value), "value cannot be evaluated by this rule; ignored");
    } else {
        *warned = true;
        tracing::warn!(rule = %rule.name, series = %key, value = %format_value(value), "value cannot be evaluated by this rule (wrong type for the condition, or NaN); ignored, check the rule's field and condition");
    }
}

impl Engine {
    pub fn new(rules: RuleSet) -> Engine {
        let index = build_index(&rules);
        let has_stale = rules.rules().iter().any(|r| r.stale.is_some());
        let match_sets = MatchSets::new(&rules);
        Engine {
            rules,
            index,
            series: FastMap::default(),
            match_sets,
            firing: 0,
            devices_down: FastSet::default(),
            firing_series: FastMap::default(),
            clock: None,
            pending: Vec::new(),
            silencer: Silencer::default(),
            live_silences: LiveSilences::default(),
            has_stale,
            state_file: None,
            restored_alerts: Vec::new(),
            restored_open: Vec::new(),
            max_future_ns: duration_ns(super::config::DEFAULT_MAX_FUTURE_SKEW),
            stepped: Vec::new(),
            size_reported: i64::MIN,
        }
    }

    /// How far ahead of the clock a sample's timestamp may be and still be evaluated.
    pub fn set_max_future_skew(&mut self, d: std::time::Duration) {
        self.max_future_ns = duration_ns(d);
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Number of alerts currently open towards receivers: (series, rule) pairs firing, plus
    /// stale alerts.
    pub fn firing_count(&self) -> usize {
        self.firing
    }

    /// Series the engine keeps (those at least one rule watches).
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// (series, rule) pairs whose state is held because they are not at rest.
    pub fn held_states(&self) -> usize {
        self.series.values().map(|s| s.states.len()).sum()
    }

    /// Where the stage saves state periodically and on shutdown.
    pub fn set_state_file(&mut self, path: Option<PathBuf>) {
        self.state_file = path;
    }

    pub fn state_file(&self) -> Option<&Path> {
        self.state_file.as_deref()
    }

    /// Evaluates every rule watching one of the sample's fields; events go to `out`.
    pub fn observe(&mut self, sample: &Sample, out: &mut Vec<Event>) {
        self.observe_from(sample, None, out)
    }

    /// [`Engine::observe`] for a sample of a cluster unit's collector: the series is kept
    /// with `unit`, so its state moves with the unit ([`super::units`]).
    pub fn observe_from(&mut self, sample: &Sample, unit: Option<&Arc<str>>, out: &mut Vec<Event>) {
        if is_health(&sample.series.measurement) {
            self.note_device(sample);
        }
        let Some(by_field) = self.index.get(&sample.series.measurement) else {
            return;
        };
        if !sample.fields.iter().any(|(f, _)| by_field.contains_key(f)) {
            return;
        }
        let slot = match self.series.get_mut(&sample.series) {
            Some(slot) => slot,
            None => {
                let slot = self.match_sets.slot_for(&self.rules, &sample.series);
                self.series.entry(sample.series.clone()).or_insert(slot)
            }
        };
        if let Some(unit) = unit {
            if !slot.unit.as_ref().is_some_and(|u| Arc::ptr_eq(u, unit)) {
                slot.unit = Some(unit.clone());
            }
        }
        if slot.matches.entries.is_empty() {
            return;
        }
        let arrival = self.clock.unwrap_or(sample.timestamp_ns);
        let ts = sample.timestamp_ns;
        let key = &sample.series;
        if ts.saturating_sub(arrival) > self.max_future_ns {
            // Evaluating it would set the series' last time a year ahead, and every correct
            // sample after it would then be "out of order": a rack at 35 °C would never page.
            metrics::counter!("sitewatch_rules_future_samples_total").increment(1);
            tracing::debug!(series = %key, ts, clock = arrival, "sample stamped too far in the future (see [rules] max_future_skew); not evaluated");
            return;
        }
        let mut evaluations = 0u64;
        let firing_before = self.firing;
        let mut books = Books {
            devices_down: &self.devices_down,
            firing_series: &mut self.firing_series,
            firing: &mut self.firing,
        };
        for (field, value) in &sample.fields {
            if !by_field.contains_key(field) {
                continue;
            }
            let Some(fpos) = slot.matches.fields.iter().position(|f| f == field) else {
                continue;
            };
            let last_ts = slot.tracks[fpos].last_ts;
            if ts < last_ts {
                metrics::counter!("sitewatch_rules_out_of_order_total").increment(1);
                tracing::debug!(series = %key, field = %field, ts, last = last_ts, "sample older than the last one evaluated; ignored");
                continue;
            }
            let mut usable = false;
            let mut touched_held = false;
            let matches = &*slot.matches;
            let quiet = matches.is_quiet(fpos, value);
            if quiet {
                // Every pair at rest stays at rest (and finds the value usable): only the
                // held states of this field need a step.
                evaluations += matches.by_field[fpos].len() as u64;
                usable = true;
                for (pos, st) in slot.states.iter_mut() {
                    let entry = matches.entries[*pos as usize];
                    if entry.field as usize != fpos {
                        continue;
                    }
                    let rule = &self.rules.rules()[entry.rule_idx as usize];
                    books.advance(
                        rule,
                        entry.variant as usize,
                        st,
                        key,
                        value,
                        (ts, arrival),
                        out,
                    );
                    slot.tracks[fpos].unusable_warned |= st.unusable_warned;
                    touched_held = true;
                }
            }
            let one_by_one: &[u32] = if quiet { &[] } else { &matches.by_field[fpos] };
            for &pos in one_by_one {
                let pos = pos as usize;
                let entry = matches.entries[pos];
                let variant = entry.variant as usize;
                let rule = &self.rules.rules()[entry.rule_idx as usize];
                evaluations += 1;
                if slot.state_index(pos).is_err() {
                    // At rest: only a breach, or a rate rule's window, needs a state; a value
                    // inside the levels changes nothing but the field's track.
                    let (cond, rate) = rule.variant(variant);
                    if rate.is_none() {
                        match cond.classify(value, Severity::Ok) {
                            None => {
                                unusable(rule, key, value, &mut slot.tracks[fpos].unusable_warned);
                                continue;
                            }
                            Some(Severity::Ok) => {
                                usable = true;
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                }
                let held = slot.state_index(pos);
                let mut fresh = None;
                let st = match held {
                    Ok(i) => &mut *slot.states[i].1,
                    Err(_) => &mut **fresh.insert(Box::new(slot.tracks[fpos].rule_state())),
                };
                usable |= books.advance(rule, variant, st, key, value, (ts, arrival), out);
                slot.tracks[fpos].unusable_warned |= st.unusable_warned;
                touched_held |= held.is_ok();
                if let Some(st) = fresh {
                    self.stepped.push((pos, st));
                }
            }
            if usable {
                let track = &mut slot.tracks[fpos];
                track.last_ts = ts;
                track.last_value = Some(value.clone());
                track.seen = true;
                track.last_arrival = track.last_arrival.max(arrival);
            }
            if touched_held {
                // Held states that came to rest (resolved, wait abandoned) are dropped.
                let (matches, track) = (&slot.matches, &slot.tracks[fpos]);
                slot.states.retain(|(p, st)| {
                    matches.entries[*p as usize].field as usize != fpos || !track.describes(st)
                });
            }
            for (pos, st) in self.stepped.drain(..) {
                slot.put_state(pos, st);
            }
        }
        if evaluations > 0 {
            metrics::counter!("sitewatch_rules_evaluations_total").increment(evaluations);
        }
        if self.firing != firing_before {
            metrics::gauge!("sitewatch_rules_firing").set(self.firing as f64);
        }
    }

    fn note_device(&mut self, sample: &Sample) {
        let Some(FieldValue::Bool(up)) = sample.field(POLL_UP_FIELD) else {
            return;
        };
        let Some(dev) = sample.series.tags.get(DEVICE_TAG) else {
            return;
        };
        if *up {
            self.devices_down.remove(dev);
        } else if !self.devices_down.contains(dev) {
            self.devices_down.insert(dev.into());
        }
    }

    /// Time-driven part of the state machine: stale (no-data) detection and events queued by
    /// [`Engine::load_state`]. Call it regularly (the stage does every second) with the wall
    /// clock, or with the replayed time when replaying history; events go to `out` like those
    /// of [`Engine::observe`].
    pub fn tick(&mut self, now_ns: i64, out: &mut Vec<Event>) {
        let first = self.clock.is_none();
        self.clock = Some(self.clock.map_or(now_ns, |c| c.max(now_ns)));
        let now = self.clock.unwrap_or(now_ns);
        for ev in &self.pending {
            count_event(ev);
        }
        out.append(&mut self.pending);
        if now.saturating_sub(self.size_reported) >= SIZE_REPORT_EVERY_NS {
            // What the engine holds, for sizing (docs/BENCHMARKS.md has bytes per series and
            // per held state); counting held states walks the series, so not every tick.
            self.size_reported = now;
            metrics::gauge!("sitewatch_rules_series").set(self.series.len() as f64);
            metrics::gauge!("sitewatch_rules_held_states").set(self.held_states() as f64);
        }
        if !self.has_stale {
            return;
        }
        let deps = Deps {
            devices_down: &self.devices_down,
            firing: &self.firing_series,
        };
        let firing_before = self.firing;
        for (key, slot) in self.series.iter_mut() {
            if first {
                // Arrivals before the first tick were stamped with sample time, which may
                // be far off (old replayed data, a device clock ahead): start afresh.
                for t in slot.tracks.iter_mut().filter(|t| t.seen) {
                    t.last_arrival = now;
                }
                for (_, st) in slot.states.iter_mut().filter(|(_, st)| st.seen) {
                    st.last_arrival = now;
                }
                continue;
            }
            for fpos in 0..slot.tracks.len() {
                let track = &slot.tracks[fpos];
                // A field whose track is fresher than its shortest stale_after is fresh for
                // every rule on it (a held state's own clock is never older than the track's).
                if !track.seen
                    || now.saturating_sub(track.last_arrival) < slot.matches.min_stale_ns[fpos]
                {
                    continue;
                }
                let matches = slot.matches.clone();
                for (pos, entry) in matches.entries.iter().enumerate() {
                    if entry.field as usize != fpos {
                        continue;
                    }
                    let rule = &self.rules.rules()[entry.rule_idx as usize];
                    let Some(spec) = &rule.stale else { continue };
                    let track_arrival = slot.tracks[fpos].last_arrival;
                    let arrival = match slot.state(pos) {
                        Some(st) if st.stale => continue,
                        Some(st) => st.last_arrival.max(track_arrival),
                        None => track_arrival,
                    };
                    if now.saturating_sub(arrival) < duration_ns(spec.after) {
                        continue;
                    }
                    let mut st = slot.take_state(pos);
                    if let Some(reason) = deps.inhibited(rule, key) {
                        metrics::counter!("sitewatch_rules_inhibited_total", "rule" => rule.name.to_string(), "reason" => reason).increment(1);
                        // The device is down (its own alarm says so): restart the no-data
                        // clock, so its return is not a false "stale" page and this counts
                        // once per `stale_after`, not on every tick.
                        st.last_arrival = now;
                    } else {
                        st.stale = true;
                        st.stale_started = arrival;
                        self.firing += 1;
                        let ev = stale_event(rule, key, &st, EventState::Firing, now, None);
                        count_event(&ev);
                        out.push(ev);
                    }
                    slot.put_state(pos, st);
                }
            }
        }
        if self.firing != firing_before {
            metrics::gauge!("sitewatch_rules_firing").set(self.firing as f64);
        }
    }

    /// Whether an event goes to receivers (see [`super::silence`]); call once per event, in
    /// order, with the wall clock.
    pub fn gate_alert(&mut self, ev: &Event, now_ns: i64) -> Gate {
        let silences = self.live_silences.with_runtime(self.rules.silences());
        self.silencer.gate(&silences, ev, now_ns)
    }

    /// Silenced firing alerts whose silence has ended: to be sent to receivers now (they are
    /// already in the events history).
    pub fn release_silenced(&mut self, now_ns: i64) -> Vec<Event> {
        let silences = self.live_silences.with_runtime(self.rules.silences());
        self.silencer.release(&silences, now_ns)
    }

    /// Gates on `live`'s run-time silences too, and publishes the rule files' silences to it
    /// (now and on every [`Engine::replace_rules`]).
    pub fn share_silences(&mut self, live: LiveSilences) {
        live.set_files(self.rules.silences());
        self.live_silences = live;
    }

    /// Alerts that were open when state was saved, re-announced after a restart so receivers
    /// that time alerts out (Alertmanager `endsAt`) keep them; they carry their original
    /// start time, so receivers treat them as the same alert, not a new one.
    /// Alerts held back by a silence were never sent, so they are not re-announced either.
    /// First-firing times and acknowledgements of the alerts open at the last save.
    pub fn take_restored_open(&mut self) -> Vec<super::open_alerts::SavedOpen> {
        std::mem::take(&mut self.restored_open)
    }

    pub fn take_restored_alerts(&mut self) -> Vec<Event> {
        let mut out = std::mem::take(&mut self.restored_alerts);
        out.retain(|ev| !self.silencer.is_held(&ev.rule, &ev.series));
        out
    }

    /// Writes the state (atomically: temp file, fsync, rename).
    pub fn save_state(&self, path: &Path) -> Result<usize, StateError> {
        self.state_snapshot().write(path)
    }

    /// The state as [`Engine::save_state`] writes it, copied out (strings shared, no
    /// serialisation, no I/O), so the rules task takes it and [`state::Snapshot::write`]
    /// runs on a blocking thread.
    pub fn state_snapshot(&self) -> state::Snapshot {
        self.snapshot_where(|_| true, true)
    }

    /// The state of the series whose slot `keep` accepts, with the devices known to be down
    /// when `devices` (a unit's checkpoint leaves them out: the next poll tells again).
    pub(super) fn snapshot_where(
        &self,
        keep: impl Fn(&SeriesSlot) -> bool + Copy,
        devices: bool,
    ) -> state::Snapshot {
        let rules = self.rules.rules();
        let kept = move || self.series.iter().filter(move |(_, slot)| keep(slot));
        let entries = kept().flat_map(|(key, slot)| {
            slot.states.iter().map(move |(pos, st)| {
                let rule = &rules[slot.matches.entries[*pos as usize].rule_idx as usize];
                SaveEntry {
                    series: key,
                    rule,
                    stale_severity: stale_severity(rule),
                    state: st,
                }
            })
        });
        let tracks = kept().flat_map(|(key, slot)| {
            slot.matches
                .fields
                .iter()
                .zip(slot.tracks.iter())
                .map(move |(field, track)| SaveTrack {
                    series: key,
                    field,
                    seen: track.seen,
                    last_ts: track.last_ts,
                    last_value: track.last_value.as_ref(),
                })
        });
        let silenced = self
            .silencer
            .held()
            .filter(move |ev| self.series.get(&ev.series).is_some_and(keep));
        let down: &[Arc<str>] = &[];
        let devices_down: Box<dyn Iterator<Item = &Arc<str>>> = if devices {
            Box::new(self.devices_down.iter())
        } else {
            Box::new(down.iter())
        };
        state::snapshot(entries, tracks, devices_down, silenced)
    }

    /// Loads state saved by [`Engine::save_state`] for the current rules. A missing file is not
    /// an error (first start). Unchanged rules continue where they were; a changed rule
    /// re-judges a firing incident on its last value; alarms of removed rules are resolved
    /// (those events come out of the next [`Engine::tick`]). Returns the records restored
    /// (held states and field tracks).
    pub fn load_state(&mut self, path: &Path) -> Result<usize, StateError> {
        let n = match state::read(path)? {
            Some(saved) => self.restore(saved, None),
            None => 0,
        };
        self.recount();
        Ok(n)
    }

    fn slot_mut(&mut self, key: &SeriesKey) -> &mut SeriesSlot {
        if !self.series.contains_key(key) {
            let slot = self.match_sets.slot_for(&self.rules, key);
            self.series.insert(key.clone(), slot);
        }
        self.series.get_mut(key).expect("inserted above")
    }

    /// Applies state read from the file to the current rules; returns the states restored.
    pub(super) fn restore(&mut self, saved: state::Restored, unit: Option<&Arc<str>>) -> usize {
        let now = now_ns();
        let rules = self.rules().clone();
        let mut restored = 0;
        let mut pending = Vec::new();
        let mut announce = Vec::new();
        for t in saved.tracks {
            let slot = self.slot_mut(&t.series);
            if let Some(u) = unit {
                slot.unit = Some(u.clone());
            }
            if let Some(f) = slot.matches.fields.iter().position(|f| **f == *t.field) {
                slot.tracks[f].absorb(&t.state);
                restored += 1;
            }
        }
        // Signatures computed once per rule, not once per saved state.
        let mut signatures: HashMap<usize, String> = HashMap::new();
        for restored_state in saved.states {
            let state::RestoredState {
                series: key,
                rule: rule_name,
                field,
                signature,
                stale_severity: stale_sev,
                state: st,
            } = restored_state;
            let idx = rules.position(&rule_name);
            let slot = self.slot_mut(&key);
            if let Some(u) = unit {
                slot.unit = Some(u.clone());
            }
            let pos = idx.and_then(|i| slot.matches.position(i));
            let (Some(idx), Some(pos)) = (idx, pos) else {
                // The rule is gone or no longer matches: close what it had open.
                // A rule still loaded (it no longer matches) gives its labels, so receivers
                // resolve the very alert they have; for a deleted rule they are unknown and
                // the alert ends at its endsAt instead.
                let labels = idx.map_or_else(Labels::new, |i| rule_labels(&rules.rules()[i], &key));
                close_removed(
                    &rule_name.as_str().into(),
                    &field.as_str().into(),
                    &labels,
                    stale_sev,
                    &st,
                    &key,
                    now,
                    "a restart",
                    &mut pending,
                );
                continue;
            };
            let rule = &rules.rules()[idx];
            let variant = slot.matches.entries[pos].variant as usize;
            let current = signatures
                .entry(idx)
                .or_insert_with(|| match saved.version {
                    1 => rule.legacy_signature(),
                    _ => rule.signature(),
                });
            let state = if signature == *current {
                st
            } else {
                rejudge(rule, variant, st, &key, now, &mut pending)
            };
            let (cond, _) = rule.variant(variant);
            if state.notified != Severity::Ok {
                if let Some(v) = &state.last_value {
                    announce.push(firing_event(
                        rule,
                        cond,
                        &key,
                        v,
                        state.notified,
                        state.started_ns,
                        state.last_ts.max(state.started_ns),
                    ));
                }
            }
            if state.stale {
                announce.push(stale_event(
                    rule,
                    &key,
                    &state,
                    EventState::Firing,
                    now,
                    None,
                ));
            }
            let field_pos = slot.matches.entries[pos].field as usize;
            slot.tracks[field_pos].absorb(&state);
            // A version 1 file holds every pair that had seen a value; those at rest are
            // now described by their field's track alone.
            slot.put_state(pos, Box::new(state));
            restored += 1;
        }
        self.series
            .retain(|_, slot| !slot.matches.entries.is_empty());
        for d in saved.devices_down {
            self.devices_down.insert(d.into());
        }
        self.silencer.restore(saved.silenced);
        self.restored_open = saved.open_alerts;
        for ev in pending {
            self.push_pending(ev);
        }
        for ev in announce {
            self.push_restored(ev);
        }
        restored
    }

    pub(crate) fn push_pending(&mut self, ev: Event) {
        self.pending.push(ev);
    }

    pub(crate) fn push_restored(&mut self, ev: Event) {
        self.restored_alerts.push(ev);
    }

    /// Recomputes the firing gauge and the active-series sets from the states.
    pub(super) fn recount(&mut self) {
        self.firing = 0;
        self.firing_series.clear();
        for (key, slot) in &self.series {
            for (pos, st) in &slot.states {
                self.firing += st.open_alerts();
                if st.active != Severity::Ok {
                    let idx = slot.matches.entries[*pos as usize].rule_idx as usize;
                    let name = self.rules.rules()[idx].name.clone();
                    self.firing_series
                        .entry(name)
                        .or_default()
                        .insert(key.clone());
                }
            }
        }
        metrics::gauge!("sitewatch_rules_firing").set(self.firing as f64);
    }

    /// Swaps in a new rule set. State survives for rules whose condition is unchanged (same
    /// name and [`Rule::signature`]; message edits do not reset state).
    ///
    /// For a changed rule, an incident that is firing is re-judged on its last value under the
    /// new definition instead of being forgotten: a reload must neither flash a flood alarm as
    /// resolved while water is on the floor nor leave an alarm firing forever in a receiver.
    /// For a removed rule (or one that no longer matches the series) a firing incident is
    /// resolved. The returned events (timestamped now) must be delivered like any other.
    #[must_use = "resolved/changed alarms from a reload must be sent to the events writer and alert router"]
    pub fn replace_rules(&mut self, rules: RuleSet) -> Vec<Event> {
        let old = std::mem::replace(&mut self.rules, rules);
        self.live_silences.set_files(self.rules.silences());
        self.index = build_index(&self.rules);
        self.has_stale = self.rules.rules().iter().any(|r| r.stale.is_some());
        self.match_sets = MatchSets::new(&self.rules);
        let mut out = Vec::new();
        let now = self.clock.unwrap_or_else(now_ns).max(now_ns());
        for (key, slot) in self.series.iter_mut() {
            let fresh = self.match_sets.slot_for(&self.rules, key);
            let mut old_slot = std::mem::replace(slot, fresh);
            slot.unit = old_slot.unit.take();
            for (f, name) in old_slot.matches.fields.iter().enumerate() {
                if let Some(nf) = slot.matches.fields.iter().position(|n| n == name) {
                    slot.tracks[nf] = old_slot.tracks[f].clone();
                }
            }
            // Pairs at rest carry nothing beyond the tracks; only held states need a look.
            for (old_pos, st) in old_slot.states {
                let old_rule =
                    &old.rules()[old_slot.matches.entries[old_pos as usize].rule_idx as usize];
                let target = self
                    .rules
                    .position(&old_rule.name)
                    .and_then(|i| slot.matches.position(i).map(|pos| (i, pos)));
                let Some((idx, pos)) = target else {
                    close_removed(
                        &old_rule.name,
                        &old_rule.field,
                        &rule_labels(old_rule, key),
                        stale_severity(old_rule),
                        &st,
                        key,
                        now,
                        "a rules reload",
                        &mut out,
                    );
                    continue;
                };
                let new_rule = &self.rules.rules()[idx];
                let st = if old_rule.same_condition(new_rule) {
                    st
                } else {
                    let variant = slot.matches.entries[pos].variant as usize;
                    Box::new(rejudge(new_rule, variant, *st, key, now, &mut out))
                };
                slot.put_state(pos, st);
            }
        }
        // Series that no rule watches any more need no cache entry.
        self.series
            .retain(|_, slot| !slot.matches.entries.is_empty());
        self.recount();
        for ev in &out {
            count_event(ev);
        }
        if !out.is_empty() {
            tracing::info!(
                events = out.len(),
                "rules reload changed the state of firing alarms"
            );
        }
        out
    }
}

/// The engine's books a step updates, borrowed apart from the series map: open alerts, the
/// active series per rule (for `depends_on`), and the devices down (for inhibition).
struct Books<'a> {
    devices_down: &'a FastSet<Arc<str>>,
    firing_series: &'a mut FastMap<Arc<str>, FastSet<SeriesKey>>,
    firing: &'a mut usize,
}

impl Books<'_> {
    /// Steps one (series, rule) state and keeps the books (and the event counters); false
    /// when the rule could not use the value.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &mut self,
        rule: &Rule,
        variant: usize,
        st: &mut RuleState,
        key: &SeriesKey,
        value: &FieldValue,
        (ts, arrival): (i64, i64),
        out: &mut Vec<Event>,
    ) -> bool {
        let open_before = st.open_alerts();
        let was_active = st.active;
        let first = out.len();
        let deps = Deps {
            devices_down: self.devices_down,
            firing: self.firing_series,
        };
        let used = step(rule, variant, st, key, value, ts, arrival, &deps, out);
        *self.firing = (*self.firing + st.open_alerts()).saturating_sub(open_before);
        if (was_active == Severity::Ok) != (st.active == Severity::Ok) {
            let set = self.firing_series.entry(rule.name.clone()).or_default();
            if st.active == Severity::Ok {
                set.remove(key);
            } else {
                set.insert(key.clone());
            }
        }
        if let Some(flap) = &rule.flapping {
            // Changes older than the window no longer count; dropping them lets a quiet pair
            // come to rest.
            let horizon = ts.saturating_sub(duration_ns(flap.window));
            while !st.flapping && st.changes.front().is_some_and(|t| *t < horizon) {
                st.changes.pop_front();
            }
        }
        for ev in &out[first..] {
            count_event(ev);
        }
        used
    }
}

/// Resolves what a removed rule (or one that no longer matches the series) had open.
#[allow(clippy::too_many_arguments)]
pub(crate) fn close_removed(
    name: &Arc<str>,
    field: &Arc<str>,
    labels: &Labels,
    stale_severity: Severity,
    st: &RuleState,
    key: &SeriesKey,
    now: i64,
    why: &str,
    out: &mut Vec<Event>,
) {
    let value = st.last_value.clone().unwrap_or(FieldValue::Float(f64::NAN));
    if st.notified != Severity::Ok {
        out.push(Event {
            rule: name.clone(),
            labels: labels.clone(),
            annotations: Labels::new(),
            series: key.clone(),
            field: field.clone(),
            severity: st.notified,
            state: EventState::Resolved,
            value: value.clone(),
            threshold: None,
            started_ns: st.started_ns,
            timestamp_ns: now.max(st.last_ts),
            message: format!(
                "rule '{name}' was removed or no longer matches {key} after {why}; alarm closed"
            ),
        });
    }
    if st.stale {
        out.push(Event {
            rule: format!("{name}{STALE_SUFFIX}").into(),
            labels: labels.clone(),
            annotations: Labels::new(),
            series: key.clone(),
            field: field.clone(),
            severity: stale_severity,
            state: EventState::Resolved,
            value,
            threshold: None,
            started_ns: st.stale_started.min(now),
            timestamp_ns: now,
            message: format!(
                "rule '{name}' was removed or no longer watches {key} after {why}; no-data alarm closed"
            ),
        });
    }
}

pub(crate) fn stale_severity(rule: &Rule) -> Severity {
    rule.stale
        .as_ref()
        .map_or(Severity::Warning, |s| s.severity)
}

fn count_event(ev: &Event) {
    metrics::counter!(
        "sitewatch_rules_events_total",
        "rule" => ev.rule.to_string(),
        "severity" => ev.severity.as_str(),
        "state" => ev.state.as_str()
    )
    .increment(1);
}

/// Re-judges an open incident of a changed rule on its last value. Pending waits restart;
/// a stale alert stays open if the rule still has `stale_after`.
pub(crate) fn rejudge(
    rule: &Rule,
    variant: usize,
    old: RuleState,
    key: &SeriesKey,
    now: i64,
    out: &mut Vec<Event>,
) -> RuleState {
    let mut st = RuleState::new();
    st.last_ts = old.last_ts;
    st.last_value = old.last_value.clone();
    st.seen = old.seen;
    st.last_arrival = old.last_arrival;
    if old.stale {
        if rule.stale.is_some() {
            st.stale = true;
            st.stale_started = old.stale_started;
        } else {
            let mut ev = stale_event(rule, key, &old, EventState::Resolved, now, None);
            ev.message = format!(
                "rule '{}' no longer has stale_after after a change; no-data alarm closed",
                rule.name
            );
            out.push(ev);
        }
    }
    if old.notified == Severity::Ok {
        return st;
    }
    let (cond, _) = rule.variant(variant);
    let ts = now.max(old.last_ts);
    let target = old
        .last_value
        .as_ref()
        .and_then(|v| cond.classify(v, old.notified))
        .unwrap_or(Severity::Ok);
    let value = old.last_value.unwrap_or(FieldValue::Float(f64::NAN));
    if target == Severity::Ok {
        out.push(resolved_event(
            rule,
            cond,
            key,
            &value,
            old.notified,
            old.started_ns,
            ts,
        ));
        return st;
    }
    st.active = target;
    st.notified = target;
    st.started_ns = old.started_ns;
    if target != old.notified {
        out.push(firing_event(
            rule,
            cond,
            key,
            &value,
            target,
            old.started_ns,
            ts,
        ));
    }
    st
}

/// Message, labels and annotations of one event, rendered with the same context.
struct Texts {
    message: String,
    labels: Labels,
    annotations: Labels,
}

fn render_extras(templates: &[(Arc<str>, MessageTemplate)], ctx: &RenderContext<'_>) -> Labels {
    templates
        .iter()
        .map(|(name, t)| (name.clone(), t.render(ctx)))
        .collect()
}

/// `message`: the template to use, or `None` for a fixed text (a stale resolve).
#[allow(clippy::too_many_arguments)]
fn render(
    rule: &Rule,
    key: &SeriesKey,
    value: &FieldValue,
    sev: Severity,
    state: &str,
    threshold_text: &str,
    message: Option<&MessageTemplate>,
) -> Texts {
    let ctx = RenderContext {
        rule: &rule.name,
        measurement: &key.measurement,
        field: &rule.field,
        tags: &key.tags,
        series: key,
        value,
        threshold: threshold_text,
        severity: sev,
        state,
    };
    Texts {
        message: message.map(|t| t.render(&ctx)).unwrap_or_default(),
        labels: render_extras(&rule.labels, &ctx),
        annotations: render_extras(&rule.annotations, &ctx),
    }
}

/// The labels a rule puts on every event of `key` (they never depend on the event).
pub(crate) fn rule_labels(rule: &Rule, key: &SeriesKey) -> Labels {
    render(
        rule,
        key,
        &FieldValue::Float(f64::NAN),
        Severity::Ok,
        "",
        "",
        None,
    )
    .labels
}

pub(crate) fn firing_event(
    rule: &Rule,
    cond: &Condition,
    key: &SeriesKey,
    value: &FieldValue,
    sev: Severity,
    started_ns: i64,
    ts: i64,
) -> Event {
    let text = cond.threshold_text(sev, value);
    let t = render(
        rule,
        key,
        value,
        sev,
        EventState::Firing.as_str(),
        &text,
        Some(&rule.message),
    );
    Event {
        rule: rule.name.clone(),
        labels: t.labels,
        annotations: t.annotations,
        series: key.clone(),
        field: rule.field.clone(),
        severity: sev,
        state: EventState::Firing,
        value: value.clone(),
        threshold: cond.threshold(sev, value),
        started_ns,
        timestamp_ns: ts,
        message: t.message,
    }
}

fn resolved_event(
    rule: &Rule,
    cond: &Condition,
    key: &SeriesKey,
    value: &FieldValue,
    last: Severity,
    started_ns: i64,
    ts: i64,
) -> Event {
    let (threshold, text) = cond.resolve_threshold(last, value);
    let t = render(
        rule,
        key,
        value,
        last,
        EventState::Resolved.as_str(),
        &text,
        Some(&rule.resolved_message),
    );
    Event {
        rule: rule.name.clone(),
        labels: t.labels,
        annotations: t.annotations,
        series: key.clone(),
        field: rule.field.clone(),
        severity: last,
        state: EventState::Resolved,
        value: value.clone(),
        threshold,
        started_ns,
        timestamp_ns: ts,
        message: t.message,
    }
}

/// `<rule>:stale` event. `value` is the fresh value for a resolve, else the last one seen.
pub(crate) fn stale_event(
    rule: &Rule,
    key: &SeriesKey,
    st: &RuleState,
    state: EventState,
    ts: i64,
    value: Option<&FieldValue>,
) -> Event {
    let (after, severity) = rule
        .stale
        .as_ref()
        .map_or((std::time::Duration::ZERO, Severity::Warning), |s| {
            (s.after, s.severity)
        });
    let value = value
        .cloned()
        .or_else(|| st.last_value.clone())
        .unwrap_or(FieldValue::Float(f64::NAN));
    let after_text = humantime::format_duration(after).to_string();
    let name = rule.stale_name();
    let firing = state == EventState::Firing;
    let spec = rule.stale.as_ref().filter(|_| firing);
    let mut t = render(
        rule,
        key,
        &value,
        severity,
        if firing { "stale" } else { "resolved" },
        &after_text,
        spec.map(|s| &s.message),
    );
    if spec.is_none() {
        t.message = format!(
            "{name} resolved: {} of {key} reports again ({})",
            rule.field,
            format_value(&value)
        );
    }
    Event {
        rule: name,
        labels: t.labels,
        annotations: t.annotations,
        series: key.clone(),
        field: rule.field.clone(),
        severity,
        state,
        value,
        threshold: None,
        started_ns: st.stale_started.min(ts),
        timestamp_ns: ts,
        message: t.message,
    }
}

/// The value a rule evaluates: the sample's value, or for a rate rule the change over the
/// window (the sample is added to the ring first). `None` for a non-numeric value of a rate
/// rule.
fn evaluated_value(
    rate: Option<super::config::RateSpec>,
    st: &mut RuleState,
    value: &FieldValue,
    ts: i64,
) -> Option<FieldValue> {
    let Some(rate) = rate else {
        return Some(value.clone());
    };
    let x = value.as_f64().filter(|x| x.is_finite())?;
    let horizon = ts.saturating_sub(rate.window_ns());
    while st.ring.front().is_some_and(|(t, _)| *t < horizon) {
        st.ring.pop_front();
    }
    if st.ring.len() >= RATE_RING_CAP {
        st.ring.pop_front();
    }
    st.ring.push_back((ts, x));
    let change = if rate.falling {
        st.ring.iter().map(|(_, v)| *v).fold(x, f64::max) - x
    } else {
        x - st.ring.iter().map(|(_, v)| *v).fold(x, f64::min)
    };
    Some(FieldValue::Float(change))
}

/// Advances one (series, rule) state by one value; false when the rule could not use it
/// (out of order, or a value it cannot evaluate).
#[allow(clippy::too_many_arguments)]
fn step(
    rule: &Rule,
    variant: usize,
    st: &mut RuleState,
    key: &SeriesKey,
    value: &FieldValue,
    ts: i64,
    arrival: i64,
    deps: &Deps<'_>,
    out: &mut Vec<Event>,
) -> bool {
    if ts < st.last_ts {
        metrics::counter!("sitewatch_rules_out_of_order_total").increment(1);
        tracing::debug!(rule = %rule.name, series = %key, ts, last = st.last_ts, "sample older than the last one evaluated; ignored");
        return false;
    }
    let (cond, rate) = rule.variant(variant);
    let target = evaluated_value(rate, st, value, ts)
        .and_then(|v| cond.classify(&v, st.active).map(|t| (v, t)));
    let Some((value, target)) = target else {
        unusable(rule, key, value, &mut st.unusable_warned);
        return false;
    };
    st.last_ts = ts;
    st.last_value = Some(value.clone());
    st.seen = true;
    st.last_arrival = st.last_arrival.max(arrival);
    if st.stale {
        st.stale = false;
        out.push(stale_event(
            rule,
            key,
            st,
            EventState::Resolved,
            ts.max(arrival),
            Some(&value),
        ));
    }

    let for_ns = rule.for_ns();
    let active = st.active;
    let mut fired = Severity::Ok;
    for level in cond.levels() {
        let since = st.since(level);
        if target >= level {
            let start = *since.get_or_insert(ts);
            if level <= active || ts.saturating_sub(start) >= for_ns {
                fired = level;
            }
        } else {
            *since = None;
        }
    }

    // keep_firing_for: the clear has to last before the alert resolves.
    if fired == Severity::Ok && active != Severity::Ok {
        let keep = rule.keep_ns();
        if keep > 0 {
            let since = *st.clear_since.get_or_insert(ts);
            if ts.saturating_sub(since) < keep {
                fired = active;
            }
        }
    } else if fired != Severity::Ok {
        st.clear_since = None;
    }

    if active == Severity::Ok && fired != Severity::Ok {
        if let Some(reason) = deps.inhibited(rule, key) {
            metrics::counter!("sitewatch_rules_inhibited_total", "rule" => rule.name.to_string(), "reason" => reason).increment(1);
            tracing::debug!(rule = %rule.name, series = %key, reason, "alert inhibited");
            fired = Severity::Ok;
        }
    }

    if fired != active {
        st.active = fired;
        st.clear_since = None;
        st.last_change_ts = ts;
        if active == Severity::Ok && st.notified == Severity::Ok {
            // The incident began with the first sample beyond the lowest level now breached.
            st.started_ns = cond
                .levels()
                .filter_map(|l| st.since_at(l))
                .min()
                .unwrap_or(ts);
        }
    }
    notify(rule, cond, st, key, &value, ts, out);
    true
}

/// Emits what changed since the last notification, subject to flapping detection.
fn notify(
    rule: &Rule,
    cond: &Condition,
    st: &mut RuleState,
    key: &SeriesKey,
    value: &FieldValue,
    ts: i64,
    out: &mut Vec<Event>,
) {
    if let Some(flap) = &rule.flapping {
        let window = duration_ns(flap.window);
        if st.flapping {
            if ts.saturating_sub(st.last_change_ts) < window {
                return;
            }
            st.flapping = false;
            st.changes.clear();
            tracing::info!(rule = %rule.name, series = %key, "series stopped flapping");
            if st.active != Severity::Ok {
                // Even at the same severity: the receiver's text still says FLAPPING.
                out.push(firing_event(
                    rule,
                    cond,
                    key,
                    value,
                    st.active,
                    st.started_ns,
                    ts,
                ));
                st.notified = st.active;
                return;
            }
        }
        if st.active != st.notified {
            let horizon = ts.saturating_sub(window);
            while st.changes.front().is_some_and(|t| *t < horizon) {
                st.changes.pop_front();
            }
            st.changes.push_back(ts);
            if st.changes.len() > flap.changes as usize {
                st.flapping = true;
                let sev = st.active.max(st.notified);
                metrics::counter!("sitewatch_rules_flapping_total", "rule" => rule.name.to_string())
                    .increment(1);
                let mut ev = firing_event(rule, cond, key, value, sev, st.started_ns, ts);
                ev.message = format!(
                    "FLAPPING: {} of {key} changed state {} times within {}; further changes are not notified until it is stable for {} ({})",
                    rule.field,
                    st.changes.len(),
                    humantime::format_duration(flap.window),
                    humantime::format_duration(flap.window),
                    ev.message
                );
                out.push(ev);
                st.notified = sev;
                return;
            }
        }
    }
    if st.active == st.notified {
        return;
    }
    let prev = st.notified;
    st.notified = st.active;
    if st.active == Severity::Ok {
        out.push(resolved_event(
            rule,
            cond,
            key,
            value,
            prev,
            st.started_ns,
            ts,
        ));
        st.started_ns = 0;
    } else {
        out.push(firing_event(
            rule,
            cond,
            key,
            value,
            st.active,
            st.started_ns,
            ts,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TagSet;
    use crate::rules::config::parse_rules;
    use std::path::Path;

    const S: i64 = 1_000_000_000;

    fn rules(text: &str) -> RuleSet {
        RuleSet::new(parse_rules(text, Path::new("t.toml")).unwrap()).unwrap()
    }

    fn rule(name: &str, body: &str) -> String {
        format!("[[rule]]\nname = \"{name}\"\nmeasurement = \"env\"\nfield = \"t\"\n{body}\n")
    }

    fn series(rack: &str) -> SeriesKey {
        SeriesKey::new("env", TagSet::new([("rack", rack), ("site", "dc1")]))
    }

    fn sample(rack: &str, ts_s: i64, v: FieldValue) -> Sample {
        Sample::new(series(rack), ts_s * S).with_field("t", v)
    }

    /// (ts in s, state, severity, value) per event, compact for table comparisons.
    type Ev = (i64, &'static str, &'static str, f64);
    /// (rule body, samples as (ts in s, value), expected events)
    type Case<'a> = (&'a str, &'a [(i64, f64)], &'a [Ev]);

    fn compact(events: &[Event]) -> Vec<Ev> {
        events
            .iter()
            .map(|e| {
                (
                    e.timestamp_ns / S,
                    e.state.as_str(),
                    e.severity.as_str(),
                    e.value.as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect()
    }

    /// (rule, ts in s, state, severity) per event, for tests that span several rules.
    fn by_rule(events: &[Event]) -> Vec<(&str, i64, &'static str, &'static str)> {
        events
            .iter()
            .map(|e| {
                (
                    &*e.rule,
                    e.timestamp_ns / S,
                    e.state.as_str(),
                    e.severity.as_str(),
                )
            })
            .collect()
    }

    fn run(engine: &mut Engine, rack: &str, seq: &[(i64, f64)]) -> Vec<Event> {
        let mut out = Vec::new();
        for &(ts, v) in seq {
            engine.observe(&sample(rack, ts, FieldValue::Float(v)), &mut out);
        }
        out
    }

    const TEMP: &str =
        "above = { warning = 27.0, warning_clear = 26.0, critical = 32.0, critical_clear = 31.0 }";

    #[test]
    fn threshold_sequences() {
        // (rule body, samples (ts s, value), expected events)
        let cases: &[Case] = &[
            // Hysteresis: hovering between clear and level does not flap.
            (
                TEMP,
                &[
                    (0, 25.0),
                    (1, 27.5),
                    (2, 26.5),
                    (3, 27.2),
                    (4, 26.1),
                    (5, 26.0),
                    (6, 27.1),
                ],
                &[
                    (1, "firing", "warning", 27.5),
                    (5, "resolved", "warning", 26.0),
                    (6, "firing", "warning", 27.1),
                ],
            ),
            // Exactly at the level is not above it.
            (
                TEMP,
                &[(0, 27.0), (1, 32.0)],
                &[(1, "firing", "warning", 32.0)],
            ),
            // Escalation and de-escalation: warning → critical → warning → ok.
            (
                TEMP,
                &[
                    (0, 28.0),
                    (1, 33.0),
                    (2, 31.5),
                    (3, 30.9),
                    (4, 28.0),
                    (5, 25.0),
                ],
                &[
                    (0, "firing", "warning", 28.0),
                    (1, "firing", "critical", 33.0),
                    (3, "firing", "warning", 30.9),
                    (5, "resolved", "warning", 25.0),
                ],
            ),
            // Straight to critical and straight back to ok: one event each.
            (
                TEMP,
                &[(0, 40.0), (1, 20.0)],
                &[
                    (0, "firing", "critical", 40.0),
                    (1, "resolved", "critical", 20.0),
                ],
            ),
            // Below rules mirror above rules.
            (
                "below = { warning = 20.0, warning_clear = 22.0, critical = 10.0 }",
                &[
                    (0, 30.0),
                    (1, 19.0),
                    (2, 21.0),
                    (3, 9.0),
                    (4, 10.0),
                    (5, 22.0),
                    (6, 22.5),
                ],
                &[
                    (1, "firing", "warning", 19.0),
                    (3, "firing", "critical", 9.0),
                    (4, "firing", "warning", 10.0),
                    (5, "resolved", "warning", 22.0),
                ],
            ),
            // for: a short spike does not fire; a sustained breach fires once, at the first
            // sample at least `for` after the first breaching sample.
            (
                "above = { warning = 27.0 }\nfor = \"30s\"",
                &[
                    (0, 28.0),
                    (10, 28.0),
                    (20, 26.0),
                    (30, 28.0),
                    (50, 29.0),
                    (60, 29.0),
                    (70, 29.0),
                    (80, 26.0),
                ],
                &[
                    (60, "firing", "warning", 29.0),
                    (80, "resolved", "warning", 26.0),
                ],
            ),
            // for applies to escalation too; a critical spike inside a warning does not page.
            (
                &format!("{TEMP}\nfor = \"10s\""),
                &[
                    (0, 28.0),
                    (10, 28.0),
                    (12, 35.0),
                    (15, 28.0),
                    (20, 35.0),
                    (29, 35.0),
                    (30, 35.0),
                    (31, 20.0),
                ],
                &[
                    (10, "firing", "warning", 28.0),
                    (30, "firing", "critical", 35.0),
                    (31, "resolved", "critical", 20.0),
                ],
            ),
            // Straight from ok to a sustained critical: fires critical once `for` has passed.
            (
                &format!("{TEMP}\nfor = \"10s\""),
                &[(0, 35.0), (5, 35.0), (10, 35.0)],
                &[(10, "firing", "critical", 35.0)],
            ),
            // Out-of-order samples are ignored for state.
            (
                TEMP,
                &[(10, 28.0), (5, 20.0), (11, 28.5), (9, 20.0), (12, 25.0)],
                &[
                    (10, "firing", "warning", 28.0),
                    (12, "resolved", "warning", 25.0),
                ],
            ),
            // Only a critical level.
            (
                "above = { critical = 0.5 }",
                &[(0, 0.0), (1, 1.0), (2, 1.0), (3, 0.0)],
                &[
                    (1, "firing", "critical", 1.0),
                    (3, "resolved", "critical", 0.0),
                ],
            ),
        ];
        for (i, (body, seq, expected)) in cases.iter().enumerate() {
            let mut e = Engine::new(rules(&rule("r", body)));
            let got = compact(&run(&mut e, "r1", seq));
            assert_eq!(&got, expected, "case {i}: {body}");
        }
    }

    #[test]
    fn incident_start_and_threshold_are_reported() {
        let mut e = Engine::new(rules(&rule(
            "r",
            &format!("{TEMP}\nfor = \"10s\"\nmatch = {{ rack = \"*\" }}\nmessage = \"{{rack}}: {{value}} > {{threshold}} ({{severity}})\"\nresolved_message = \"{{rack}} ok at {{value}} (< {{threshold}})\""),
        )));
        let ev = run(
            &mut e,
            "r1",
            &[
                (0, 28.0),
                (5, 33.0),
                (10, 33.0),
                (15, 33.0),
                (20, 30.0),
                (21, 25.0),
            ],
        );
        assert_eq!(ev.len(), 4, "{ev:#?}");
        assert_eq!(ev[0].severity, Severity::Warning);
        assert_eq!(ev[0].started_ns, 0);
        assert_eq!(ev[0].threshold, Some(27.0));
        assert_eq!(ev[0].message, "r1: 33 > 27 (warning)");
        assert_eq!(ev[1].severity, Severity::Critical);
        assert_eq!(ev[1].timestamp_ns, 15 * S);
        assert_eq!(ev[1].started_ns, 0, "escalation keeps the first breach");
        assert_eq!(ev[1].threshold, Some(32.0));
        assert_eq!(ev[2].severity, Severity::Warning);
        assert_eq!(ev[2].state, EventState::Firing);
        assert_eq!(ev[2].started_ns, 0);
        assert_eq!(ev[3].state, EventState::Resolved);
        assert_eq!(ev[3].severity, Severity::Warning);
        assert_eq!(ev[3].threshold, Some(26.0));
        assert_eq!(ev[3].message, "r1 ok at 25 (< 26)");
        assert_eq!(ev[3].started_ns, 0);
        assert_eq!(e.firing_count(), 0);
    }

    #[test]
    fn equals_on_strings_and_bools() {
        let text = format!(
            "{}{}",
            "[[rule]]\nname = \"ups\"\nmeasurement = \"ups\"\nfield = \"output_source\"\nequals = { warning = \"bypass\", critical = \"battery\" }\nmessage = \"UPS on {value}\"\n",
            "[[rule]]\nname = \"leak\"\nmeasurement = \"env\"\nfield = \"leak\"\nequals = { critical = true }\n",
        );
        let mut e = Engine::new(rules(&text));
        let ups = SeriesKey::new("ups", TagSet::new([("ups", "u1")]));
        let mut out = Vec::new();
        for (ts, v) in [(0, "normal"), (1, "battery"), (2, "bypass"), (3, "normal")] {
            e.observe(
                &Sample::new(ups.clone(), ts * S)
                    .with_field("output_source", FieldValue::Str(v.into())),
                &mut out,
            );
        }
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.state.as_str(), e.severity.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("firing", "critical", "UPS on battery"),
                ("firing", "warning", "UPS on bypass"),
                ("resolved", "warning", "ups resolved: output_source of ups,ups=u1 is back to normal (threshold bypass)"),
            ]
        );
        out.clear();
        let leak = SeriesKey::new("env", TagSet::new([("sensor", "floor1")]));
        for (ts, v) in [
            (0, FieldValue::Bool(false)),
            (1, FieldValue::Bool(true)),
            (2, FieldValue::Int(1)),
            (3, FieldValue::Str("wet".into())),
            (4, FieldValue::Bool(false)),
        ] {
            e.observe(
                &Sample::new(leak.clone(), ts * S).with_field("leak", v),
                &mut out,
            );
        }
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.timestamp_ns / S, e.state.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(1, "firing"), (4, "resolved")],
            "a string on a bool rule is ignored"
        );
        assert_eq!(out[0].severity, Severity::Critical);
        assert_eq!(out[0].threshold, None);
    }

    #[test]
    fn tag_globs_select_series() {
        let text = rule(
            "r",
            "above = { warning = 1.0 }\nmatch = { rack = \"a*\", site = \"!lab*\" }",
        );
        let mut e = Engine::new(rules(&text));
        let cases = [
            (vec![("rack", "a1"), ("site", "dc1")], true),
            (vec![("rack", "a1")], true),
            (vec![("rack", "b1"), ("site", "dc1")], false),
            (vec![("rack", "a1"), ("site", "lab2")], false),
            (vec![("site", "dc1")], false),
        ];
        for (i, (tags, fires)) in cases.into_iter().enumerate() {
            let key = SeriesKey::new("env", TagSet::new(tags.clone()));
            let mut out = Vec::new();
            // Twice: the second time the cached match decision is used.
            for ts in [0, 1] {
                e.observe(
                    &Sample::new(key.clone(), ts).with_field("t", FieldValue::Float(5.0)),
                    &mut out,
                );
            }
            assert_eq!(out.len(), usize::from(fires), "case {i}: {tags:?}");
        }
        // Other measurements and fields are not evaluated at all.
        let mut out = Vec::new();
        e.observe(
            &Sample::new(SeriesKey::new("ups", TagSet::new([("rack", "a9")])), 0)
                .with_field("t", FieldValue::Float(5.0)),
            &mut out,
        );
        e.observe(
            &Sample::new(SeriesKey::new("env", TagSet::new([("rack", "a9")])), 0)
                .with_field("humidity", FieldValue::Float(5.0)),
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn replace_rules_keeps_unchanged_and_rejudges_changed() {
        let a = rule("a", "above = { warning = 27.0 }");
        let b = rule("b", "above = { warning = 30.0 }");
        let c = rule("c", "above = { warning = 10.0 }\nfor = \"1m\"");
        let d = rule("d", "above = { warning = 20.0 }");
        let mut e = Engine::new(rules(&format!("{a}{b}{c}{d}")));
        let ev = run(&mut e, "r1", &[(0, 31.0), (10, 31.0)]);
        // a, b, d fire; c is pending.
        assert_eq!(ev.len(), 3);
        assert_eq!(e.firing_count(), 3);

        // a: unchanged except its message → keeps state silently.
        let a2 = format!("{a}message = \"new text {{value}}\"\n");
        // b: threshold raised above the last value → resolved now.
        let b2 = rule("b", "above = { warning = 35.0 }");
        // c: changed while pending → pending restarts.
        let c2 = rule("c", "above = { warning = 10.0 }\nfor = \"2m\"");
        // d: removed → resolved.
        let ev = e.replace_rules(rules(&format!("{a2}{b2}{c2}")));
        let got: Vec<_> = ev.iter().map(|e| (&*e.rule, e.state.as_str())).collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![("b", "resolved"), ("d", "resolved")],
            "{ev:#?}"
        );
        assert_eq!(e.firing_count(), 1);

        // a still firing: no new event while breaching, and the new message is used on resolve.
        let ev = run(&mut e, "r1", &[(20, 31.0), (100, 31.0)]);
        assert!(ev.iter().all(|e| &*e.rule != "a"), "{ev:#?}");
        // c: pending restarted at 20 s under the new rule, so it fires at 140 s, not at 60 s.
        assert!(ev.is_empty(), "{ev:#?}");
        let ev = run(&mut e, "r1", &[(140, 31.0)]);
        assert_eq!(compact(&ev), vec![(140, "firing", "warning", 31.0)]);
        assert_eq!(&*ev[0].rule, "c");

        // A changed rule whose condition still holds keeps firing without a resolve flash.
        let a3 = rule("a", "above = { warning = 29.0 }");
        let ev = e.replace_rules(rules(&format!("{a3}{c2}")));
        assert!(ev.is_empty(), "{ev:#?}");
        let ev = run(&mut e, "r1", &[(150, 5.0)]);
        let got: Vec<_> = ev.iter().map(|e| (&*e.rule, e.state.as_str())).collect();
        assert_eq!(got, vec![("a", "resolved"), ("c", "resolved")]);
        assert_eq!(e.firing_count(), 0);
    }

    #[test]
    fn series_are_independent() {
        let mut e = Engine::new(rules(&rule("r", TEMP)));
        let mut out = Vec::new();
        e.observe(&sample("r1", 0, FieldValue::Float(28.0)), &mut out);
        e.observe(&sample("r2", 0, FieldValue::Float(20.0)), &mut out);
        e.observe(&sample("r2", 1, FieldValue::Float(29.0)), &mut out);
        e.observe(&sample("r1", 2, FieldValue::Float(20.0)), &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    e.series.tags.get("rack").unwrap().to_string(),
                    e.state.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("r1".to_string(), "firing"),
                ("r2".to_string(), "firing"),
                ("r1".to_string(), "resolved")
            ]
        );
        assert_eq!(e.firing_count(), 1);
    }

    #[test]
    fn nan_and_strings_do_not_change_state() {
        let mut e = Engine::new(rules(&rule("r", TEMP)));
        let mut out = Vec::new();
        e.observe(&sample("r1", 0, FieldValue::Float(28.0)), &mut out);
        e.observe(&sample("r1", 1, FieldValue::Float(f64::NAN)), &mut out);
        e.observe(&sample("r1", 2, FieldValue::Str("n/a".into())), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(e.firing_count(), 1);
    }

    /// The shipped rule files (deploy/rules/*.toml), all loaded together as
    /// `rules/*.toml` loads them.
    fn shipped_rules() -> RuleSet {
        let mut rules = Vec::new();
        for (path, text) in [
            (
                "deploy/rules/facility.toml",
                include_str!("../../deploy/rules/facility.toml"),
            ),
            (
                "deploy/rules/environment.toml",
                include_str!("../../deploy/rules/environment.toml"),
            ),
            (
                "deploy/rules/power.toml",
                include_str!("../../deploy/rules/power.toml"),
            ),
            (
                "deploy/rules/cooling.toml",
                include_str!("../../deploy/rules/cooling.toml"),
            ),
        ] {
            rules.extend(parse_rules(text, Path::new(path)).unwrap());
        }
        RuleSet::new(rules).unwrap()
    }

    /// The shipped rules behave as their comments promise on demo-like traffic, named as
    /// docs/naming.md says.
    #[test]
    fn shipped_rules_fire_on_a_cooling_fault_a_leak_and_an_overloaded_phase() {
        let set = shipped_rules();
        assert_eq!(set.len(), 23);
        let mut e = Engine::new(set);
        let mut out = Vec::new();
        let env = SeriesKey::new(
            "environment",
            TagSet::new([("device", "env-a03"), ("rack", "a03"), ("site", "dc1")]),
        );
        // Climbs past 27 °C at 16 s, holds ~30 °C, drops back at 45 s.
        for t in 0..60i64 {
            let temp = match t {
                0..=15 => 24.0,
                16..=44 => 30.0,
                _ => 25.0,
            };
            let s = Sample::new(env.clone(), t * S)
                .with_field("temperature_c", FieldValue::Float(temp))
                .with_field("humidity_pct", FieldValue::Float(45.0));
            e.observe(&s, &mut out);
        }
        let got: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    &*e.rule,
                    e.timestamp_ns / S,
                    e.state.as_str(),
                    e.message.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "rack_inlet_rising",
                    16,
                    "firing",
                    "env-a03: inlet temperature rose 6 °C within 10 min (limit 5 °C, critical)"
                ),
                (
                    "rack_inlet_temperature",
                    36,
                    "firing",
                    "env-a03: inlet temperature 30 °C is above 27 °C (warning)"
                ),
                (
                    "rack_inlet_temperature",
                    45,
                    "resolved",
                    "env-a03: inlet temperature back to 25 °C (at or below 26 °C)"
                ),
                (
                    "rack_inlet_rising",
                    45,
                    "resolved",
                    "env-a03: inlet temperature stable again (rise 1 °C within 10 min)"
                ),
            ]
        );
        out.clear();
        let leak = SeriesKey::new("leak", TagSet::new([("sensor", "underfloor-1")]));
        for (t, wet) in [(0, false), (30, true), (31, true), (40, false)] {
            e.observe(
                &Sample::new(leak.clone(), t * S).with_field("leak", FieldValue::Bool(wet)),
                &mut out,
            );
        }
        let pdu = SeriesKey::new(
            "pdu_phase",
            TagSet::new([("device", "pdu-a01"), ("phase", "L1")]),
        );
        for (t, amps) in [(0, 13.0), (30, 13.1), (40, 12.5), (50, 11.9)] {
            e.observe(
                &Sample::new(pdu.clone(), t * S).with_field("current_a", FieldValue::Float(amps)),
                &mut out,
            );
        }
        let got = by_rule(&out);
        assert_eq!(
            got,
            vec![
                ("water_leak", 30, "firing", "critical"),
                ("water_leak", 40, "resolved", "critical"),
                ("pdu_phase_current", 30, "firing", "warning"),
                ("pdu_phase_current", 50, "resolved", "warning"),
            ]
        );
        assert_eq!(out[0].message, "WATER DETECTED by leak,sensor=underfloor-1");
        assert_eq!(
            out[2].message,
            "PDU pdu-a01 phase L1: 13.1 A is above 12.8 A (80 % of a 16 A circuit)"
        );

        // A dead flood sensor pages; a PDU behind an unreachable SNMP agent does not page for
        // its phases, the device alarm does.
        out.clear();
        e.tick(100 * S, &mut out);
        e.observe(
            &Sample::new(leak.clone(), 100 * S).with_field("leak", FieldValue::Bool(false)),
            &mut out,
        );
        let poll = SeriesKey::new(POLL_MEASUREMENT, TagSet::new([("device", "pdu-b01")]));
        let pdu_b = SeriesKey::new(
            "pdu_phase",
            TagSet::new([("phase", "L1"), ("device", "pdu-b01")]),
        );
        for t in [100, 130, 160, 190, 220] {
            e.observe(
                &Sample::new(poll.clone(), t * S).with_field("up", FieldValue::Bool(false)),
                &mut out,
            );
            e.observe(
                &Sample::new(pdu_b.clone(), t * S)
                    .with_field("current_a", FieldValue::Float(14.0))
                    .with_field("load_state_severity", FieldValue::Int(2)),
                &mut out,
            );
        }
        e.tick(280 * S, &mut out);
        let got = by_rule(&out);
        assert_eq!(
            got,
            vec![
                ("snmp_device_down", 190, "firing", "critical"),
                ("water_leak:stale", 280, "firing", "critical"),
            ]
        );
        assert_eq!(
            out[1].message,
            "leak sensor leak,sensor=underfloor-1 has not reported for 3m: floor NOT monitored"
        );
    }

    /// The shipped UPS, PDU and cooling rules on the fields the SNMP profiles write
    /// (docs/naming.md): a mains failure with falling runtime, a PDU reporting its own load
    /// state, and a cooling unit in alarm.
    #[test]
    fn shipped_rules_fire_on_a_mains_failure_a_loaded_phase_and_a_cooling_alarm() {
        let mut e = Engine::new(shipped_rules());
        let mut out = Vec::new();
        let ups = SeriesKey::new("ups", TagSet::new([("device", "ups-a"), ("site", "dc1")]));
        // (t, output source, runtime min, battery severity, replace)
        for (t, source, runtime, battery, replace) in [
            (0, "normal", 25.0, 0, false),
            (60, "battery", 8.0, 0, false),
            (120, "battery", 4.0, 1, false),
            (180, "normal", 4.5, 0, false),
            (240, "normal", 13.0, 0, false),
            (300, "normal", 25.0, 0, true),
        ] {
            let s = Sample::new(ups.clone(), t * S)
                .with_field("output_source", FieldValue::Int(3))
                .with_field("output_source_state", FieldValue::Str(source.into()))
                .with_field("battery_runtime_min", FieldValue::Float(runtime))
                .with_field("battery_status_severity", FieldValue::Int(battery))
                .with_field("battery_replace", FieldValue::Bool(replace))
                .with_field("output_load_pct", FieldValue::Float(40.0));
            e.observe(&s, &mut out);
        }
        assert_eq!(
            by_rule(&out),
            vec![
                ("ups_on_battery", 60, "firing", "critical"),
                // Below 10 min since 60 s: warning after the minute of `for`; below 5 min
                // since 120 s: critical a minute later.
                ("ups_battery_runtime", 120, "firing", "warning"),
                ("ups_battery_low", 120, "firing", "warning"),
                ("ups_battery_runtime", 180, "firing", "critical"),
                ("ups_battery_low", 180, "resolved", "warning"),
                ("ups_battery_runtime", 240, "resolved", "critical"),
                ("ups_on_battery", 300, "resolved", "critical"),
                ("ups_battery_replace", 300, "firing", "warning"),
            ]
        );
        assert_eq!(
            out[0].message,
            "UPS ups-a is ON BATTERY: mains failed or out of tolerance"
        );
        assert_eq!(
            out[1].message,
            "UPS ups-a: battery runtime 4 min is below 10 min (warning)"
        );
        assert_eq!(
            out[3].message,
            "UPS ups-a: battery runtime 4.5 min is below 5 min (critical)"
        );

        // The PDU's own load state fires first; the 16 A current rule adds no second alarm
        // for the same phase.
        out.clear();
        let phase = SeriesKey::new(
            "pdu_phase",
            TagSet::new([("device", "pdu-c01"), ("phase", "L2")]),
        );
        for t in [0, 10, 20, 30, 40, 50] {
            let s = Sample::new(phase.clone(), t * S)
                .with_field("load_state", FieldValue::Int(3))
                .with_field("load_state_state", FieldValue::Str("near_overload".into()))
                .with_field("load_state_severity", FieldValue::Int(1))
                .with_field("current_a", FieldValue::Float(13.5));
            e.observe(&s, &mut out);
        }
        let cooling = SeriesKey::new("cooling", TagSet::new([("device", "crac-1")]));
        for t in [0, 30, 60] {
            let s = Sample::new(cooling.clone(), t * S)
                .with_field("system_state_state", FieldValue::Str("off".into()))
                .with_field("system_state_severity", FieldValue::Int(2))
                .with_field("alarm", FieldValue::Bool(true))
                .with_field("supply_air_c", FieldValue::Float(21.0));
            e.observe(&s, &mut out);
        }
        // A rack PDU's probes: the rear and hot-aisle ones are not inlets.
        for t in [0, 30] {
            for (sensor, temp) in [
                ("Rack Rear", 35.2),
                ("Hot aisle", 38.0),
                ("Rack Front", 33.0),
            ] {
                let key = SeriesKey::new(
                    "environment",
                    TagSet::new([("device", "rpdu-a01"), ("sensor", sensor)]),
                );
                e.observe(
                    &Sample::new(key, t * S).with_field("temperature_c", FieldValue::Float(temp)),
                    &mut out,
                );
            }
        }
        assert_eq!(
            by_rule(&out),
            vec![
                ("pdu_phase_load", 20, "firing", "warning"),
                ("cooling_unit_alarm", 0, "firing", "warning"),
                ("cooling_unit_state", 60, "firing", "critical"),
                ("rack_inlet_temperature", 30, "firing", "critical"),
            ]
        );
        assert_eq!(out[3].series.tags.get("sensor"), Some("Rack Front"));
        assert_eq!(
            out[0].message,
            "PDU pdu-c01 phase L2: load warning (near overload or overload)"
        );
    }

    /// A Modbus device that stops answering holds back its series' alarms like an SNMP
    /// device does, and they fire again once it answers.
    #[test]
    fn a_modbus_device_down_inhibits_its_series() {
        let mut e = Engine::new(rules(&rule(
            "hot",
            "match = { device = \"*\" }\nabove = { critical = 30.0 }",
        )));
        let mut out = Vec::new();
        let health = SeriesKey::new("modbus_poll", TagSet::new([("device", "chiller-1")]));
        let temp = SeriesKey::new("env", TagSet::new([("device", "chiller-1")]));
        e.observe(
            &Sample::new(health.clone(), S).with_field("up", FieldValue::Bool(false)),
            &mut out,
        );
        e.observe(
            &Sample::new(temp.clone(), 2 * S).with_field("t", FieldValue::Float(35.0)),
            &mut out,
        );
        assert!(out.is_empty(), "inhibited while down: {out:?}");
        e.observe(
            &Sample::new(health, 3 * S).with_field("up", FieldValue::Bool(true)),
            &mut out,
        );
        e.observe(
            &Sample::new(temp, 4 * S).with_field("t", FieldValue::Float(35.0)),
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].state, EventState::Firing);
    }

    /// One step of a scripted scenario.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// (rack, ts in s, value)
        V(&'static str, i64, f64),
        /// Engine clock in s.
        Tick(i64),
        /// `snmp_poll` sample of device `dev1` at ts in s with `up`.
        Up(i64, bool),
    }

    /// (rule name, ts in s, state, severity, rack) per event.
    type Got = (String, i64, &'static str, &'static str, String);

    fn script(e: &mut Engine, steps: &[Step]) -> Vec<Got> {
        let mut out = Vec::new();
        for s in steps {
            match *s {
                Step::V(rack, ts, v) => {
                    let key = SeriesKey::new(
                        "env",
                        TagSet::new([("rack", rack), ("site", "dc1"), ("device", "dev1")]),
                    );
                    e.observe(
                        &Sample::new(key, ts * S).with_field("t", FieldValue::Float(v)),
                        &mut out,
                    );
                }
                Step::Tick(ts) => e.tick(ts * S, &mut out),
                Step::Up(ts, up) => e.observe(
                    &Sample::new(
                        SeriesKey::new(POLL_MEASUREMENT, TagSet::new([("device", "dev1")])),
                        ts * S,
                    )
                    .with_field("up", FieldValue::Bool(up)),
                    &mut out,
                ),
            }
        }
        out.iter()
            .map(|e| {
                (
                    e.rule.to_string(),
                    e.timestamp_ns / S,
                    e.state.as_str(),
                    e.severity.as_str(),
                    e.series.tags.get("rack").unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn got(rule: &str, ts: i64, state: &'static str, sev: &'static str, rack: &str) -> Got {
        (rule.to_string(), ts, state, sev, rack.to_string())
    }

    /// Issue 12: one sample stamped a year ahead must not blind the rule for its series.
    #[test]
    fn a_future_timestamp_does_not_blind_the_series() {
        use Step::*;
        let mut e = Engine::new(rules(&rule("hot", "above = { critical = 32.0 }")));
        let year = 365 * 24 * 3600;
        let events = script(
            &mut e,
            &[
                Tick(1000),
                V("r1", 1000, 20.0),
                // A device clock a year ahead, once: not evaluated (stored as usual).
                V("r1", 1000 + year, 20.0),
                Tick(1001),
                // Correct clocks again, and hot: must page.
                V("r1", 1001, 35.0),
            ],
        );
        assert_eq!(events, vec![got("hot", 1001, "firing", "critical", "r1")]);
        // A little ahead (a device clock a minute fast) is still evaluated.
        let events2 = script(&mut e, &[Tick(1002), V("r2", 1062, 35.0)]);
        assert_eq!(events2, vec![got("hot", 1062, "firing", "critical", "r2")]);
    }

    /// Issue 12: a device that comes back after an outage does not page "stale" at once:
    /// while it was down (inhibited) its no-data clock restarts.
    #[test]
    fn a_device_back_from_down_is_not_stale_at_once() {
        use Step::*;
        let body = "above = { critical = 50.0 }\nstale_after = \"5m\"";
        let mut e = Engine::new(rules(&rule("r", body)));
        let events = script(
            &mut e,
            &[
                Tick(0),
                Up(0, true),
                V("r1", 0, 20.0),
                Tick(60),
                Up(60, false),
                // Down for an hour: its sensors send nothing, the device alarm covers it.
                Tick(400),
                Tick(2000),
                Tick(3600),
                Up(3600, true),
                Tick(3601),
                Tick(3700),
            ],
        );
        assert!(events.is_empty(), "no stale page on recovery: {events:?}");
        // Still silent 5 min after it came back: now it is stale.
        let later = script(&mut e, &[Tick(3600 + 301), Tick(3600 + 400)]);
        assert_eq!(later.len(), 1, "{later:?}");
        assert_eq!(later[0].0, "r:stale");
    }

    #[test]
    fn band_sequences() {
        let outside = "outside = { warning = [18.0, 27.0], warning_clear = [19.0, 26.0], critical = [15.0, 32.0], critical_clear = [16.0, 31.0] }";
        let inside = "inside = { warning = [49.5, 50.5], warning_clear = [49.0, 51.0] }";
        let cases: &[Case] = &[
            // Leaves the band upwards, hovers in the clear band, comes back inside it.
            (
                outside,
                &[
                    (0, 22.0),
                    (1, 27.5),
                    (2, 26.5),
                    (3, 25.9),
                    (4, 33.0),
                    (5, 31.5),
                    (6, 30.0),
                    (7, 22.0),
                ],
                &[
                    (1, "firing", "warning", 27.5),
                    (3, "resolved", "warning", 25.9),
                    (4, "firing", "critical", 33.0),
                    (6, "firing", "warning", 30.0),
                    (7, "resolved", "warning", 22.0),
                ],
            ),
            // Downwards: too cold is as much an alarm as too hot.
            (
                outside,
                &[
                    (0, 22.0),
                    (1, 17.0),
                    (2, 18.5),
                    (3, 14.0),
                    (4, 15.5),
                    (5, 16.5),
                    (6, 20.0),
                ],
                &[
                    (1, "firing", "warning", 17.0),
                    (3, "firing", "critical", 14.0),
                    (5, "firing", "warning", 16.5),
                    (6, "resolved", "warning", 20.0),
                ],
            ),
            // Edges are not outside.
            (outside, &[(0, 18.0), (1, 27.0)], &[]),
            // inside: fires within the band, clears only outside the wider clear band.
            (
                inside,
                &[
                    (0, 48.0),
                    (1, 50.0),
                    (2, 50.8),
                    (3, 51.2),
                    (4, 49.2),
                    (5, 50.0),
                ],
                &[
                    (1, "firing", "warning", 50.0),
                    (3, "resolved", "warning", 51.2),
                    (5, "firing", "warning", 50.0),
                ],
            ),
        ];
        for (i, (body, seq, expected)) in cases.iter().enumerate() {
            let mut e = Engine::new(rules(&rule("r", body)));
            let got = compact(&run(&mut e, "r1", seq));
            assert_eq!(&got, expected, "case {i}: {body}");
        }
        // The threshold reported is the edge that was crossed.
        let mut e = Engine::new(rules(&rule(
            "r",
            &format!("{outside}\nmessage = \"{{value}} outside, limit {{threshold}}\"\nresolved_message = \"ok at {{value}} ({{threshold}})\""),
        )));
        let ev = run(
            &mut e,
            "r1",
            &[(0, 17.0), (1, 20.0), (2, 27.3333333), (3, 25.0)],
        );
        let got: Vec<_> = ev
            .iter()
            .map(|e| (e.threshold, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(18.0), "17 outside, limit 18"),
                (Some(19.0), "ok at 20 (19)"),
                (Some(27.0), "27.333 outside, limit 27"),
                (Some(26.0), "ok at 25 (26)"),
            ]
        );
    }

    #[test]
    fn keep_firing_for_sequences() {
        let cases: &[Case] = &[
            // A dip below the clear value shorter than keep_firing_for does not resolve.
            (
                "above = { warning = 27.0 }\nkeep_firing_for = \"30s\"",
                &[
                    (0, 28.0),
                    (10, 26.0),
                    (20, 28.0),
                    (30, 26.0),
                    (50, 26.0),
                    (60, 26.0),
                    (70, 28.0),
                ],
                &[
                    (0, "firing", "warning", 28.0),
                    (60, "resolved", "warning", 26.0),
                    (70, "firing", "warning", 28.0),
                ],
            ),
            // De-escalation is not delayed, only the resolve.
            (
                "above = { warning = 27.0, critical = 32.0 }\nkeep_firing_for = \"1m\"",
                &[(0, 33.0), (10, 28.0), (20, 20.0), (50, 20.0), (80, 20.0)],
                &[
                    (0, "firing", "critical", 33.0),
                    (10, "firing", "warning", 28.0),
                    (80, "resolved", "warning", 20.0),
                ],
            ),
            // With `for`: fires after `for`, resolves after keep_firing_for.
            (
                "above = { warning = 27.0 }\nfor = \"20s\"\nkeep_firing_for = \"20s\"",
                &[
                    (0, 28.0),
                    (10, 28.0),
                    (20, 28.0),
                    (30, 20.0),
                    (40, 20.0),
                    (50, 20.0),
                ],
                &[
                    (20, "firing", "warning", 28.0),
                    (50, "resolved", "warning", 20.0),
                ],
            ),
        ];
        for (i, (body, seq, expected)) in cases.iter().enumerate() {
            let mut e = Engine::new(rules(&rule("r", body)));
            let got = compact(&run(&mut e, "r1", seq));
            assert_eq!(&got, expected, "case {i}: {body}");
            assert_eq!(
                e.firing_count(),
                usize::from(expected.last().is_some_and(|l| l.1 == "firing")),
                "case {i}"
            );
        }
    }

    #[test]
    fn rate_sequences() {
        let cases: &[Case] = &[
            // Rising 2 °C within 10 min warns, 4 °C pages; the value is the rise.
            (
                "rate = { window = \"10m\", warning = 2.0, critical = 4.0 }",
                &[
                    (0, 22.0),
                    (60, 22.5),
                    (120, 23.0),
                    (180, 24.5),
                    (240, 26.5),
                    (300, 26.5),
                    (960, 26.6),
                ],
                &[
                    (180, "firing", "warning", 2.5),
                    (240, "firing", "critical", 4.5),
                    // The window no longer holds the rise.
                    (960, "resolved", "critical", 0.0),
                ],
            ),
            // A slow drift over hours never fires: the window only sees 1 °C.
            (
                "rate = { window = \"10m\", warning = 2.0 }",
                &[
                    (0, 20.0),
                    (600, 21.0),
                    (1200, 22.0),
                    (1800, 23.0),
                    (2400, 24.0),
                ],
                &[],
            ),
            // Falling: a drop from the window's highest value.
            (
                "rate = { window = \"5m\", falling = true, warning = 3.0, warning_clear = 1.0 }",
                &[
                    (0, 50.0),
                    (60, 52.0),
                    (120, 48.5),
                    (180, 48.0),
                    (420, 48.0),
                    (480, 48.2),
                ],
                &[
                    (120, "firing", "warning", 3.5),
                    (420, "resolved", "warning", 0.5),
                ],
            ),
        ];
        for (i, (body, seq, expected)) in cases.iter().enumerate() {
            let mut e = Engine::new(rules(&rule("r", body)));
            let got: Vec<Ev> = compact(&run(&mut e, "r1", seq))
                .into_iter()
                .map(|(t, s, v, x)| (t, s, v, (x * 1000.0).round() / 1000.0))
                .collect();
            assert_eq!(&got, expected, "case {i}: {body}");
        }
        // The ring is bounded whatever the sample rate.
        let mut e = Engine::new(rules(&rule(
            "r",
            "rate = { window = \"1h\", warning = 1000.0 }",
        )));
        let seq: Vec<(i64, f64)> = (0..5000).map(|t| (t, 1.0)).collect();
        run(&mut e, "r1", &seq);
        let slot = e.series.values().next().unwrap();
        assert_eq!(slot.states[0].1.ring.len(), RATE_RING_CAP);
    }

    #[test]
    fn flapping_sequences() {
        let body = "above = { warning = 27.0 }\nflapping = { changes = 3, window = \"1m\" }";
        let flappy: Vec<(i64, f64)> = (0..10)
            .map(|i| (i * 5, if i % 2 == 0 { 28.0 } else { 20.0 }))
            .collect();
        type FlapCase<'a> = (&'a [(i64, f64)], &'a [Ev]);
        let cases: &[FlapCase] = &[
            // Three changes are normal; the fourth within a minute marks flapping (one
            // notification), the rest is quiet until a minute without change, then the state
            // at that time is notified.
            (
                &[flappy.as_slice(), &[(60, 20.0), (100, 20.0), (106, 20.0)]].concat(),
                &[
                    (0, "firing", "warning", 28.0),
                    (5, "resolved", "warning", 20.0),
                    (10, "firing", "warning", 28.0),
                    (15, "firing", "warning", 20.0),
                    (106, "resolved", "warning", 20.0),
                ],
            ),
            // Stable again while breaching: a Firing without the FLAPPING text.
            (
                &[flappy.as_slice(), &[(50, 28.0), (111, 28.0)]].concat(),
                &[
                    (0, "firing", "warning", 28.0),
                    (5, "resolved", "warning", 20.0),
                    (10, "firing", "warning", 28.0),
                    (15, "firing", "warning", 20.0),
                    (111, "firing", "warning", 28.0),
                ],
            ),
            // Changes spread wider than the window never flap.
            (
                &[
                    (0, 28.0),
                    (30, 20.0),
                    (61, 28.0),
                    (92, 20.0),
                    (123, 28.0),
                    (154, 20.0),
                ],
                &[
                    (0, "firing", "warning", 28.0),
                    (30, "resolved", "warning", 20.0),
                    (61, "firing", "warning", 28.0),
                    (92, "resolved", "warning", 20.0),
                    (123, "firing", "warning", 28.0),
                    (154, "resolved", "warning", 20.0),
                ],
            ),
        ];
        for (i, (seq, expected)) in cases.iter().enumerate() {
            let mut e = Engine::new(rules(&rule("r", body)));
            let ev = run(&mut e, "r1", seq);
            assert_eq!(&compact(&ev), expected, "case {i}");
            let flaps: Vec<_> = ev
                .iter()
                .filter(|e| e.message.starts_with("FLAPPING:"))
                .collect();
            assert_eq!(flaps.len(), usize::from(i < 2), "case {i}: {ev:#?}");
            assert!(!ev.last().unwrap().message.starts_with("FLAPPING"));
        }
    }

    #[test]
    fn overrides_replace_levels_per_series() {
        let text = r#"
[[rule]]
name = "hot"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { warning = 27.0, critical = 32.0 }

[[rule.override]]
match = { room = "battery-room" }
above = { warning = 25.0, critical = 30.0 }

[[rule.override]]
match = { room = "battery-*", rack = "b9" }
above = { warning = 1.0 }
"#;
        let mut e = Engine::new(rules(text));
        // (room, value, expected severity)
        let cases = [
            ("hall", 26.0, None),
            ("hall", 28.0, Some("warning")),
            ("battery-room", 26.0, Some("warning")),
            ("battery-room", 31.0, Some("critical")),
            ("battery-lab", 26.0, None),
        ];
        for (i, (room, v, want)) in cases.into_iter().enumerate() {
            let rack = format!("r{i}");
            let key = SeriesKey::new(
                "env",
                TagSet::new([("rack", rack.as_str()), ("room", room)]),
            );
            let mut out = Vec::new();
            e.observe(
                &Sample::new(key, 0).with_field("t", FieldValue::Float(v)),
                &mut out,
            );
            assert_eq!(
                out.first().map(|e| e.severity.as_str()),
                want,
                "case {i}: {room} {v}"
            );
        }
        // First match wins: b9 in battery-room takes the first override, not the second.
        let key = SeriesKey::new(
            "env",
            TagSet::new([("rack", "b9"), ("room", "battery-room")]),
        );
        let mut out = Vec::new();
        e.observe(
            &Sample::new(key, 0).with_field("t", FieldValue::Float(20.0)),
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn stale_sequences() {
        use Step::*;
        let body =
            "above = { critical = 50.0 }\nstale_after = \"5m\"\nstale_severity = \"critical\"";
        type StaleCase<'a> = (&'a [Step], &'a [(&'a str, i64, &'a str, &'a str)]);
        let cases: &[StaleCase] = &[
            // Reports, falls silent: stale 5 min after the last arrival (tick clock), once;
            // resolved by the next value.
            (
                &[
                    Tick(0),
                    V("r1", 0, 20.0),
                    Tick(100),
                    V("r1", 100, 20.0),
                    Tick(399),
                    Tick(400),
                    Tick(401),
                    Tick(1000),
                    V("r1", 1000, 20.0),
                ],
                &[
                    ("r:stale", 400, "firing", "critical"),
                    ("r:stale", 1000, "resolved", "critical"),
                ],
            ),
            // A series never seen is never stale.
            (&[Tick(0), Tick(10_000)], &[]),
            // Arrival is the tick clock, not the sample's timestamp: old timestamps are fine.
            (
                &[
                    Tick(1000),
                    V("r1", 0, 20.0),
                    Tick(1200),
                    V("r1", 1, 20.0),
                    Tick(1499),
                    Tick(1500),
                ],
                &[("r:stale", 1500, "firing", "critical")],
            ),
            // Samples before the first tick: the first tick restarts the timer.
            (
                &[V("r1", 0, 20.0), Tick(10_000), Tick(10_299), Tick(10_300)],
                &[("r:stale", 10_300, "firing", "critical")],
            ),
            // Threshold and stale are separate alerts.
            (
                &[Tick(0), V("r1", 0, 60.0), Tick(300), V("r1", 300, 20.0)],
                &[
                    ("r", 0, "firing", "critical"),
                    ("r:stale", 300, "firing", "critical"),
                    ("r:stale", 300, "resolved", "critical"),
                    ("r", 300, "resolved", "critical"),
                ],
            ),
            // A device known down: its series do not go stale (the device alert covers it),
            // and its no-data clock restarts while down (the last inhibited tick, 400 s), so
            // coming back is no false page; a series still silent `stale_after` later is stale.
            (
                &[
                    Tick(0),
                    V("r1", 0, 20.0),
                    Up(10, false),
                    Tick(400),
                    Up(500, true),
                    Tick(500),
                    Tick(501),
                    Tick(699),
                    Tick(700),
                ],
                &[("r:stale", 700, "firing", "critical")],
            ),
        ];
        for (i, (steps, expected)) in cases.iter().enumerate() {
            let mut e = Engine::new(rules(&rule("r", body)));
            let got = script(&mut e, steps);
            let want: Vec<Got> = expected
                .iter()
                .map(|(r, t, s, v)| got_(r, *t, s, v))
                .collect();
            assert_eq!(got, want, "case {i}");
        }
        // The message names the silence and the last value.
        let mut e = Engine::new(rules(&rule(
            "leak",
            "equals = { critical = true }\nstale_after = \"2m\"\nmatch = { rack = \"*\" }\nstale_message = \"leak sensor {rack} silent for {threshold}, last {value}\"",
        )));
        let mut out = Vec::new();
        e.tick(0, &mut out);
        e.observe(
            &Sample::new(series("r7"), 0).with_field("t", FieldValue::Bool(false)),
            &mut out,
        );
        e.tick(120 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, "leak sensor r7 silent for 2m, last false");
        assert_eq!(out[0].severity, Severity::Warning, "default stale severity");
        assert_eq!(out[0].started_ns, 0);
        assert_eq!(e.firing_count(), 1);
    }

    fn got_(rule: &str, ts: i64, state: &str, sev: &str) -> Got {
        let s: &'static str = match state {
            "firing" => "firing",
            _ => "resolved",
        };
        let v: &'static str = match sev {
            "critical" => "critical",
            "warning" => "warning",
            _ => "ok",
        };
        got(rule, ts, s, v, "r1")
    }

    #[test]
    fn inhibition_sequences() {
        use Step::*;
        let hot = "above = { warning = 27.0 }\nfor = \"10s\"";
        // (steps, expected (rule, ts, state))
        type InhibitCase<'a> = (&'a [Step], &'a [(&'a str, i64, &'a str)]);
        let cases: &[InhibitCase] = &[
            // Device down: a breach does not fire; once it is up, the still-breaching series
            // fires at its next sample (its `for` kept running).
            (
                &[
                    Up(0, false),
                    V("r1", 0, 30.0),
                    V("r1", 20, 30.0),
                    Up(25, true),
                    V("r1", 30, 30.0),
                ],
                &[("hot", 30, "firing")],
            ),
            // Already firing when the device goes down: stays, and resolves normally.
            (
                &[
                    V("r1", 0, 30.0),
                    V("r1", 10, 30.0),
                    Up(15, false),
                    V("r1", 20, 20.0),
                ],
                &[("hot", 10, "firing"), ("hot", 20, "resolved")],
            ),
            // Up samples alone change nothing.
            (
                &[Up(0, true), V("r1", 0, 30.0), V("r1", 10, 30.0)],
                &[("hot", 10, "firing")],
            ),
        ];
        for (i, (steps, expected)) in cases.iter().enumerate() {
            let mut e = Engine::new(rules(&rule("hot", hot)));
            let got: Vec<_> = script(&mut e, steps)
                .into_iter()
                .map(|(r, t, s, _, _)| (r, t, s))
                .collect();
            let want: Vec<_> = expected
                .iter()
                .map(|(r, t, s)| (r.to_string(), *t, *s))
                .collect();
            assert_eq!(got, want, "case {i}");
        }

        // depends_on: a firing "uplink_down" of the same site inhibits "hot" for that site.
        let text = format!(
            "{}{}",
            "[[rule]]\nname = \"uplink_down\"\nmeasurement = \"net\"\nfield = \"up\"\nmatch = { site = \"*\" }\nequals = { critical = false }\n",
            "[[rule]]\nname = \"hot\"\nmeasurement = \"env\"\nfield = \"t\"\nabove = { warning = 27.0 }\nstale_after = \"1m\"\ndepends_on = { rule = \"uplink_down\", match_tags = [\"site\"] }\n",
        );
        let mut e = Engine::new(rules(&text));
        let up = |site: &str, ts: i64, up: bool| {
            Sample::new(SeriesKey::new("net", TagSet::new([("site", site)])), ts * S)
                .with_field("up", FieldValue::Bool(up))
        };
        let env = |site: &str, ts: i64, v: f64| {
            Sample::new(SeriesKey::new("env", TagSet::new([("site", site)])), ts * S)
                .with_field("t", FieldValue::Float(v))
        };
        let mut out = Vec::new();
        e.tick(0, &mut out);
        e.observe(&up("dc1", 0, false), &mut out);
        e.observe(&env("dc1", 1, 30.0), &mut out);
        e.observe(&env("dc2", 1, 30.0), &mut out);
        // dc1 sensors silent behind the dead uplink: no stale either.
        e.tick(200 * S, &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    e.rule.to_string(),
                    e.series.tags.get("site").unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("uplink_down".to_string(), "dc1".to_string()),
                ("hot".to_string(), "dc2".to_string()),
                ("hot:stale".to_string(), "dc2".to_string()),
            ]
        );
        out.clear();
        e.observe(&up("dc1", 300, true), &mut out);
        e.observe(&env("dc1", 301, 30.0), &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.rule.to_string(), e.state.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("uplink_down".to_string(), "resolved"),
                ("hot".to_string(), "firing"),
            ]
        );
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let hot = rule("hot", "above = { warning = 27.0 }\nstale_after = \"1m\"");
        let slow = rule("slow", "above = { warning = 27.0 }\nfor = \"1m\"");
        let gone = rule("gone", "above = { warning = 10.0 }");
        let changed = rule("changed", "above = { warning = 25.0 }");
        let mut e = Engine::new(rules(&format!("{hot}{slow}{gone}{changed}")));
        let mut out = Vec::new();
        e.tick(0, &mut out);
        out.extend(run(&mut e, "r1", &[(0, 30.0)]));
        out.extend(run(&mut e, "r2", &[(0, 5.0)]));
        e.tick(30 * S, &mut out);
        out.extend(run(&mut e, "r1", &[(30, 30.0)]));
        e.tick(80 * S, &mut out);
        // hot, gone, changed fire for r1; slow is pending; r2 is stale for hot.
        let names: Vec<_> = out.iter().map(|e| e.rule.to_string()).collect();
        assert_eq!(names, vec!["hot", "gone", "changed", "hot:stale"]);
        assert_eq!(e.firing_count(), 4);
        assert!(e.save_state(&path).unwrap() >= 5);
        assert!(!dir.path().join("state.json.tmp").exists());

        // Restart with "gone" removed and "changed" raised above the last value.
        let changed2 = rule("changed", "above = { warning = 35.0 }");
        let mut e2 = Engine::new(rules(&format!("{hot}{slow}{changed2}")));
        e2.load_state(&path).unwrap();
        // Open alerts are re-announced once, to receivers only, with their original start.
        let restored = e2.take_restored_alerts();
        let mut names: Vec<_> = restored.iter().map(|e| e.rule.to_string()).collect();
        names.sort();
        assert_eq!(names, vec!["hot", "hot:stale"]);
        assert!(restored
            .iter()
            .any(|e| &*e.rule == "hot" && e.started_ns == 0));
        assert!(e2.take_restored_alerts().is_empty());
        // Removed and changed rules are resolved by the first tick.
        let mut out = Vec::new();
        e2.tick(1000 * S, &mut out);
        let mut got: Vec<_> = out
            .iter()
            .map(|e| (e.rule.to_string(), e.state.as_str()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("changed".to_string(), "resolved"),
                ("gone".to_string(), "resolved")
            ]
        );
        assert_eq!(e2.firing_count(), 2);
        // hot keeps firing without a new event; slow's `for` wait continues from 0 s.
        let ev = run(&mut e2, "r1", &[(60, 30.0)]);
        let got: Vec<_> = ev
            .iter()
            .map(|e| (e.rule.to_string(), e.state.as_str()))
            .collect();
        assert_eq!(got, vec![("slow".to_string(), "firing")]);
        // r2 is still stale (no second notification) and resolves with data.
        let ev = run(&mut e2, "r2", &[(70, 5.0)]);
        let got: Vec<_> = ev
            .iter()
            .map(|e| (e.rule.to_string(), e.state.as_str()))
            .collect();
        assert_eq!(got, vec![("hot:stale".to_string(), "resolved")]);

        // Damaged files are errors that say what to do; a missing one is a fresh start.
        std::fs::write(&path, "{\"version\":1,").unwrap();
        let err = Engine::new(rules(&hot)).load_state(&path).unwrap_err();
        assert!(err.to_string().contains("move it away"), "{err}");
        assert_eq!(
            Engine::new(rules(&hot))
                .load_state(&dir.path().join("none.json"))
                .unwrap(),
            0
        );
    }

    /// State in proportion to what is happening: pairs at rest hold nothing, series under the
    /// same rules share one match set, and a pair's state lives only while it is pending or
    /// firing.
    #[test]
    fn only_pairs_that_are_not_at_rest_hold_state() {
        let text: String = (0..100)
            .map(|i| {
                rule(
                    &format!("r{i}"),
                    "match = { rack = \"*\" }\nabove = { warning = 27.0 }\nfor = \"10s\"",
                )
            })
            .collect();
        let mut e = Engine::new(rules(&text));
        for rack in 0..1000 {
            run(&mut e, &format!("rack{rack}"), &[(0, 20.0), (1, 21.0)]);
        }
        assert_eq!(e.series_count(), 1000);
        assert_eq!(
            e.held_states(),
            0,
            "values inside the levels need no per-rule state"
        );
        assert_eq!(
            e.match_sets.len(),
            1,
            "1,000 racks under the same rules share one set"
        );
        // A breach starts a `for` wait on every rule: 100 states, on that series only.
        assert!(run(&mut e, "rack7", &[(2, 30.0)]).is_empty());
        assert_eq!(e.held_states(), 100);
        let fired = run(&mut e, "rack7", &[(12, 30.0)]);
        assert_eq!(fired.len(), 100);
        assert_eq!(e.firing_count(), 100);
        // Resolved: back at rest, nothing held.
        let resolved = run(&mut e, "rack7", &[(13, 20.0)]);
        assert!(resolved.iter().all(|ev| ev.state == EventState::Resolved));
        assert_eq!(resolved.len(), 100);
        assert_eq!(e.held_states(), 0);
        assert_eq!(e.firing_count(), 0);
        // A breach that clears before `for` leaves nothing behind either.
        assert!(run(&mut e, "rack8", &[(20, 30.0), (21, 20.0)]).is_empty());
        assert_eq!(e.held_states(), 0);
        // Out-of-order samples are still refused for a pair at rest (the field's track).
        assert!(run(&mut e, "rack8", &[(15, 40.0), (40, 40.0)]).is_empty());
        assert_eq!(
            e.held_states(),
            100,
            "only the in-order breach starts waits"
        );
    }

    #[test]
    fn a_pair_at_rest_goes_stale_and_comes_back() {
        let text = rule("quiet", "above = { warning = 27.0 }\nstale_after = \"30s\"");
        let mut e = Engine::new(rules(&text));
        let mut out = Vec::new();
        e.tick(0, &mut out);
        run(&mut e, "r1", &[(0, 20.0)]);
        assert_eq!(e.held_states(), 0);
        e.tick(29 * S, &mut out);
        assert!(out.is_empty());
        e.tick(31 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].rule, "quiet:stale");
        assert_eq!(
            out[0].value,
            FieldValue::Float(20.0),
            "the last value seen is reported"
        );
        assert_eq!(e.held_states(), 1);
        e.tick(40 * S, &mut out);
        assert_eq!(out.len(), 1, "stale fires once");
        let back = run(&mut e, "r1", &[(41, 21.0)]);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].state, EventState::Resolved);
        assert_eq!(e.held_states(), 0);
        assert_eq!(e.firing_count(), 0);
    }

    /// A version 1 state file (every pair with a seen value, signatures from `Debug`) still
    /// restores: a firing alarm stays firing without a new page, a pending `for` wait keeps
    /// its start, and pairs at rest become tracks.
    #[test]
    fn a_version_1_state_file_migrates() {
        let text = rule("hot", "above = { warning = 27.0 }\nfor = \"60s\"");
        let set = rules(&text);
        let legacy = set.rules()[0].legacy_signature();
        assert_ne!(legacy, set.rules()[0].signature());
        let pair = |rack: &str, active: &str, started: i64, since: Option<i64>, v: f64| {
            serde_json::json!({
                "series": {"measurement": "env", "tags": [["rack", rack], ["site", "dc1"]]},
                "rule": "hot", "field": "t", "stale_severity": "warning", "signature": legacy,
                "active": active, "notified": active, "started_ns": started,
                "last_ts": 100 * S, "last_value": {"F": v}, "since_warning": since,
                "since_critical": null, "clear_since": null, "seen": true,
                "last_arrival": 100 * S, "stale": false, "stale_started": 0,
                "flapping": false, "last_change_ts": i64::MIN
            })
        };
        let file = serde_json::json!({
            "version": 1, "saved_ns": 0, "devices_down": [], "silenced": [],
            "states": [
                pair("r1", "warning", 10 * S, Some(10 * S), 30.0),
                pair("r2", "ok", 0, Some(90 * S), 28.0),
                pair("r3", "ok", 0, None, 20.0),
            ]
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.json");
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        let mut e = Engine::new(set);
        e.load_state(&path).unwrap();
        assert_eq!(e.firing_count(), 1);
        assert_eq!(e.held_states(), 2, "r1 firing, r2 pending; r3 at rest");
        let announced = e.take_restored_alerts();
        assert_eq!(announced.len(), 1);
        assert_eq!(
            announced[0].started_ns,
            10 * S,
            "the same incident, not a new one"
        );
        // r2's wait began at 90 s: it fires at 150 s, not 60 s after the restart.
        assert!(run(&mut e, "r2", &[(140, 29.0)]).is_empty());
        let fired = run(&mut e, "r2", &[(150, 29.0)]);
        assert_eq!(compact(&fired), vec![(150, "firing", "warning", 29.0)]);
        // r3's track refuses what is older than its last value.
        assert!(run(&mut e, "r3", &[(50, 40.0)]).is_empty());
        assert_eq!(e.held_states(), 2);
        // Saved again, the file is version 2 and restores the same.
        e.save_state(&path).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(body["version"], 2);
        let mut e2 = Engine::new(rules(&text));
        e2.load_state(&path).unwrap();
        assert_eq!(e2.firing_count(), 2);
        assert_eq!(e2.held_states(), 2);
    }

    /// Labels and annotations are rendered per event; the resolve and the stale alert carry
    /// the same labels as the firing (receivers tell alerts apart by them).
    #[test]
    fn events_carry_rendered_labels_and_annotations() {
        let text = rule(
            "hot",
            "match = { rack = \"*\" }\nabove = { warning = 27.0 }\nstale_after = \"30s\"\n\
             labels = { team = \"facilities\", rack_group = \"{site}-{rack}\" }\n\
             annotations = { runbook_url = \"https://wiki/rb/{rule}\", summary = \"{rack} at {value}\" }",
        );
        let text = text.replace(
            "match = { rack = \"*\" }",
            "match = { rack = \"*\", site = \"*\" }",
        );
        let mut e = Engine::new(rules(&text));
        let mut out = Vec::new();
        e.tick(0, &mut out);
        let fired = run(&mut e, "r1", &[(0, 30.0)]);
        let resolved = run(&mut e, "r1", &[(1, 20.0)]);
        let labels = |ev: &Event| {
            ev.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels(&fired[0]),
            vec!["rack_group=dc1-r1", "team=facilities"]
        );
        assert_eq!(labels(&resolved[0]), labels(&fired[0]));
        let ann = |ev: &Event, k: &str| {
            ev.annotations
                .iter()
                .find(|(n, _)| &**n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(ann(&fired[0], "runbook_url"), "https://wiki/rb/hot");
        assert_eq!(ann(&fired[0], "summary"), "r1 at 30");
        assert_eq!(ann(&resolved[0], "summary"), "r1 at 20");
        e.tick(40 * S, &mut out);
        let stale = out.iter().find(|ev| &*ev.rule == "hot:stale").unwrap();
        assert_eq!(labels(stale), labels(&fired[0]));
    }

    /// The stage's path: a snapshot taken on the rules task, written on a blocking thread.
    #[test]
    fn a_snapshot_written_elsewhere_restores_like_save_state() {
        let dir = tempfile::tempdir().unwrap();
        let hot = rule("hot", "above = { warning = 27.0 }");
        let mut e = Engine::new(rules(&hot));
        let mut out = Vec::new();
        e.tick(0, &mut out);
        run(&mut e, "r1", &[(0, 30.0)]);
        run(&mut e, "r2", &[(0, 5.0)]);
        let snap = e.state_snapshot();
        // r1's firing state, and one track per series (r2 at rest needs nothing more).
        assert_eq!(snap.len(), 3);
        let written = dir.path().join("snap/state.json");
        let moved = std::thread::spawn(move || snap.write(&written).map(|n| (n, written)));
        let (n, written) = moved.join().unwrap().unwrap();
        assert_eq!(n, 3);
        assert!(!dir.path().join("snap/state.json.tmp").exists());
        let saved = dir.path().join("saved.json");
        assert_eq!(e.save_state(&saved).unwrap(), n);
        for path in [&written, &saved] {
            let mut e2 = Engine::new(rules(&hot));
            assert_eq!(e2.load_state(path).unwrap(), 3);
            let restored = e2.take_restored_alerts();
            assert_eq!(restored.len(), 1);
            assert_eq!(&*restored[0].rule, "hot");
        }
    }

    #[test]
    fn silenced_alerts_survive_a_restart_unsent() {
        let text = format!(
            "{}[[silence]]\nmatch = {{ rack = \"r1\" }}\nstart = \"2000-01-01T00:00:00Z\"\nend = \"2100-01-01T00:00:00Z\"\n",
            rule("hot", "above = { warning = 27.0 }")
        );
        let f = crate::rules::config::parse_rule_file(&text, Path::new("t.toml")).unwrap();
        let set = RuleSet::with_silences(f.rules, f.silences).unwrap();
        let mut e = Engine::new(set.clone());
        let mut ev = run(&mut e, "r1", &[(0, 30.0)]);
        ev.extend(run(&mut e, "r2", &[(0, 30.0)]));
        let now = now_ns();
        let gates: Vec<_> = ev.iter().map(|x| e.gate_alert(x, now)).collect();
        assert_eq!(gates, vec![Gate::Silenced, Gate::Notify]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        e.save_state(&path).unwrap();

        let mut e2 = Engine::new(set);
        e2.load_state(&path).unwrap();
        let restored = e2.take_restored_alerts();
        let racks: Vec<_> = restored
            .iter()
            .map(|x| x.series.tags.get("rack").unwrap())
            .collect();
        assert_eq!(racks, vec!["r2"], "the silenced alert was never sent");
        assert!(e2.release_silenced(now).is_empty());
        let after = crate::rules::silence::parse_rfc3339("2100-01-01T00:00:00Z").unwrap();
        let released = e2.release_silenced(after);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].series.tags.get("rack"), Some("r1"));
    }

    #[test]
    fn values_render_short_in_messages() {
        let mut e = Engine::new(rules(&rule(
            "r",
            "above = { warning = 27.1 }\nmessage = \"{value} > {threshold}\"",
        )));
        let cases = [
            (29.999999, "30 > 27.1"),
            (28.123456, "28.123 > 27.1"),
            (1e9 + 0.5, "1000000000.5 > 27.1"),
        ];
        for (i, (v, want)) in cases.into_iter().enumerate() {
            let ev = run(&mut e, &format!("r{i}"), &[(0, v)]);
            assert_eq!(ev[0].message, want);
        }
    }

    /// Throughput with 1,000 rules loaded; run with
    /// `cargo test --release --lib rules::engine::tests::throughput_with_1000_rules -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement, not a check; see docs/rules.md"]
    fn throughput_with_1000_rules() {
        // 1,000 rules over 10 measurements x 10 fields, each with a tag matcher, mixed kinds.
        let mut text = String::new();
        for i in 0..1000 {
            let m = i % 10;
            let f = (i / 10) % 10;
            let cond = match i % 4 {
                0 => {
                    "above = { warning = 80.0, warning_clear = 78.0, critical = 90.0 }".to_string()
                }
                1 => "outside = { warning = [10.0, 90.0] }".to_string(),
                2 => "rate = { window = \"10m\", warning = 50.0 }".to_string(),
                _ => "below = { warning = 5.0 }\nstale_after = \"5m\"".to_string(),
            };
            text.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\nmeasurement = \"m{m}\"\nfield = \"f{f}\"\nmatch = {{ rack = \"r{}*\" }}\n{cond}\n",
                i % 7
            ));
        }
        let mut e = Engine::new(rules(&text));
        let keys: Vec<SeriesKey> = (0..10_000)
            .map(|i| {
                SeriesKey::new(
                    format!("m{}", i % 10),
                    TagSet::new([
                        ("rack", format!("r{}", i % 97)),
                        ("site", "dc1".to_string()),
                    ]),
                )
            })
            .collect();
        let n = 200_000usize;
        let samples: Vec<Sample> = (0..n)
            .map(|i| {
                let mut s = Sample::new(keys[i % keys.len()].clone(), i as i64 * 1_000_000);
                for f in 0..3 {
                    s = s.with_field(
                        format!("f{}", (i + f) % 10),
                        FieldValue::Float(((i * 7 + f) % 100) as f64),
                    );
                }
                s
            })
            .collect();
        let mut out = Vec::new();
        // First sample of each series: the rules' tag matchers run once per series.
        let start = std::time::Instant::now();
        for s in &samples[..keys.len()] {
            e.observe(s, &mut out);
        }
        let first = start.elapsed();
        let start = std::time::Instant::now();
        for (i, s) in samples[keys.len()..].iter().enumerate() {
            e.observe(s, &mut out);
            if i % 10_000 == 0 {
                e.tick(s.timestamp_ns, &mut out);
            }
            out.clear();
        }
        let el = start.elapsed();
        let m = n - keys.len();
        let per = el.as_nanos() as f64 / m as f64;
        println!(
            "1000 rules, {} series: first sample per series {:.1} us (tag matching), then {m} samples x 3 fields in {el:?}: {per:.0} ns/sample, {:.0} samples/s",
            keys.len(),
            first.as_nanos() as f64 / keys.len() as f64 / 1000.0,
            1e9 / per
        );
    }

    proptest::proptest! {
        /// The newer options together (range, rate, keep_firing_for, flapping, stale ticks):
        /// a Resolved only follows a Firing, consecutive Firings change severity or end a
        /// flapping period, and the firing gauge matches what the events left open.
        #[test]
        fn new_options_keep_events_consistent(
            values in proptest::collection::vec((0i64..20, 0u8..60, proptest::bool::ANY), 1..200),
            kind in 0usize..3,
            keep_s in 0i64..30,
            flap in proptest::option::of(1u32..4),
        ) {
            let cond = match kind {
                0 => "outside = { warning = [15.0, 30.0], warning_clear = [17.0, 28.0], critical = [5.0, 40.0] }".to_string(),
                1 => "rate = { window = \"30s\", warning = 10.0, critical = 20.0, critical_clear = 15.0 }".to_string(),
                _ => TEMP.to_string(),
            };
            let mut body = format!("{cond}\nkeep_firing_for = \"{keep_s}s\"\nstale_after = \"15s\"");
            if let Some(n) = flap {
                body.push_str(&format!("\nflapping = {{ changes = {n}, window = \"20s\" }}"));
            }
            let mut e = Engine::new(rules(&rule("r", &body)));
            let mut ts = 0i64;
            let mut out = Vec::new();
            for (dt, v, tick) in &values {
                ts += dt;
                if *tick {
                    e.tick(ts * S, &mut out);
                } else {
                    e.observe(&sample("r1", ts, FieldValue::Float(f64::from(*v))), &mut out);
                }
            }
            let mut open: HashMap<String, Severity> = HashMap::new();
            for ev in &out {
                let prev = open.get(&*ev.rule).copied().unwrap_or(Severity::Ok);
                match ev.state {
                    EventState::Firing => {
                        proptest::prop_assert_ne!(ev.severity, Severity::Ok);
                        open.insert(ev.rule.to_string(), ev.severity);
                    }
                    EventState::Resolved => {
                        proptest::prop_assert_ne!(prev, Severity::Ok, "resolved without firing: {:?}", out);
                        proptest::prop_assert_eq!(ev.severity, prev);
                        open.remove(&*ev.rule);
                    }
                }
                proptest::prop_assert!(ev.started_ns <= ev.timestamp_ns, "{:?}", ev);
            }
            proptest::prop_assert_eq!(e.firing_count(), open.len());
        }

        /// For any value sequence: the first event of a series is Firing, Resolved never
        /// follows Resolved, each event changes the severity, firing values are beyond their
        /// level and resolving values are back past the clear value.
        #[test]
        fn events_alternate_sensibly(
            values in proptest::collection::vec((0i64..20, 0u8..60), 1..200),
            for_s in 0i64..30,
            below in proptest::bool::ANY,
        ) {
            let body = if below {
                format!("below = {{ warning = 30.0, warning_clear = 33.0, critical = 20.0, critical_clear = 22.0 }}\nfor = \"{for_s}s\"")
            } else {
                format!("{TEMP}\nfor = \"{for_s}s\"")
            };
            let mut e = Engine::new(rules(&rule("r", &body)));
            let mut ts = 0i64;
            let mut out = Vec::new();
            for (dt, v) in &values {
                ts += dt;
                e.observe(&sample("r1", ts, FieldValue::Float(f64::from(*v))), &mut out);
            }
            let mut active = Severity::Ok;
            for ev in &out {
                match ev.state {
                    EventState::Firing => {
                        proptest::prop_assert_ne!(ev.severity, active);
                        proptest::prop_assert_ne!(ev.severity, Severity::Ok);
                        active = ev.severity;
                    }
                    EventState::Resolved => {
                        proptest::prop_assert_ne!(active, Severity::Ok, "resolved without firing: {:?}", out);
                        proptest::prop_assert_eq!(ev.severity, active);
                        let v = ev.value.as_f64().unwrap();
                        let clear = ev.threshold.unwrap();
                        let cleared = if below { v >= clear } else { v <= clear };
                        proptest::prop_assert!(cleared, "resolved at {} with clear {}", v, clear);
                        active = Severity::Ok;
                    }
                }
                proptest::prop_assert!(ev.started_ns <= ev.timestamp_ns);
            }
            proptest::prop_assert_eq!(e.firing_count(), usize::from(active != Severity::Ok));
        }
    }
}
