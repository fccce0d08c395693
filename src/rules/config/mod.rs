//! Rule files: TOML schema, validation with `file:line` errors, and the `[rules]` table of the
//! main config that says where rule files live.
//!
//! ```toml
//! [[rule]]
//! name = "rack_inlet_temperature"
//! measurement = "environment"
//! field = "temperature"
//! match = { site = "*", rack = "*", room = "*" }
//! above = { warning = 27.0, warning_clear = 26.0, critical = 32.0, critical_clear = 31.0 }
//! for = "30s"
//! message = "{rack} in {room}: inlet {value} °C above {threshold} °C"
//! ```

mod condition;
mod error;
mod files;
mod matcher;
mod raw;
mod spec;
mod template;
mod validate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::TagSet;
use crate::rules::silence::Silence;

pub use condition::{Band, Condition, Direction, Expected, Level};
pub use error::{RuleProblem, RulesError};
pub use files::{load_rule_files, RulesConfig, DEFAULT_MAX_FUTURE_SKEW, DEFAULT_WATCH_INTERVAL};
pub use matcher::TagMatcher;
pub(crate) use spec::duration_ns;
pub use spec::{Dependency, FlapSpec, Override, RateSpec, StaleSpec, STALE_SUFFIX};
pub use template::{
    format_number, format_value, MessageTemplate, Placeholder, RenderContext, Segment,
};
pub use validate::{parse_rule_file, parse_rules};

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub measurement: Arc<str>,
    pub field: Arc<str>,
    pub matchers: Vec<TagMatcher>,
    pub condition: Condition,
    /// When set, `condition` applies to the change over the window, not to the value.
    pub rate: Option<RateSpec>,
    /// How long the condition must hold, on sample timestamps, before it fires.
    pub for_duration: Duration,
    /// How long the condition must stay clear, on sample timestamps, before it resolves.
    pub keep_firing_for: Duration,
    pub stale: Option<StaleSpec>,
    pub flapping: Option<FlapSpec>,
    pub overrides: Vec<Override>,
    pub depends_on: Option<Dependency>,
    pub message: MessageTemplate,
    pub resolved_message: MessageTemplate,
    /// `labels`: routing and grouping keys (team, service), templated; sorted by name.
    pub labels: Vec<(Arc<str>, MessageTemplate)>,
    /// `annotations`: what a responder reads (runbook_url, summary), templated; sorted.
    pub annotations: Vec<(Arc<str>, MessageTemplate)>,
    pub origin: PathBuf,
    pub line: usize,
}

impl Rule {
    pub fn matches_tags(&self, tags: &TagSet) -> bool {
        self.matchers.iter().all(|m| m.matches(tags))
    }

    /// Which definition applies to a series: 0 the rule's own, `i + 1` override `i` (the
    /// first whose `match` accepts the tags).
    pub fn variant_for(&self, tags: &TagSet) -> usize {
        self.overrides
            .iter()
            .position(|o| o.matchers.iter().all(|m| m.matches(tags)))
            .map_or(0, |i| i + 1)
    }

    /// Condition and rate of a variant from [`Rule::variant_for`].
    pub fn variant(&self, v: usize) -> (&Condition, Option<RateSpec>) {
        match v.checked_sub(1).and_then(|i| self.overrides.get(i)) {
            Some(o) => (&o.condition, o.rate),
            None => (&self.condition, self.rate),
        }
    }

    /// Everything that decides evaluation (not messages or file location), as text. Rule
    /// state survives a reload or restart exactly when the name and this are unchanged. It is
    /// saved in the state file, so it is spelled out field by field (never `Debug` output,
    /// which may change with the code): `key=value` items separated by `;`, numbers in
    /// Rust's shortest round-trip form, durations in nanoseconds.
    pub fn signature(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(160);
        let _ = write!(s, "m={};f={};", self.measurement, self.field);
        write_matchers(&mut s, &self.matchers);
        write_condition(&mut s, &self.condition);
        write_rate(&mut s, self.rate);
        let _ = write!(
            s,
            "for={};keep={};",
            self.for_duration.as_nanos(),
            self.keep_firing_for.as_nanos()
        );
        if let Some(st) = &self.stale {
            let _ = write!(s, "stale={},{};", st.after.as_nanos(), st.severity.as_str());
        }
        if let Some(f) = &self.flapping {
            let _ = write!(s, "flap={},{};", f.changes, f.window.as_nanos());
        }
        for o in &self.overrides {
            s.push_str("override[");
            write_matchers(&mut s, &o.matchers);
            write_condition(&mut s, &o.condition);
            write_rate(&mut s, o.rate);
            s.push_str("];");
        }
        if let Some(d) = &self.depends_on {
            let _ = write!(s, "dep={},{};", d.rule, d.match_tags.join(","));
        }
        s
    }

