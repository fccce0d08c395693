//! Conditions: threshold levels with hysteresis, `equals` expectations and bands, and how a
//! value is classified against them.

use std::fmt;

use crate::model::{FieldValue, Severity};

use super::template::format_number;

/// One threshold level: fires when the value goes beyond `at`, clears only once it is back
/// past `clear` (hysteresis). With no explicit clear, `clear == at`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub at: f64,
    pub clear: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

/// The value an `equals` level is waiting for.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    Str(String),
    Bool(bool),
    Num(f64),
}

impl Expected {
    /// `None` when the sample's value can never be compared with this expectation (a string
    /// rule on a numeric field), so a type mix-up is counted instead of silently never firing.
    pub(crate) fn matches(&self, value: &FieldValue) -> Option<bool> {
        match (self, value) {
            (Expected::Str(e), FieldValue::Str(v)) => Some(e.as_str() == v.as_ref()),
            (Expected::Str(_), _) => None,
            (_, FieldValue::Str(_)) => None,
            (Expected::Bool(e), FieldValue::Bool(v)) => Some(e == v),
            // Dry contacts often arrive as 0/1 integers; `true` means 1.
            (Expected::Bool(e), v) => v.as_f64().map(|x| x == if *e { 1.0 } else { 0.0 }),
            (Expected::Num(e), v) => v.as_f64().map(|x| x == *e),
        }
    }

    pub(crate) fn threshold(&self) -> Option<f64> {
        match self {
            Expected::Num(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Str(s) => f.write_str(s),
            Expected::Bool(b) => write!(f, "{b}"),
            Expected::Num(n) => f.write_str(&format_number(*n)),
        }
    }
}

/// A range for `outside` / `inside`: `low` and `high` each with their own clear value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Band {
    pub low: Level,
    pub high: Level,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Threshold {
        direction: Direction,
        warning: Option<Level>,
        critical: Option<Level>,
    },
    Equals {
        warning: Option<Expected>,
        critical: Option<Expected>,
    },
    /// `outside`: fires when the value leaves the band (below `low.at` or above `high.at`) and
    /// clears once it is back inside the clear band. `inside` (`inside == true`): fires while
    /// the value is strictly within the band and clears once it is outside the clear band.
    Band {
        inside: bool,
        warning: Option<Band>,
        critical: Option<Band>,
    },
}

impl Condition {
    /// Severity the value calls for, given the severity currently firing (`active`): a level
    /// already firing holds until the value is back past its clear value. `None` when the value
    /// cannot be evaluated (wrong type, NaN).
    pub(crate) fn classify(&self, value: &FieldValue, active: Severity) -> Option<Severity> {
        match self {
            Condition::Threshold {
                direction,
                warning,
                critical,
            } => {
                let x = value.as_f64().filter(|x| !x.is_nan())?;
                let beyond = |limit: f64| match direction {
                    Direction::Above => x > limit,
                    Direction::Below => x < limit,
                };
                let holds = |level: &Option<Level>, sev: Severity| {
                    level
                        .as_ref()
                        .is_some_and(|l| beyond(l.at) || (active >= sev && beyond(l.clear)))
                };
                Some(pick(
                    holds(critical, Severity::Critical),
                    holds(warning, Severity::Warning),
                ))
            }
            Condition::Band {
                inside,
                warning,
                critical,
            } => {
                let x = value.as_f64().filter(|x| !x.is_nan())?;
                let breach = |lo: f64, hi: f64| {
                    if *inside {
                        x > lo && x < hi
                    } else {
                        x < lo || x > hi
                    }
                };
                let holds = |band: &Option<Band>, sev: Severity| {
                    band.as_ref().is_some_and(|b| {
                        breach(b.low.at, b.high.at)
                            || (active >= sev && breach(b.low.clear, b.high.clear))
                    })
                };
                Some(pick(
                    holds(critical, Severity::Critical),
                    holds(warning, Severity::Warning),
                ))
            }
            Condition::Equals { warning, critical } => {
                let c = critical.as_ref().map(|e| e.matches(value));
                let w = warning.as_ref().map(|e| e.matches(value));
                if c.flatten().is_none() && w.flatten().is_none() {
                    return None;
                }
                Some(pick(c == Some(Some(true)), w == Some(Some(true))))
            }
        }
    }

