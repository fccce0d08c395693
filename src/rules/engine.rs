//! The per-series, per-rule state machine.
//!
//! For each (series, rule) the engine remembers the severity currently firing, when the
//! incident began, and since when each higher level has been breached (for `for`). One sample
//! causes at most one event: Firing on every severity change upwards or downwards while the
//! condition holds, Resolved when the value is back past the lowest level's clear value.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{now_ns, Event, EventState, FieldValue, Sample, SeriesKey, Severity};

use super::config::{format_value, RenderContext, Rule, RuleSet};

#[derive(Clone, Debug)]
struct RuleState {
    /// Timestamp of the newest sample evaluated; older samples are ignored.
    last_ts: i64,
    last_value: Option<FieldValue>,
    /// Severity currently firing (`Ok`: nothing is firing).
    active: Severity,
    /// First breaching sample of the current incident.
    started_ns: i64,
    /// Since when the value has been continuously beyond each level (for `for`).
    since_warning: Option<i64>,
    since_critical: Option<i64>,
    unusable_warned: bool,
}

impl RuleState {
    fn new() -> Self {
        RuleState {
            last_ts: i64::MIN,
            last_value: None,
            active: Severity::Ok,
            started_ns: 0,
            since_warning: None,
            since_critical: None,
            unusable_warned: false,
        }
    }

    fn since_at(&self, sev: Severity) -> Option<i64> {
        match sev {
            Severity::Critical => self.since_critical,
            _ => self.since_warning,
        }
    }

    fn since(&mut self, sev: Severity) -> &mut Option<i64> {
        match sev {
            Severity::Critical => &mut self.since_critical,
            _ => &mut self.since_warning,
        }
    }
}

struct MatchedRule {
    rule_idx: usize,
    state: RuleState,
}

/// Rules whose tag matchers accept one series, found once per series so globs do not run for
/// every sample. Sorted by `rule_idx`.
struct SeriesSlot {
    matched: Vec<MatchedRule>,
}

/// Evaluates samples against rules and emits [`Event`]s on state changes.
pub struct Engine {
    rules: RuleSet,
    /// measurement → field → indices of rules watching it. A sample no rule watches costs one
    /// lookup here.
    index: HashMap<Arc<str>, HashMap<Arc<str>, Vec<usize>>>,
    series: HashMap<SeriesKey, SeriesSlot>,
    firing: usize,
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

fn matching_rules(rules: &RuleSet, key: &SeriesKey) -> Vec<usize> {
    rules
        .rules()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.measurement == key.measurement && r.matches_tags(&key.tags))
        .map(|(i, _)| i)
        .collect()
}