    /// The signature as version 1 state files hold it (built from `Debug` output); only
    /// compared with what such a file says, so a state file written before the explicit
    /// signature still restores its pending waits.
    pub(crate) fn legacy_signature(&self) -> String {
        let matchers = |ms: &[TagMatcher]| {
            ms.iter()
                .map(|m| format!("{}={}", m.tag, m.pattern))
                .collect::<Vec<_>>()
                .join(",")
        };
        let overrides: Vec<String> = self
            .overrides
            .iter()
            .map(|o| format!("[{}]{:?}{:?}", matchers(&o.matchers), o.condition, o.rate))
            .collect();
        format!(
            "{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.measurement,
            self.field,
            matchers(&self.matchers),
            self.condition,
            self.rate,
            self.for_duration,
            self.keep_firing_for,
            self.stale.as_ref().map(|s| (s.after, s.severity)),
            self.flapping,
            overrides,
            self.depends_on,
            ""
        )
    }

    /// Same evaluation semantics (what is watched, where the levels are, how long to wait):
    /// rule state survives a reload exactly when this holds. Messages and file location may
    /// differ.
    pub fn same_condition(&self, other: &Rule) -> bool {
        self.name == other.name && self.signature() == other.signature()
    }

    pub(crate) fn for_ns(&self) -> i64 {
        duration_ns(self.for_duration)
    }

    pub(crate) fn keep_ns(&self) -> i64 {
        duration_ns(self.keep_firing_for)
    }

    /// Rule name of this rule's stale (no-data) alerts.
    pub fn stale_name(&self) -> Arc<str> {
        format!("{}{STALE_SUFFIX}", self.name).into()
    }
}

fn write_matchers(s: &mut String, ms: &[TagMatcher]) {
    s.push_str("match=");
    for m in ms {
        s.push_str(&m.tag);
        s.push_str(if m.negate { "!=" } else { "=" });
        s.push_str(&m.pattern);
        s.push(',');
    }
    s.push(';');
}

fn write_level(s: &mut String, name: &str, l: Option<Level>) {
    use std::fmt::Write;
    if let Some(l) = l {
        let _ = write!(s, "{name}={},{};", l.at, l.clear);
    }
}

fn write_condition(s: &mut String, c: &Condition) {
    use std::fmt::Write;
    match c {
        Condition::Threshold {
            direction,
            warning,
            critical,
        } => {
            s.push_str(match direction {
                Direction::Above => "above;",
                Direction::Below => "below;",
            });
            write_level(s, "w", *warning);
            write_level(s, "c", *critical);
        }
        Condition::Equals { warning, critical } => {
            s.push_str("equals;");
            for (name, e) in [("w", warning), ("c", critical)] {
                let _ = match e {
                    Some(Expected::Str(v)) => write!(s, "{name}=s:{v};"),
                    Some(Expected::Bool(v)) => write!(s, "{name}=b:{v};"),
                    Some(Expected::Num(v)) => write!(s, "{name}=n:{v};"),
                    None => Ok(()),
                };
            }
        }
        Condition::Band {
            inside,
            warning,
            critical,
        } => {
            s.push_str(if *inside { "inside;" } else { "outside;" });
            for (name, b) in [("w", warning), ("c", critical)] {
                if let Some(b) = b {
                    let _ = write!(
                        s,
                        "{name}={},{},{},{};",
                        b.low.at, b.low.clear, b.high.at, b.high.clear
                    );
                }
            }
        }
    }
}

fn write_rate(s: &mut String, r: Option<RateSpec>) {
    use std::fmt::Write;
    if let Some(r) = r {
        let _ = write!(
            s,
            "rate={},{};",
            r.window.as_nanos(),
            if r.falling { "falling" } else { "rising" }
        );
    }
}

/// All loaded rules (names unique) and silences.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    silences: Vec<Arc<Silence>>,
    /// Measurement → positions in `rules`, ascending: the candidates for a new series.
    by_measurement: HashMap<Arc<str>, Vec<usize>>,
    /// Name → position in `rules` (restoring 200,000 saved states must not scan the rules).
    by_name: HashMap<Arc<str>, usize>,
}

impl RuleSet {
    /// Checks that names are unique across all rules (and so across files) and that every
    /// `depends_on` names an existing other rule.
    pub fn new(rules: Vec<Rule>) -> Result<Self, RulesError> {
        RuleSet::with_silences(rules, Vec::new())
    }