    /// The closed range of numeric values that classify as `Ok` while nothing is active, when
    /// that is one interval: `above` up to its lowest level, `below` from its highest,
    /// `outside` within its narrowest band. `None` for `inside` and `equals` (their calm
    /// values are not one interval). Lets the engine pass a value by every rule at rest on
    /// a field with two comparisons instead of one per rule.
    pub(crate) fn quiet_range(&self) -> Option<(f64, f64)> {
        match self {
            Condition::Threshold {
                direction,
                warning,
                critical,
            } => {
                let levels = || warning.iter().chain(critical.iter()).map(|l| l.at);
                match direction {
                    Direction::Above => {
                        Some((f64::NEG_INFINITY, levels().fold(f64::INFINITY, f64::min)))
                    }
                    Direction::Below => {
                        Some((levels().fold(f64::NEG_INFINITY, f64::max), f64::INFINITY))
                    }
                }
            }
            Condition::Band {
                inside: false,
                warning,
                critical,
            } => {
                let bands = || warning.iter().chain(critical.iter());
                Some((
                    bands().map(|b| b.low.at).fold(f64::NEG_INFINITY, f64::max),
                    bands().map(|b| b.high.at).fold(f64::INFINITY, f64::min),
                ))
            }
            Condition::Band { inside: true, .. } | Condition::Equals { .. } => None,
        }
    }

    /// The level's threshold for event records (numeric only). For a band, the edge nearer
    /// to the value, i.e. the one that was crossed.
    pub(crate) fn threshold(&self, sev: Severity, value: &FieldValue) -> Option<f64> {
        match self {
            Condition::Threshold {
                warning, critical, ..
            } => level_of(warning, critical, sev).map(|l| l.at),
            Condition::Band {
                warning, critical, ..
            } => band_of(warning, critical, sev).map(|b| nearer(b, value, |l| l.at)),
            Condition::Equals { warning, critical } => match sev {
                Severity::Warning => warning.as_ref().and_then(Expected::threshold),
                Severity::Critical => critical.as_ref().and_then(Expected::threshold),
                Severity::Ok => None,
            },
        }
    }

    /// Text for `{threshold}` in a firing message.
    pub(crate) fn threshold_text(&self, sev: Severity, value: &FieldValue) -> String {
        match self {
            Condition::Equals { warning, critical } => match sev {
                Severity::Warning => warning.as_ref().map(ToString::to_string),
                Severity::Critical => critical.as_ref().map(ToString::to_string),
                Severity::Ok => None,
            }
            .unwrap_or_default(),
            _ => self
                .threshold(sev, value)
                .map(format_number)
                .unwrap_or_default(),
        }
    }

    /// Threshold crossed to resolve: the clear value of the lowest level, since being back
    /// past it is what ends the incident. For `equals`, the value that was matched.
    pub(crate) fn resolve_threshold(
        &self,
        last: Severity,
        value: &FieldValue,
    ) -> (Option<f64>, String) {
        let t = match self {
            Condition::Threshold {
                warning, critical, ..
            } => warning.or(*critical).map(|l| l.clear),
            Condition::Band {
                warning, critical, ..
            } => warning.or(*critical).map(|b| nearer(b, value, |l| l.clear)),
            Condition::Equals { .. } => {
                return (
                    self.threshold(last, value),
                    self.threshold_text(last, value),
                )
            }
        };
        (t, t.map(format_number).unwrap_or_default())
    }

    /// Levels defined by this condition, lowest first.
    pub(crate) fn levels(&self) -> impl Iterator<Item = Severity> {
        let (w, c) = match self {
            Condition::Threshold {
                warning, critical, ..
            } => (warning.is_some(), critical.is_some()),
            Condition::Band {
                warning, critical, ..
            } => (warning.is_some(), critical.is_some()),
            Condition::Equals { warning, critical } => (warning.is_some(), critical.is_some()),
        };
        [(w, Severity::Warning), (c, Severity::Critical)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, s)| s)
    }

    /// Same kind of condition (so an override may replace it).
    pub(crate) fn same_kind(&self, other: &Condition) -> bool {
        match (self, other) {
            (
                Condition::Threshold { direction: a, .. },
                Condition::Threshold { direction: b, .. },
            ) => a == b,
            (Condition::Band { inside: a, .. }, Condition::Band { inside: b, .. }) => a == b,
            (Condition::Equals { .. }, Condition::Equals { .. }) => true,
            _ => false,
        }
    }
}

