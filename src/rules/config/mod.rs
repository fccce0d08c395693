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
    /// state survives a reload or restart exactly when the name and this are unchanged.
    pub fn signature(&self) -> String {
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

/// All loaded rules (names unique) and silences.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    silences: Vec<Arc<Silence>>,
    /// Measurement → positions in `rules`, ascending: the candidates for a new series.
    by_measurement: HashMap<Arc<str>, Vec<usize>>,
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
        self.rules.iter().find(|r| r.name.as_ref() == name)
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
