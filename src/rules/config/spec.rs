//! The optional parts of a validated rule: rate, stale, flapping, overrides, dependencies.

use std::sync::Arc;
use std::time::Duration;

use crate::model::Severity;

use super::condition::Condition;
use super::matcher::TagMatcher;
use super::template::MessageTemplate;

/// Suffix of the rule name carried by stale (no-data) events. `:` is not allowed in rule
/// names, so a stale alert never shares its identity with a user rule.
pub const STALE_SUFFIX: &str = ":stale";

/// `rate`: the rule's levels apply to the change of the value over a sliding window
/// (rising: latest minus the lowest value in the window; falling: highest minus latest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSpec {
    pub window: Duration,
    pub falling: bool,
}

impl RateSpec {
    pub(crate) fn window_ns(&self) -> i64 {
        duration_ns(self.window)
    }
}

/// `stale_after`: a series that matched the rule and stops reporting the rule's field for
/// `after` (wall clock) is its own alert, `<rule>:stale`.
#[derive(Clone, Debug)]
pub struct StaleSpec {
    pub after: Duration,
    pub severity: Severity,
    pub message: MessageTemplate,
}

impl PartialEq for StaleSpec {
    fn eq(&self, other: &Self) -> bool {
        self.after == other.after && self.severity == other.severity
    }
}

/// `flapping`: more than `changes` notified state changes within `window` (sample time)
/// mark the series as flapping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlapSpec {
    pub changes: u32,
    pub window: Duration,
}

/// `[[rule.override]]`: other levels for the series its `match` selects.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub matchers: Vec<TagMatcher>,
    pub condition: Condition,
    pub rate: Option<RateSpec>,
    pub line: usize,
}

/// `depends_on`: while a series of `rule` whose `match_tags` equal this series' is firing,
/// this rule does not start new alerts for the series.
#[derive(Clone, Debug, PartialEq)]
pub struct Dependency {
    pub rule: Arc<str>,
    pub match_tags: Vec<String>,
}

pub(crate) fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
