//! What the engine keeps per series, in proportion to what is happening on it.
//!
//! - A [`MatchSet`]: which rules accept the series (with their override variant), found once
//!   when the series is first seen and shared by every series the same rules accept (a
//!   thousand racks under the same thousand rules hold one set between them).
//! - One [`FieldTrack`] per field those rules watch: the last usable value, its timestamp
//!   (samples older than it are out of order) and its arrival time (for stale detection).
//! - Full [`RuleState`] only for the (series, rule) pairs that are not at rest: pending a
//!   `for`, firing, in `keep_firing_for`, stale, flapping or holding a `rate` window. A pair
//!   at rest is fully described by its field's track, so it costs nothing.
//!
//! A value that every rule at rest on its field would leave at rest (below the lowest
//! `above` level, say) is recognised with two comparisons ([`MatchSet::is_quiet`]), so a
//! quiet sample costs the held states of its series, not one check per rule.
//!
//! This is what lets 20,000 series under 1,000 broad rules fit in a few tens of MiB: before,
//! every (series, matching rule) pair carried ~230 bytes from its first sample.

use std::sync::Arc;

use crate::model::{FieldValue, SeriesKey, Severity};

use super::config::{duration_ns, RuleSet};
use super::state::RuleState;

/// Hash maps keyed by data from outside (series, tags) use foldhash: much faster than
/// SipHash on these short keys, and seeded per process, so crafted topic names cannot
/// choose their collisions in advance. The series map is also bounded upstream
/// (`max_series` per subscription).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Maps keyed by our own small integers (rule positions): no seed needed.
type FixedMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// One rule accepting a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MatchEntry {
    /// Position in the rule set.
    pub(crate) rule_idx: u32,
    /// 0: the rule's own levels; i + 1: override i.
    pub(crate) variant: u16,
    /// Position of the rule's field in [`MatchSet::fields`] (and in the slot's tracks).
    pub(crate) field: u16,
}

/// The rules accepting a series, sorted by rule position.
#[derive(Debug)]
pub(crate) struct MatchSet {
    pub(crate) entries: Box<[MatchEntry]>,
    /// Distinct fields the entries watch.
    pub(crate) fields: Box<[Arc<str>]>,
    /// Per field: the shortest `stale_after` among its rules, in ns (`i64::MAX`: none), so
    /// the stale scan skips a fresh field without looking at its rules.
    pub(crate) min_stale_ns: Box<[i64]>,
    /// Per field: positions in `entries` of the rules on it, in rule order (a sample's value
    /// goes straight to its rules, no search).
    pub(crate) by_field: Box<[Box<[u32]>]>,
    /// Per field: values in this closed range leave every rule on it that is at rest at
    /// rest (the intersection of their [`Condition::quiet_range`]s); `None` when a rule on
    /// the field has no such range (`equals`, `inside`, `rate`). A quiet value then costs
    /// the held states only, not one check per rule.
    pub(crate) quiet: Box<[Option<(f64, f64)>]>,
}

impl MatchSet {
    /// Whether `value` of field `fpos` leaves every pair at rest at rest.
    pub(crate) fn is_quiet(&self, fpos: usize, value: &FieldValue) -> bool {
        match (self.quiet[fpos], value.as_f64()) {
            (Some((lo, hi)), Some(x)) => lo <= x && x <= hi,
            _ => false,
        }
    }
}

impl MatchSet {
    pub(crate) fn position(&self, rule_idx: usize) -> Option<usize> {
        self.entries
            .binary_search_by_key(&rule_idx, |e| e.rule_idx as usize)
            .ok()
    }
}

/// The last usable value of one field of one series.
#[derive(Clone, Debug)]
pub(crate) struct FieldTrack {
    /// Timestamp of the newest value evaluated; older samples are out of order.
    pub(crate) last_ts: i64,
    pub(crate) last_value: Option<FieldValue>,
    /// A usable value has been seen (stale detection starts then).
    pub(crate) seen: bool,
    /// Engine clock when the newest value arrived.
    pub(crate) last_arrival: i64,
    /// A rule could not use a value of this field; warned once (later ones at debug).
    pub(crate) unusable_warned: bool,
}

impl FieldTrack {
    pub(crate) fn new() -> Self {
        FieldTrack {
            last_ts: i64::MIN,
            last_value: None,
            seen: false,
            last_arrival: i64::MIN,
            unusable_warned: false,
        }
    }

