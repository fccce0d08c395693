//! Driving the engine: samples in time order through a fresh [`Engine`], events aggregated
//! into a [`ReplayReport`]. No I/O.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Event, EventState, FieldValue, Sample, SeriesKey, Severity};
use crate::rules::config::{format_value, Condition, Direction, RuleSet, STALE_SUFFIX};
use crate::rules::engine::Engine;
use crate::time::format_time;

use super::options::ReplayOptions;
use super::report::{Incident, ReplayReport, RuleReport};

struct OpenIncident {
    severity: Severity,
    breach_start_ns: i64,
    start_ns: i64,
    peak: Option<f64>,
    peak_text: String,
    notifications: u32,
}

struct RuleAgg {
    report: RuleReport,
    /// Set for one-sided thresholds, the only conditions where a peak means something.
    direction: Option<Direction>,
    /// For a rule's stale (no-data) alerts, reported as `<rule>:stale`: the rule's index,
    /// whose sample counts it shares.
    base: Option<usize>,
}

/// Feeds samples through a fresh engine and aggregates the events into a [`ReplayReport`].
/// Samples must come in time order (across series) for ticks to mean what they do live.
pub struct Replayer {
    engine: Engine,
    rules: Vec<RuleAgg>,
    by_name: HashMap<Arc<str>, usize>,
    /// Per series: (rule index, whether the rule has seen the series' field yet).
    series: HashMap<SeriesKey, Vec<(usize, bool)>>,
    open: HashMap<(usize, SeriesKey), OpenIncident>,
    events: Vec<Event>,
    tick_ns: i64,
    next_tick_ns: i64,
    last_ts: i64,
    pub(super) samples: u64,
    out_of_order: u64,
    pub(super) skipped_rows: u64,
    pub(super) queries: u64,
    from_ns: i64,
    until_ns: i64,
}

impl Replayer {
    pub fn new(rules: RuleSet, opts: &ReplayOptions) -> Replayer {
        let mut aggs = Vec::new();
        let mut by_name = HashMap::new();
        for (i, r) in rules.rules().iter().enumerate() {
            by_name.insert(r.name.clone(), i);
            let direction = match &r.condition {
                Condition::Threshold { direction, .. } if r.rate.is_none() => Some(*direction),
                _ => None,
            };
            aggs.push(RuleAgg {
                report: empty_rule_report(
                    &r.name,
                    &r.measurement,
                    &r.field,
                    format!("{}:{}", r.origin.display(), r.line),
                ),
                direction,
                base: None,
            });
        }
        let tick_ns = i64::try_from(opts.tick.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1);
        Replayer {
            engine: Engine::new(rules),
            rules: aggs,
            by_name,
            series: HashMap::new(),
            open: HashMap::new(),
            events: Vec::new(),
            tick_ns,
            next_tick_ns: opts.from_ns,
            last_ts: i64::MIN,
            samples: 0,
            out_of_order: 0,
            skipped_rows: 0,
            queries: 0,
            from_ns: opts.from_ns,
            until_ns: opts.until_ns,
        }
    }

    /// Runs the engine's clock up to `now` in `tick` steps, as the live stage would have.
    fn advance_clock(&mut self, now: i64) {
        while self.next_tick_ns <= now {
            let t = self.next_tick_ns;
            self.engine.tick(t, &mut self.events);
            self.drain_events();
            self.next_tick_ns = t.saturating_add(self.tick_ns);
        }
    }