impl Engine {
    pub fn new(rules: RuleSet) -> Engine {
        let index = build_index(&rules);
        Engine {
            rules,
            index,
            series: HashMap::new(),
            firing: 0,
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Number of (series, rule) pairs currently firing.
    pub fn firing_count(&self) -> usize {
        self.firing
    }

    /// Evaluates every rule watching one of the sample's fields; events go to `out`.
    pub fn observe(&mut self, sample: &Sample, out: &mut Vec<Event>) {
        let Some(by_field) = self.index.get(&sample.series.measurement) else {
            return;
        };
        if !sample.fields.iter().any(|(f, _)| by_field.contains_key(f)) {
            return;
        }
        let slot = match self.series.get_mut(&sample.series) {
            Some(slot) => slot,
            None => {
                let matched = matching_rules(&self.rules, &sample.series)
                    .into_iter()
                    .map(|rule_idx| MatchedRule {
                        rule_idx,
                        state: RuleState::new(),
                    })
                    .collect();
                self.series
                    .entry(sample.series.clone())
                    .or_insert(SeriesSlot { matched })
            }
        };
        if slot.matched.is_empty() {
            return;
        }
        let mut evaluations = 0u64;
        let firing_before = self.firing;
        for (field, value) in &sample.fields {
            let Some(rule_idxs) = by_field.get(field) else {
                continue;
            };
            for &idx in rule_idxs {
                let Ok(pos) = slot.matched.binary_search_by_key(&idx, |m| m.rule_idx) else {
                    continue;
                };
                let rule = &self.rules.rules()[idx];
                let state = &mut slot.matched[pos].state;
                evaluations += 1;
                let was = state.active;
                if let Some(ev) = step(rule, state, &sample.series, value, sample.timestamp_ns) {
                    match (was, state.active) {
                        (Severity::Ok, Severity::Ok) => {}
                        (Severity::Ok, _) => self.firing += 1,
                        (_, Severity::Ok) => self.firing = self.firing.saturating_sub(1),
                        _ => {}
                    }
                    count_event(&ev);
                    out.push(ev);
                }
            }
        }
        if evaluations > 0 {
            metrics::counter!("sitewatch_rules_evaluations_total").increment(evaluations);
        }
        if self.firing != firing_before {
            metrics::gauge!("sitewatch_rules_firing").set(self.firing as f64);
        }
    }

    /// Swaps in a new rule set. State survives for rules whose condition is unchanged (same
    /// name, measurement, field, match, levels, `for`; message edits do not reset state).
    ///
    /// For a changed rule, an incident that is firing is re-judged on its last value under the
    /// new definition instead of being forgotten: a reload must neither flash a flood alarm as
    /// resolved while water is on the floor nor leave an alarm firing forever in a receiver.
    /// For a removed rule (or one that no longer matches the series) a firing incident is
    /// resolved. The returned events (timestamped now) must be delivered like any other.
    #[must_use = "resolved/changed alarms from a reload must be sent to the events writer and alert router"]
    pub fn replace_rules(&mut self, rules: RuleSet) -> Vec<Event> {
        let old = std::mem::replace(&mut self.rules, rules);
        self.index = build_index(&self.rules);
        let mut out = Vec::new();
        let now = now_ns();
        for (key, slot) in self.series.iter_mut() {
            let mut old_states: HashMap<Arc<str>, (Arc<Rule>, RuleState)> = slot
                .matched
                .drain(..)
                .map(|m| {
                    let r = old.rules()[m.rule_idx].clone();
                    (r.name.clone(), (r, m.state))
                })
                .collect();
            for idx in matching_rules(&self.rules, key) {
                let new_rule = &self.rules.rules()[idx];
                let state = match old_states.remove(&new_rule.name) {
                    Some((old_rule, st)) if old_rule.same_condition(new_rule) => st,
                    Some((_, st)) => rejudge(new_rule, st, key, now, &mut self.firing, &mut out),
                    None => RuleState::new(),
                };
                slot.matched.push(MatchedRule {
                    rule_idx: idx,
                    state,
                });
            }
            for (_, (old_rule, st)) in old_states {
                if st.active == Severity::Ok {
                    continue;
                }
                self.firing = self.firing.saturating_sub(1);
                let value = st.last_value.clone().unwrap_or(FieldValue::Float(f64::NAN));
                out.push(Event {
                    rule: old_rule.name.clone(),
                    series: key.clone(),
                    field: old_rule.field.clone(),
                    severity: st.active,
                    state: EventState::Resolved,
                    value,
                    threshold: None,
                    started_ns: st.started_ns,
                    timestamp_ns: now.max(st.last_ts),
                    message: format!(
                        "rule '{}' was removed or no longer matches {key} after a rules reload; alarm closed",
                        old_rule.name
                    ),
                });
            }
        }
        // Series that no rule watches any more need no cache entry.
        self.series.retain(|_, slot| !slot.matched.is_empty());
        for ev in &out {
            count_event(ev);
        }
        metrics::gauge!("sitewatch_rules_firing").set(self.firing as f64);
        if !out.is_empty() {
            tracing::info!(
                events = out.len(),
                "rules reload changed the state of firing alarms"
            );
        }
        out
    }
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

/// Re-judges a firing incident of a changed rule on its last value. Pending waits restart.
fn rejudge(
    rule: &Rule,
    old: RuleState,
    key: &SeriesKey,
    now: i64,
    firing: &mut usize,
    out: &mut Vec<Event>,
) -> RuleState {
    let mut st = RuleState::new();
    st.last_ts = old.last_ts;
    st.last_value = old.last_value.clone();
    if old.active == Severity::Ok {
        return st;
    }
    let Some(value) = old.last_value else {
        *firing = firing.saturating_sub(1);
        return st;
    };
    let target = rule
        .condition
        .classify(&value, old.active)
        .unwrap_or(Severity::Ok);
    let ts = now.max(old.last_ts);
    if target == Severity::Ok {
        *firing = firing.saturating_sub(1);
        out.push(resolved_event(
            rule,
            key,
            &value,
            old.active,
            old.started_ns,
            ts,
        ));
        return st;
    }
    st.active = target;
    st.started_ns = old.started_ns;
    if target != old.active {
        out.push(firing_event(rule, key, &value, target, old.started_ns, ts));
    }
    st
}

fn render(
    rule: &Rule,
    key: &SeriesKey,
    value: &FieldValue,
    sev: Severity,
    state: EventState,
    threshold_text: &str,
) -> String {
    let tpl = match state {
        EventState::Firing => &rule.message,
        EventState::Resolved => &rule.resolved_message,
    };
    tpl.render(&RenderContext {
        rule: &rule.name,
        measurement: &key.measurement,
        field: &rule.field,
        tags: &key.tags,
        series: key,
        value,
        threshold: threshold_text,
        severity: sev,
        state: state.as_str(),
    })
}

fn firing_event(
    rule: &Rule,
    key: &SeriesKey,
    value: &FieldValue,
    sev: Severity,
    started_ns: i64,
    ts: i64,
) -> Event {
    let text = rule.condition.threshold_text(sev);
    Event {
        rule: rule.name.clone(),
        series: key.clone(),
        field: rule.field.clone(),
        severity: sev,
        state: EventState::Firing,
        value: value.clone(),
        threshold: rule.condition.threshold(sev),
        started_ns,
        timestamp_ns: ts,
        message: render(rule, key, value, sev, EventState::Firing, &text),
    }
}

fn resolved_event(
    rule: &Rule,
    key: &SeriesKey,
    value: &FieldValue,
    last: Severity,
    started_ns: i64,
    ts: i64,
) -> Event {
    let (threshold, text) = rule.condition.resolve_threshold(last);
    Event {
        rule: rule.name.clone(),
        series: key.clone(),
        field: rule.field.clone(),
        severity: last,
        state: EventState::Resolved,
        value: value.clone(),
        threshold,
        started_ns,
        timestamp_ns: ts,
        message: render(rule, key, value, last, EventState::Resolved, &text),
    }
}

/// Advances one (series, rule) state by one value.
fn step(
    rule: &Rule,
    st: &mut RuleState,
    key: &SeriesKey,
    value: &FieldValue,
    ts: i64,
) -> Option<Event> {
    if ts < st.last_ts {
        metrics::counter!("sitewatch_rules_out_of_order_total").increment(1);
        tracing::debug!(rule = %rule.name, series = %key, ts, last = st.last_ts, "sample older than the last one evaluated; ignored");
        return None;
    }
    let Some(target) = rule.condition.classify(value, st.active) else {
        metrics::counter!("sitewatch_rules_unusable_values_total", "rule" => rule.name.to_string())
            .increment(1);
        // Once per series and rule at warn: a rule comparing a number with a text field is a
        // configuration mistake that would otherwise never fire, silently.
        if st.unusable_warned {
            tracing::debug!(rule = %rule.name, series = %key, value = %format_value(value), "value cannot be evaluated by this rule; ignored");
        } else {
            st.unusable_warned = true;
            tracing::warn!(rule = %rule.name, series = %key, value = %format_value(value), "value cannot be evaluated by this rule (wrong type for the condition, or NaN); ignored, check the rule's field and condition");
        }
        return None;
    };
    st.last_ts = ts;
    st.last_value = Some(value.clone());

    let for_ns = rule.for_ns();
    let active = st.active;
    let mut fired = Severity::Ok;
    for level in rule.condition.levels() {
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

    if fired == st.active {
        return None;
    }
    let prev = st.active;
    st.active = fired;
    if fired == Severity::Ok {
        let ev = resolved_event(rule, key, value, prev, st.started_ns, ts);
        st.started_ns = 0;
        return Some(ev);
    }
    if prev == Severity::Ok {
        // The incident began with the first sample beyond the lowest level now breached.
        st.started_ns = rule
            .condition
            .levels()
            .filter_map(|l| st.since_at(l))
            .min()
            .unwrap_or(ts);
    }
    Some(firing_event(rule, key, value, fired, st.started_ns, ts))
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

    /// The shipped example rules behave as their comments promise on demo-like traffic.
    #[test]
    fn facility_rules_fire_on_a_cooling_fault_a_leak_and_an_overloaded_phase() {
        let text = include_str!("../../deploy/rules/facility.toml");
        let set = RuleSet::new(parse_rules(text, Path::new("deploy/rules/facility.toml")).unwrap())
            .unwrap();
        assert_eq!(set.len(), 5);
        let mut e = Engine::new(set);
        let mut out = Vec::new();
        let env = SeriesKey::new(
            "environment",
            TagSet::new([("rack", "a03"), ("site", "dc1")]),
        );
        // Climbs past 27 °C at 16 s, holds ~30 °C, drops back at 45 s.
        for t in 0..60i64 {
            let temp = match t {
                0..=15 => 24.0,
                16..=44 => 30.0,
                _ => 25.0,
            };
            let s = Sample::new(env.clone(), t * S)
                .with_field("temperature", FieldValue::Float(temp))
                .with_field("humidity", FieldValue::Float(45.0));
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
                    "rack_inlet_temperature",
                    36,
                    "firing",
                    "a03: inlet temperature 30 °C is above 27 °C (warning)"
                ),
                (
                    "rack_inlet_temperature",
                    45,
                    "resolved",
                    "a03: inlet temperature back to 25 °C (at or below 26 °C)"
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
        let pdu = SeriesKey::new("pdu", TagSet::new([("pdu", "pdu-a01"), ("phase", "L1")]));
        for (t, amps) in [(0, 13.0), (30, 13.1), (40, 12.5), (50, 11.9)] {
            e.observe(
                &Sample::new(pdu.clone(), t * S).with_field("current", FieldValue::Float(amps)),
                &mut out,
            );
        }
        let got: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    &*e.rule,
                    e.timestamp_ns / S,
                    e.state.as_str(),
                    e.severity.as_str(),
                )
            })
            .collect();
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
    }

    proptest::proptest! {
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