    /// A fresh rule state for a pair at rest: what its field's track says.
    pub(crate) fn rule_state(&self) -> RuleState {
        let mut st = RuleState::new();
        st.last_ts = self.last_ts;
        st.last_value = self.last_value.clone();
        st.seen = self.seen;
        st.last_arrival = self.last_arrival;
        st.unusable_warned = self.unusable_warned;
        st
    }

    /// Whether `st` holds nothing beyond this track (no alert, no `for` or `keep_firing_for`
    /// wait, no rate window, no flapping bookkeeping, no no-data clock of its own), so the
    /// pair is at rest and its state need not be kept.
    pub(crate) fn describes(&self, st: &RuleState) -> bool {
        st.active == Severity::Ok
            && st.notified == Severity::Ok
            && !st.stale
            && !st.flapping
            && st.since_warning.is_none()
            && st.since_critical.is_none()
            && st.clear_since.is_none()
            && st.ring.is_empty()
            && st.changes.is_empty()
            && st.last_arrival <= self.last_arrival
    }

    /// Folds what a rule state knows about the field into the track (restore, reload).
    pub(crate) fn absorb(&mut self, st: &RuleState) {
        if st.seen && st.last_ts >= self.last_ts {
            self.last_ts = st.last_ts;
            self.last_value = st.last_value.clone();
        }
        self.seen |= st.seen;
        self.last_arrival = self.last_arrival.max(st.last_arrival);
    }
}

/// Everything the engine keeps for one series.
#[derive(Debug)]
pub(crate) struct SeriesSlot {
    pub(crate) matches: Arc<MatchSet>,
    /// One per [`MatchSet::fields`].
    pub(crate) tracks: Box<[FieldTrack]>,
    /// States of the pairs not at rest: (entry position, state), sorted by position.
    pub(crate) states: Vec<(u32, Box<RuleState>)>,
    /// Cluster mode: the unit whose collector feeds the series (its state moves with it).
    pub(crate) unit: Option<Arc<str>>,
}

impl SeriesSlot {
    pub(crate) fn state(&self, pos: usize) -> Option<&RuleState> {
        self.states
            .binary_search_by_key(&(pos as u32), |(p, _)| *p)
            .ok()
            .map(|i| &*self.states[i].1)
    }

    /// Index into `states` of entry `pos`, if it has a state.
    pub(crate) fn state_index(&self, pos: usize) -> Result<usize, usize> {
        self.states.binary_search_by_key(&(pos as u32), |(p, _)| *p)
    }

    /// Stores or drops the state of entry `pos`, depending on whether it is at rest.
    pub(crate) fn put_state(&mut self, pos: usize, st: Box<RuleState>) {
        let track = &self.tracks[self.matches.entries[pos].field as usize];
        let keep = !track.describes(&st);
        match (self.state_index(pos), keep) {
            (Ok(i), true) => self.states[i].1 = st,
            (Ok(i), false) => {
                self.states.remove(i);
            }
            (Err(i), true) => self.states.insert(i, (pos as u32, st)),
            (Err(_), false) => {}
        }
    }

    /// Removes and returns the state of entry `pos`, or one made from its field's track.
    pub(crate) fn take_state(&mut self, pos: usize) -> Box<RuleState> {
        match self.state_index(pos) {
            Ok(i) => self.states.remove(i).1,
            Err(_) => {
                let field = self.matches.entries[pos].field as usize;
                Box::new(self.tracks[field].rule_state())
            }
        }
    }
}

/// Rules of one measurement with the same tag matchers: one match test decides for all.
struct MatcherGroup {
    /// A rule whose matchers are the group's.
    representative: usize,
    /// Every rule of the group, ascending.
    members: Vec<u32>,
}

/// Builds match sets and shares equal ones between series.
pub(crate) struct MatchSets {
    /// Measurement → its rules grouped by matchers. Broad rules mostly share their matchers
    /// (`rack = "*"`), so a new series runs a handful of matchers, not one per rule.
    groups: std::collections::HashMap<Arc<str>, Vec<MatcherGroup>>,
    known: FixedMap<Box<[(u32, u16)]>, Arc<MatchSet>>,
    scratch: Vec<(u32, u16)>,
}