fn pick(critical: bool, warning: bool) -> Severity {
    if critical {
        Severity::Critical
    } else if warning {
        Severity::Warning
    } else {
        Severity::Ok
    }
}

fn band_of(warning: &Option<Band>, critical: &Option<Band>, sev: Severity) -> Option<Band> {
    match sev {
        Severity::Warning => *warning,
        Severity::Critical => *critical,
        Severity::Ok => None,
    }
}

/// The band edge nearer to the value (by the midpoint of the band's levels).
fn nearer(b: Band, value: &FieldValue, edge: impl Fn(&Level) -> f64) -> f64 {
    let mid = (b.low.at + b.high.at) / 2.0;
    match value.as_f64() {
        Some(x) if x > mid => edge(&b.high),
        _ => edge(&b.low),
    }
}
fn level_of(warning: &Option<Level>, critical: &Option<Level>, sev: Severity) -> Option<Level> {
    match sev {
        Severity::Warning => *warning,
        Severity::Critical => *critical,
        Severity::Ok => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_values_compare_by_type() {
        let t = Expected::Bool(true);
        assert_eq!(t.matches(&FieldValue::Bool(true)), Some(true));
        assert_eq!(t.matches(&FieldValue::Int(1)), Some(true));
        assert_eq!(t.matches(&FieldValue::UInt(0)), Some(false));
        assert_eq!(t.matches(&FieldValue::Str("true".into())), None);
        let s = Expected::Str("battery".into());
        assert_eq!(s.matches(&FieldValue::Str("battery".into())), Some(true));
        assert_eq!(s.matches(&FieldValue::Float(5.0)), None);
        assert_eq!(Expected::Num(5.0).matches(&FieldValue::Int(5)), Some(true));
    }

    fn level() -> impl proptest::strategy::Strategy<Value = Option<Level>> {
        use proptest::prelude::*;
        proptest::option::of(
            (-50.0f64..50.0, -5.0f64..5.0).prop_map(|(at, d)| Level { at, clear: at + d }),
        )
    }

    fn condition() -> impl proptest::strategy::Strategy<Value = Condition> {
        use proptest::prelude::*;
        let band = || {
            proptest::option::of((-50.0f64..0.0, 0.0f64..50.0, 0.0f64..3.0).prop_map(
                |(lo, hi, d)| Band {
                    low: Level {
                        at: lo,
                        clear: lo + d,
                    },
                    high: Level {
                        at: hi,
                        clear: hi - d,
                    },
                },
            ))
        };
        prop_oneof![
            (any::<bool>(), level(), level()).prop_map(|(above, warning, critical)| {
                Condition::Threshold {
                    direction: if above {
                        Direction::Above
                    } else {
                        Direction::Below
                    },
                    warning,
                    critical,
                }
            }),
            (any::<bool>(), band(), band()).prop_map(|(inside, warning, critical)| {
                Condition::Band {
                    inside,
                    warning,
                    critical,
                }
            }),
        ]
    }

    proptest::proptest! {
        /// The engine skips rules at rest for a value in the quiet range: such a value must
        /// classify as Ok for every one of them, and one just outside must not be quiet when
        /// it fires.
        #[test]
        fn a_quiet_value_never_fires(c in condition(), x in -60.0f64..60.0) {
            let v = FieldValue::Float(x);
            if let Some((lo, hi)) = c.quiet_range() {
                if lo <= x && x <= hi {
                    proptest::prop_assert_eq!(c.classify(&v, Severity::Ok), Some(Severity::Ok));
                }
                if c.classify(&v, Severity::Ok) != Some(Severity::Ok) {
                    proptest::prop_assert!(x < lo || x > hi);
                }
            }
        }
    }
}