    pub fn feed(&mut self, sample: &Sample) {
        self.samples += 1;
        if sample.timestamp_ns < self.last_ts {
            self.out_of_order += 1;
        } else {
            self.last_ts = sample.timestamp_ns;
        }
        self.advance_clock(sample.timestamp_ns);
        let engine_rules = self.engine.rules();
        let matched = self.series.entry(sample.series.clone()).or_insert_with(|| {
            engine_rules
                .rules()
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.measurement == sample.series.measurement
                        && r.matches_tags(&sample.series.tags)
                })
                .map(|(i, _)| (i, false))
                .collect()
        });
        for (idx, seen) in matched.iter_mut() {
            let field = &engine_rules.rules()[*idx].field;
            let Some(value) = sample.field(field) else {
                continue;
            };
            let agg = &mut self.rules[*idx];
            agg.report.samples += 1;
            if !*seen {
                *seen = true;
                agg.report.series += 1;
            }
            let direction = agg.direction;
            if self.open.is_empty() {
                continue;
            }
            if let Some(open) = self.open.get_mut(&(*idx, sample.series.clone())) {
                update_peak(open, direction, value);
            }
        }
        self.engine.observe(sample, &mut self.events);
        self.drain_events();
    }

    fn rule_index(&mut self, ev: &Event) -> usize {
        if let Some(&i) = self.by_name.get(&ev.rule) {
            return i;
        }
        // Stale alerts carry their own name; anything else unknown is still reported.
        let base = ev
            .rule
            .strip_suffix(STALE_SUFFIX)
            .and_then(|b| self.by_name.get(b).copied());
        let origin = base.map_or_else(String::new, |b| self.rules[b].report.origin.clone());
        let i = self.rules.len();
        self.rules.push(RuleAgg {
            report: empty_rule_report(&ev.rule, &ev.series.measurement, &ev.field, origin),
            direction: None,
            base,
        });
        self.by_name.insert(ev.rule.clone(), i);
        i
    }

    fn drain_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        for ev in &events {
            let idx = self.rule_index(ev);
            let direction = self.rules[idx].direction;
            let key = (idx, ev.series.clone());
            match ev.state {
                EventState::Firing => match self.open.get_mut(&key) {
                    Some(open) => {
                        open.severity = open.severity.max(ev.severity);
                        open.notifications += 1;
                        update_peak(open, direction, &ev.value);
                    }
                    None => {
                        let mut open = OpenIncident {
                            severity: ev.severity,
                            breach_start_ns: ev.started_ns,
                            start_ns: ev.timestamp_ns,
                            peak: None,
                            peak_text: format_value(&ev.value),
                            notifications: 1,
                        };
                        update_peak(&mut open, direction, &ev.value);
                        self.open.insert(key, open);
                    }
                },
                EventState::Resolved => {
                    if let Some(open) = self.open.remove(&key) {
                        let inc = close(open, &ev.series, Some(ev.timestamp_ns), ev.timestamp_ns);
                        self.rules[idx].report.incidents.push(inc);
                    }
                }
            }
        }
        // Keep the allocation for the next sample.
        events.clear();
        self.events = events;
    }

    /// Closes the run at `until` and builds the report.
    pub fn finish(mut self) -> ReplayReport {
        // Ticks up to (not at) the end of the range: `until` is exclusive, like the query.
        self.advance_clock(self.until_ns.saturating_sub(1));
        let open = std::mem::take(&mut self.open);
        for ((idx, series), o) in open {
            let inc = close(o, &series, None, self.until_ns);
            self.rules[idx].report.incidents.push(inc);
        }
        let mut notes = Vec::new();
        if self.skipped_rows > 0 {
            notes.push(format!(
                "{} row(s) without a timestamp or a field value were skipped",
                self.skipped_rows
            ));
        }
        if self.out_of_order > 0 {
            notes.push(format!(
                "{} sample(s) arrived out of time order; the engine ignores a sample older than the last one of its series",
                self.out_of_order
            ));
        }
        let counts: Vec<(u64, u64)> = self
            .rules
            .iter()
            .map(|a| (a.report.samples, a.report.series))
            .collect();
        let rules = self
            .rules
            .into_iter()
            .map(|mut a| {
                if let Some(b) = a.base {
                    (a.report.samples, a.report.series) = counts[b];
                }
                finish_rule(a.report)
            })
            .collect();
        ReplayReport {
            from: format_time(self.from_ns),
            until: format_time(self.until_ns),
            from_ns: self.from_ns,
            until_ns: self.until_ns,
            samples: self.samples,
            series: self.series.len() as u64,
            queries: self.queries,
            rules,
            notes,
        }
    }
}

fn empty_rule_report(name: &str, measurement: &str, field: &str, origin: String) -> RuleReport {
    RuleReport {
        name: name.to_string(),
        measurement: measurement.to_string(),
        field: field.to_string(),
        origin,
        samples: 0,
        series: 0,
        incidents: Vec::new(),
        critical: 0,
        warning: 0,
        still_firing: 0,
        notifications: 0,
        firing_s: 0.0,
        longest_s: 0.0,
    }
}

fn update_peak(open: &mut OpenIncident, direction: Option<Direction>, value: &FieldValue) {
    let Some(direction) = direction else {
        return;
    };
    let Some(x) = value.as_f64().filter(|x| x.is_finite()) else {
        return;
    };
    let better = match (open.peak, direction) {
        (None, _) => true,
        (Some(p), Direction::Above) => x > p,
        (Some(p), Direction::Below) => x < p,
    };
    if better {
        open.peak = Some(x);
        open.peak_text = format_value(&FieldValue::Float(x));
    }
}

