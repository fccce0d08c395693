//! The replay report: incidents per rule, its text form and its JSON form.

use std::fmt;

use serde::Serialize;

use crate::model::Severity;

use super::options::format_duration_ns;

/// One alert incident the rules would have raised.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incident {
    pub series: String,
    /// Highest severity reached.
    #[serde(serialize_with = "severity_text")]
    pub severity: Severity,
    /// First breaching sample (before `for` elapsed).
    pub breach_start: String,
    pub breach_start_ns: i64,
    /// First firing notification.
    pub start: String,
    pub start_ns: i64,
    /// Resolved notification; `None` while still firing at the end of the range.
    pub end: Option<String>,
    pub end_ns: Option<i64>,
    /// From `start` to `end` (or to the end of the range when still firing).
    pub duration_s: f64,
    pub still_firing: bool,
    /// Most extreme numeric value during the incident (highest for `above`, lowest for
    /// `below`); for other conditions the value that fired.
    pub peak: Option<f64>,
    pub peak_text: String,
    /// Firing notifications in this incident (1 + escalations/de-escalations).
    pub notifications: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleReport {
    pub name: String,
    pub measurement: String,
    pub field: String,
    /// `file:line` of the rule; empty for events under a name the rule set does not hold.
    pub origin: String,
    /// Samples that carried the watched field on series the rule's `match` accepts.
    pub samples: u64,
    pub series: u64,
    pub incidents: Vec<Incident>,
    pub critical: usize,
    pub warning: usize,
    pub still_firing: usize,
    pub notifications: u64,
    pub firing_s: f64,
    pub longest_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayReport {
    pub from: String,
    pub until: String,
    pub from_ns: i64,
    pub until_ns: i64,
    pub samples: u64,
    pub series: u64,
    pub queries: u64,
    pub rules: Vec<RuleReport>,
    /// Counted oddities (rows without a time or value, out-of-order rows).
    pub notes: Vec<String>,
}

fn severity_text<S: serde::Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

fn secs_to_ns(s: f64) -> i64 {
    (s * 1e9).round() as i64
}

impl ReplayReport {
    pub fn incidents(&self) -> usize {
        self.rules.iter().map(|r| r.incidents.len()).sum()
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay {} .. {}: {} samples from {} series, {} rule(s)",
            self.from,
            self.until,
            self.samples,
            self.series,
            self.rules.len()
        )?;
        for r in &self.rules {
            writeln!(f)?;
            let origin = if r.origin.is_empty() {
                String::new()
            } else {
                format!(", {}", r.origin)
            };
            writeln!(
                f,
                "rule {} ({}.{}{origin}): {} incident(s) ({} critical, {} warning), {} still firing, {} firing notification(s), {} samples from {} series",
                r.name,
                r.measurement,
                r.field,
                r.incidents.len(),
                r.critical,
                r.warning,
                r.still_firing,
                r.notifications,
                r.samples,
                r.series
            )?;
            if r.samples == 0 && !r.origin.is_empty() {
                writeln!(
                    f,
                    "  no samples: check the rule's measurement, field and match against what is stored"
                )?;
            }
            if !r.incidents.is_empty() {
                writeln!(
                    f,
                    "  firing time {} in total, longest {}",
                    format_duration_ns(secs_to_ns(r.firing_s)),
                    format_duration_ns(secs_to_ns(r.longest_s))
                )?;
            }
            for i in &r.incidents {
                let (end, dur) = match &i.end {
                    Some(e) => (e.clone(), format_duration_ns(secs_to_ns(i.duration_s))),
                    None => (
                        "still firing".to_string(),
                        format!(">= {}", format_duration_ns(secs_to_ns(i.duration_s))),
                    ),
                };
                writeln!(
                    f,
                    "  {:<8} {} -> {}  {}  peak {}  {}",
                    i.severity.as_str(),
                    i.start,
                    end,
                    dur,
                    i.peak_text,
                    i.series
                )?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        let crit: usize = self.rules.iter().map(|r| r.critical).sum();
        let warn: usize = self.rules.iter().map(|r| r.warning).sum();
        let still: usize = self.rules.iter().map(|r| r.still_firing).sum();
        let sent: u64 = self.rules.iter().map(|r| r.notifications).sum();
        writeln!(f)?;
        write!(
            f,
            "summary: {} rule(s), {} incident(s) ({crit} critical, {warn} warning), {still} still firing, {sent} firing notification(s); {} samples, {} series",
            self.rules.len(),
            self.incidents(),
            self.samples,
            self.series
        )
    }
}