    pub fn with_silences(rules: Vec<Rule>, silences: Vec<Silence>) -> Result<Self, RulesError> {
        let mut seen: HashMap<Arc<str>, (PathBuf, usize)> = HashMap::new();
        let mut problems = Vec::new();
        for r in &rules {
            if let Some((path, line)) = seen.get(&r.name) {
                problems.push(RuleProblem {
                    path: r.origin.clone(),
                    line: r.line,
                    rule: r.name.to_string(),
                    problem: format!("the name is already used at {}:{}", path.display(), line),
                    hint: "rule names must be unique across all rule files; rename one".into(),
                });
            } else {
                seen.insert(r.name.clone(), (r.origin.clone(), r.line));
            }
        }
        for r in &rules {
            let Some(dep) = &r.depends_on else { continue };
            let problem = if dep.rule == r.name {
                Some("depends_on names the rule itself".to_string())
            } else if !seen.contains_key(&dep.rule) {
                Some(format!(
                    "depends_on names rule '{}', which does not exist",
                    dep.rule
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                problems.push(RuleProblem {
                    path: r.origin.clone(),
                    line: r.line,
                    rule: r.name.to_string(),
                    problem,
                    hint: "name another rule of any loaded rule file, e.g. depends_on = { rule = \"snmp_device_down\", match_tags = [\"site\"] }".into(),
                });
            }
        }
        if !problems.is_empty() {
            return Err(RulesError::Invalid(problems));
        }
        let mut by_measurement: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        let by_name = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        for (i, r) in rules.iter().enumerate() {
            by_measurement
                .entry(r.measurement.clone())
                .or_default()
                .push(i);
        }
        Ok(RuleSet {
            rules: rules.into_iter().map(Arc::new).collect(),
            silences: silences.into_iter().map(Arc::new).collect(),
            by_measurement,
            by_name,
        })
    }

    /// Positions (in [`RuleSet::rules`], ascending) of the rules on `measurement`.
    pub fn for_measurement(&self, measurement: &str) -> &[usize] {
        self.by_measurement
            .get(measurement)
            .map_or(&[], Vec::as_slice)
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    pub fn silences(&self) -> &[Arc<Silence>] {
        &self.silences
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Rule>> {
        self.position(name).map(|i| &self.rules[i])
    }

    /// Position of the rule named `name` in [`RuleSet::rules`].
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// One parsed rule file.
#[derive(Clone, Debug, Default)]
pub struct RuleFile {
    pub rules: Vec<Rule>,
    pub silences: Vec<Silence>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::validate::parse_rules;
    use super::*;

    fn parse(text: &str) -> Result<Vec<Rule>, RulesError> {
        parse_rules(text, Path::new("rules/test.toml"))
    }

    /// The signature is saved in state files: it is spelled out, not `Debug` output, and it
    /// tells a negated matcher from a plain one.
    #[test]
    fn signature_is_explicit_and_stable() {
        let rule = |extra: &str| {
            parse(&format!(
                "[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\n{extra}"
            ))
            .unwrap()
            .remove(0)
        };
        let r = rule(
            "match = { rack = \"a*\" }\nabove = { warning = 1.5, critical = 3.0 }\nfor = \"1m\"\nstale_after = \"5m\"\nflapping = { changes = 3, window = \"10m\" }",
        );
        assert_eq!(
            r.signature(),
            "m=m;f=f;match=rack=a*,;above;w=1.5,1.5;c=3,3;for=60000000000;keep=0;\
             stale=300000000000,warning;flap=3,600000000000;"
        );
        let plain = rule("match = { rack = \"a\" }\nabove = { warning = 1.0 }");
        let negated = rule("match = { rack = \"!a\" }\nabove = { warning = 1.0 }");
        assert_ne!(plain.signature(), negated.signature());
    }

    #[test]
    fn signature_tracks_evaluation_not_messages() {
        let base = "[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\nabove = { warning = 1.0 }\n";
        let sig = |extra: &str| parse(&format!("{base}{extra}")).unwrap()[0].signature();
        let plain = sig("");
        assert_eq!(
            plain,
            sig("message = \"x {value}\"\nresolved_message = \"y\"")
        );
        assert_eq!(
            sig("stale_after = \"1m\""),
            sig("stale_after = \"1m\"\nstale_message = \"silent {series}\"")
        );
        for extra in [
            "keep_firing_for = \"1m\"",
            "stale_after = \"1m\"",
            "flapping = { changes = 2, window = \"1m\" }",
            "[[rule.override]]\nmatch = { a = \"b\" }\nabove = { warning = 2.0 }",
        ] {
            assert_ne!(plain, sig(extra), "{extra}");
        }
    }
}