fn close(o: OpenIncident, series: &SeriesKey, end_ns: Option<i64>, until_ns: i64) -> Incident {
    let end = end_ns.unwrap_or(until_ns);
    Incident {
        series: series.to_string(),
        severity: o.severity,
        breach_start: format_time(o.breach_start_ns),
        breach_start_ns: o.breach_start_ns,
        start: format_time(o.start_ns),
        start_ns: o.start_ns,
        end: end_ns.map(format_time),
        end_ns,
        duration_s: (end - o.start_ns).max(0) as f64 / 1e9,
        still_firing: end_ns.is_none(),
        peak: o.peak,
        peak_text: o.peak_text,
        notifications: o.notifications,
    }
}

fn finish_rule(mut r: RuleReport) -> RuleReport {
    r.incidents
        .sort_by(|a, b| (a.start_ns, &a.series).cmp(&(b.start_ns, &b.series)));
    r.critical = r
        .incidents
        .iter()
        .filter(|i| i.severity == Severity::Critical)
        .count();
    r.warning = r
        .incidents
        .iter()
        .filter(|i| i.severity == Severity::Warning)
        .count();
    r.still_firing = r.incidents.iter().filter(|i| i.still_firing).count();
    r.notifications = r.incidents.iter().map(|i| u64::from(i.notifications)).sum();
    r.firing_s = r.incidents.iter().map(|i| i.duration_s).sum();
    r.longest_s = r.incidents.iter().map(|i| i.duration_s).fold(0.0, f64::max);
    r
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::TagSet;
    use crate::rules::config::parse_rules;
    use crate::time::NS_PER_SEC;
    use serde_json::Value;
    use std::path::Path;
    use std::time::Duration;

    const S: i64 = NS_PER_SEC;

    pub(crate) fn ruleset(text: &str) -> RuleSet {
        RuleSet::new(parse_rules(text, Path::new("r.toml")).unwrap()).unwrap()
    }

    pub(crate) const RULES: &str = r#"
[[rule]]
name = "hot"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { warning = 27.0, warning_clear = 26.0, critical = 32.0, critical_clear = 31.0 }
for = "10s"

[[rule]]
name = "ups"
measurement = "ups"
field = "source"
equals = { critical = "battery" }

[[rule]]
name = "typo"
measurement = "envv"
field = "t"
below = { warning = 10.0 }
"#;

    fn opts(from: i64, until: i64) -> ReplayOptions {
        ReplayOptions {
            from_ns: from,
            until_ns: until,
            window: Duration::from_secs(3600),
            tick: Duration::from_secs(1),
        }
    }

    fn env(rack: &str, ts: i64, t: f64) -> Sample {
        Sample::new(SeriesKey::new("env", TagSet::new([("rack", rack)])), ts * S)
            .with_field("t", FieldValue::Float(t))
    }

    #[test]
    fn aggregates_incidents_peaks_and_still_firing() {
        let mut rp = Replayer::new(ruleset(RULES), &opts(0, 1000 * S));
        // r1: warning at 20 s (breach from 10 s), critical at 40 s, back to warning at 60 s,
        // resolved at 100 s.
        let r1 = [
            (0, 20.0),
            (10, 28.0),
            (20, 29.0),
            (30, 33.0),
            (40, 34.5),
            (50, 33.0),
            (60, 30.0),
            (100, 25.0),
        ];
        // r2: breaches only for 5 s (filtered by `for`), then fires at 300 s and never clears.
        let r2 = [
            (0, 20.0),
            (200, 28.0),
            (205, 20.0),
            (290, 28.0),
            (300, 28.5),
        ];
        let mut all: Vec<Sample> = r1
            .iter()
            .map(|&(t, v)| env("r1", t, v))
            .chain(r2.iter().map(|&(t, v)| env("r2", t, v)))
            .collect();
        all.push(
            Sample::new(SeriesKey::new("ups", TagSet::empty()), 500 * S)
                .with_field("source", FieldValue::Str("battery".into())),
        );
        all.push(
            Sample::new(SeriesKey::new("ups", TagSet::empty()), 560 * S)
                .with_field("source", FieldValue::Str("normal".into())),
        );
        // A series the rule's match rejects (no rack tag) is not counted for it.
        all.push(
            Sample::new(SeriesKey::new("env", TagSet::empty()), 10 * S)
                .with_field("t", FieldValue::Float(99.0)),
        );
        all.sort_by_key(|s| s.timestamp_ns);
        for s in &all {
            rp.feed(s);
        }
        let rep = rp.finish();
        assert_eq!(rep.samples, all.len() as u64);
        assert_eq!(rep.series, 4);
        let hot = &rep.rules[0];
        assert_eq!(
            (hot.samples, hot.series, hot.incidents.len()),
            (13, 2, 2),
            "{hot:#?}"
        );
        assert_eq!((hot.critical, hot.warning, hot.still_firing), (1, 1, 1));
        // r1: warning, critical, warning; r2: warning.
        assert_eq!(hot.notifications, 4);
        let a = &hot.incidents[0];
        assert_eq!(a.series, "env,rack=r1");
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(
            (a.breach_start_ns, a.start_ns, a.end_ns),
            (10 * S, 20 * S, Some(100 * S))
        );
        assert_eq!(a.duration_s, 80.0);
        assert_eq!(a.peak, Some(34.5));
        assert_eq!(a.notifications, 3);
        let b = &hot.incidents[1];
        assert_eq!(b.series, "env,rack=r2");
        assert_eq!(
            (b.start_ns, b.end_ns, b.still_firing),
            (300 * S, None, true)
        );
        assert_eq!(b.duration_s, 700.0);
        assert_eq!(b.peak, Some(28.5));
        assert_eq!(hot.firing_s, 780.0);
        assert_eq!(hot.longest_s, 700.0);

        let ups = &rep.rules[1];
        assert_eq!(ups.incidents.len(), 1);
        assert_eq!(ups.incidents[0].peak, None);
        assert_eq!(ups.incidents[0].peak_text, "battery");
        assert_eq!(ups.incidents[0].duration_s, 60.0);
        let typo = &rep.rules[2];
        assert_eq!((typo.samples, typo.incidents.len()), (0, 0));

        let text = rep.to_string();
        for want in [
            "replay 1970-01-01T00:00:00Z .. 1970-01-01T00:16:40Z: 16 samples from 4 series, 3 rule(s)",
            "rule hot (env.t, r.toml:2): 2 incident(s) (1 critical, 1 warning), 1 still firing, 4 firing notification(s), 13 samples from 2 series",
            "  firing time 13m in total, longest 11m 40s",
            "  critical 1970-01-01T00:00:20Z -> 1970-01-01T00:01:40Z  1m 20s  peak 34.5  env,rack=r1",
            "  warning  1970-01-01T00:05:00Z -> still firing  >= 11m 40s  peak 28.5  env,rack=r2",
            "  critical 1970-01-01T00:08:20Z -> 1970-01-01T00:09:20Z  1m  peak battery  ups",
            "rule typo (envv.t, r.toml:16): 0 incident(s)",
            "  no samples: check the rule's measurement",
            "summary: 3 rule(s), 3 incident(s) (2 critical, 1 warning), 1 still firing, 5 firing notification(s); 16 samples, 4 series",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let json = serde_json::to_value(&rep).unwrap();
        assert_eq!(json["rules"][0]["incidents"][0]["severity"], "critical");
        assert_eq!(json["rules"][0]["incidents"][1]["end"], Value::Null);
    }

    #[test]
    fn stale_rules_fire_on_the_replayed_clock() {
        let text = r#"
[[rule]]
name = "silent"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { critical = 50.0 }
stale_after = "5m"
"#;
        let mut rp = Replayer::new(ruleset(text), &opts(0, 3600 * S));
        // Every 10 s for 10 min, then nothing for 20 min, then again.
        for t in (0..600).step_by(10).chain((1800..2400).step_by(10)) {
            rp.feed(&env("r1", t, 20.0));
        }
        let rep = rp.finish();
        assert!(rep.rules[0].incidents.is_empty());
        let r = &rep.rules[1];
        assert_eq!(r.name, "silent:stale");
        assert_eq!(
            (r.origin.as_str(), r.samples, r.series),
            ("r.toml:2", 120, 1)
        );
        assert_eq!(r.incidents.len(), 2, "{r:#?}");
        // Last sample at 590 s: stale 5 min later on the replayed clock, until data is back.
        let i = &r.incidents[0];
        assert_eq!((i.start_ns, i.end_ns), (890 * S, Some(1800 * S)), "{i:#?}");
        // Silent again from 2390 s to the end of the range.
        let i = &r.incidents[1];
        assert_eq!((i.start_ns, i.end_ns), (2690 * S, None), "{i:#?}");
        assert_eq!(i.duration_s, 910.0);
    }

    #[test]
    fn out_of_order_samples_are_noted() {
        let mut rp = Replayer::new(ruleset(RULES), &opts(0, 100 * S));
        rp.feed(&env("r1", 10, 20.0));
        rp.feed(&env("r1", 5, 40.0));
        let rep = rp.finish();
        assert!(rep.notes[0].contains("1 sample(s) arrived out of time order"));
        assert_eq!(rep.incidents(), 0);
    }
}