impl MatchSets {
    pub(crate) fn new(rules: &RuleSet) -> Self {
        let mut groups: std::collections::HashMap<Arc<str>, Vec<MatcherGroup>> =
            std::collections::HashMap::new();
        let mut seen: std::collections::HashMap<(Arc<str>, String), usize> =
            std::collections::HashMap::new();
        for (i, rule) in rules.rules().iter().enumerate() {
            let mut key = String::new();
            for m in &rule.matchers {
                key.push_str(&m.tag);
                key.push(if m.negate { '!' } else { '=' });
                key.push_str(&m.pattern);
                key.push('\0');
            }
            let list = groups.entry(rule.measurement.clone()).or_default();
            match seen.entry((rule.measurement.clone(), key)) {
                std::collections::hash_map::Entry::Occupied(g) => {
                    list[*g.get()].members.push(i as u32);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(list.len());
                    list.push(MatcherGroup {
                        representative: i,
                        members: vec![i as u32],
                    });
                }
            }
        }
        MatchSets {
            groups,
            known: FixedMap::default(),
            scratch: Vec::new(),
        }
    }

    /// Distinct sets in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.known.len()
    }

    /// A new slot for `key`: its rules found among its measurement's (an index lookup, never
    /// a scan of all rules), the set shared with earlier series that matched the same way.
    pub(crate) fn slot_for(&mut self, rules: &RuleSet, key: &SeriesKey) -> SeriesSlot {
        let all = rules.rules();
        self.scratch.clear();
        for group in self
            .groups
            .get(&key.measurement)
            .map_or(&[][..], Vec::as_slice)
        {
            if !all[group.representative].matches_tags(&key.tags) {
                continue;
            }
            for &i in &group.members {
                let rule = &all[i as usize];
                let variant = if rule.overrides.is_empty() {
                    0
                } else {
                    u16::try_from(rule.variant_for(&key.tags)).unwrap_or(u16::MAX)
                };
                self.scratch.push((i, variant));
            }
        }
        // Groups interleave in rule order; entries are kept in rule order.
        self.scratch.sort_unstable();
        let set = match self.known.get(self.scratch.as_slice()) {
            Some(set) => set.clone(),
            None => {
                let set = Arc::new(build_set(rules, &self.scratch));
                self.known
                    .insert(self.scratch.as_slice().into(), set.clone());
                set
            }
        };
        SeriesSlot {
            tracks: (0..set.fields.len()).map(|_| FieldTrack::new()).collect(),
            matches: set,
            states: Vec::new(),
            unit: None,
        }
    }
}

fn build_set(rules: &RuleSet, matched: &[(u32, u16)]) -> MatchSet {
    let all = rules.rules();
    let mut fields: Vec<Arc<str>> = Vec::new();
    let mut min_stale_ns: Vec<i64> = Vec::new();
    let mut entries = Vec::with_capacity(matched.len());
    let mut by_field: Vec<Vec<u32>> = Vec::new();
    let mut quiet: Vec<Option<(f64, f64)>> = Vec::new();
    for &(rule_idx, variant) in matched {
        let rule = &all[rule_idx as usize];
        let field = match fields.iter().position(|f| *f == rule.field) {
            Some(p) => p,
            None => {
                fields.push(rule.field.clone());
                min_stale_ns.push(i64::MAX);
                by_field.push(Vec::new());
                quiet.push(Some((f64::NEG_INFINITY, f64::INFINITY)));
                fields.len() - 1
            }
        };
        if let Some(spec) = &rule.stale {
            min_stale_ns[field] = min_stale_ns[field].min(duration_ns(spec.after));
        }
        by_field[field].push(entries.len() as u32);
        let (cond, rate) = rule.variant(variant as usize);
        quiet[field] = match (quiet[field], cond.quiet_range(), rate) {
            (Some((lo, hi)), Some((l, h)), None) => Some((lo.max(l), hi.min(h))),
            _ => None,
        };
        entries.push(MatchEntry {
            rule_idx,
            variant,
            field: u16::try_from(field).unwrap_or(u16::MAX),
        });
    }
    MatchSet {
        entries: entries.into(),
        fields: fields.into(),
        min_stale_ns: min_stale_ns.into(),
        by_field: by_field.into_iter().map(Vec::into_boxed_slice).collect(),
        quiet: quiet.into(),
    }
}
