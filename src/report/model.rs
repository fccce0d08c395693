//! What a report holds, independent of its format: the summary, and per incident its facts,
//! timeline, related alerts and plot. Markdown and HTML render the same rows.

use crate::rules::replay::format_duration_ns;

use super::incident::{Incident, StepKind};
use super::shifts::Shifts;
use super::stats::{Spread, Summary};

pub struct Report {
    pub from_ns: i64,
    pub until_ns: i64,
    pub generated_ns: i64,
    /// `InfluxDB http://host:8086, database "x", measurement "events"`.
    pub source: String,
    /// `site = fra1`, `rule ~ ups_*`, ...
    pub filters: Vec<String>,
    pub context_ns: i64,
    pub shifts: Shifts,
    pub summary: Summary,
    pub incidents: Vec<IncidentReport>,
    /// Events rows that fit no incident (an ack of an alert that fired before the range).
    pub unmatched_rows: usize,
    /// Rows without a usable time, fields or the rule/state tags.
    pub skipped_rows: usize,
}

pub enum Plot {
    Png {
        png: Vec<u8>,
        /// What the plot leaves out (thresholds off the metric's scale).
        note: Option<String>,
    },
    /// Why there is none (no samples in the window, a rule without a numeric metric).
    Missing(String),
}

/// Another alert of the same device or site that began within the context window before the
/// incident, or during it.
#[derive(Clone, Debug, PartialEq)]
pub struct Related {
    /// `same device` or `same site`.
    pub relation: &'static str,
    pub begin_ns: i64,
    /// Its beginning minus the incident's (negative: before).
    pub offset_ns: i64,
    pub rule: String,
    pub severity: String,
    pub device: String,
    pub message: String,
    pub resolved_ns: Option<i64>,
}

pub struct IncidentReport {
    pub number: usize,
    pub incident: Incident,
    pub related: Vec<Related>,
    pub plot: Plot,
}

/// A table of text cells, rendered (and escaped) by each format.
pub struct Table {
    pub head: &'static [&'static str],
    pub rows: Vec<Vec<String>>,
}

/// The column whose cells are severities (coloured in HTML).
pub const SEVERITY: &str = "Severity";

/// `-4m 10s` / `+30s` / `0s`.
pub fn signed_duration(ns: i64) -> String {
    match ns {
        0 => "0s".into(),
        n if n < 0 => format!("-{}", format_duration_ns(n.saturating_neg())),
        n => format!("+{}", format_duration_ns(n)),
    }
}

pub fn seconds(s: f64) -> String {
    format_duration_ns((s * 1e9) as i64)
}

/// `mean 1m 30s, median 1m (3 incidents)` or `none`.
pub fn spread_text(s: &Option<Spread>, none: &str) -> String {
    match s {
        Some(s) => format!(
            "mean {}, median {} ({} incident{})",
            seconds(s.mean_s),
            seconds(s.median_s),
            s.count,
            if s.count == 1 { "" } else { "s" }
        ),
        None => none.to_string(),
    }
}

impl IncidentReport {
    /// `ups_on_battery (critical) on ups-a, site fra1`.
    pub fn title(&self) -> String {
        let inc = &self.incident;
        let mut t = format!("{} ({})", inc.rule, inc.severity);
        let place: Vec<String> = [("device", ""), ("site", "site ")]
            .iter()
            .filter_map(|(k, prefix)| inc.tag(k).map(|v| format!("{prefix}{v}")))
            .collect();
        if !place.is_empty() {
            t.push_str(" on ");
            t.push_str(&place.join(", "));
        }
        t
    }

    /// (label, value) facts shown above the timeline.
    pub fn facts(&self, shifts: &Shifts, until_ns: i64) -> Vec<(&'static str, String)> {
        let inc = &self.incident;
        let mut f = vec![
            ("Alert id", inc.id.clone()),
            ("Series", format!("{} (field {})", inc.series, inc.field)),
            ("Message", inc.message.clone()),
        ];
        f.push((
            "Began",
            match inc.firing_ns {
                Some(t) => shifts.local(t),
                None => format!(
                    "{} (breach; the firing is before the history read)",
                    shifts.local(inc.started_ns)
                ),
            },
        ));
        f.push((
            "Status",
            match inc.resolved_ns {
                Some(t) => format!(
                    "resolved {} after {}",
                    shifts.local(t),
                    inc.time_to_resolve_s()
                        .map(seconds)
                        .unwrap_or_else(|| "an unknown time".into())
                ),
                None => format!(
                    "open at the end of the range ({}), for {} by then",
                    shifts.local(until_ns),
                    format_duration_ns(until_ns - inc.begin_ns())
                ),
            },
        ));
        let ack = match (inc.first_ack(), inc.time_to_ack_s()) {
            (Some(step), tta) => {
                let by = match &step.kind {
                    StepKind::Acknowledged { by: Some(b), .. } => format!(" by {b}"),
                    _ => String::new(),
                };
                match tta {
                    Some(s) => format!("{}{by} after {}", shifts.local(step.time_ns), seconds(s)),
                    None => format!("{}{by}", shifts.local(step.time_ns)),
                }
            }
            (None, Some(s)) => format!("after {}", seconds(s)),
            (None, None) => "not acknowledged".into(),
        };
        f.push(("Acknowledged", ack));
        f.push(("Escalations", inc.escalations().to_string()));
        if inc.silenced {
            f.push(("Silenced", "a silence held back its notifications".into()));
        }
        let labels: Vec<String> = inc.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.push(("Tags", labels.join(", ")));
        f
    }

    pub fn timeline(&self, shifts: &Shifts) -> Table {
        let inc = &self.incident;
        let mut prev: Option<i64> = None;
        let rows = inc
            .steps
            .iter()
            .map(|s| {
                let (event, detail) = match &s.kind {
                    StepKind::Breach => {
                        ("breach (first breaching sample)".to_string(), String::new())
                    }
                    StepKind::Firing => ("firing".to_string(), s.message.clone()),
                    StepKind::SeverityChange { from } => (
                        format!("severity {from} → {}", s.severity),
                        s.message.clone(),
                    ),
                    StepKind::Acknowledged { by, comment } => (
                        "acknowledged".to_string(),
                        match (by, comment) {
                            (Some(b), Some(c)) => format!("by {b}: {c}"),
                            (Some(b), None) => format!("by {b}"),
                            (None, Some(c)) => c.clone(),
                            (None, None) => s.message.clone(),
                        },
                    ),
                    StepKind::Escalated { step, receivers } => (
                        match step {
                            Some(n) => format!("escalation step {n}"),
                            None => "escalation".to_string(),
                        },
                        match receivers {
                            Some(r) => format!("to {r}"),
                            None => s.message.clone(),
                        },
                    ),
                    StepKind::Resolved => ("resolved".to_string(), s.message.clone()),
                };
                let detail = match (&s.value, &s.kind) {
                    (
                        Some(v),
                        StepKind::Firing | StepKind::SeverityChange { .. } | StepKind::Resolved,
                    ) => {
                        if detail.is_empty() {
                            format!("value {v}")
                        } else {
                            format!("{detail} (value {v})")
                        }
                    }
                    _ => detail,
                };
                let row = vec![
                    shifts.local(s.time_ns),
                    event,
                    s.severity.clone(),
                    prev.map(|p| format_duration_ns(s.time_ns - p))
                        .unwrap_or_default(),
                    inc.firing_ns
                        .map(|f| signed_duration(s.time_ns - f))
                        .unwrap_or_default(),
                    detail,
                ];
                prev = Some(s.time_ns);
                row
            })
            .collect();
        Table {
            head: &[
                "Time",
                "Event",
                SEVERITY,
                "Since previous",
                "Since firing",
                "Detail",
            ],
            rows,
        }
    }

    /// The related alerts; None when there are none.
    pub fn related_table(&self, shifts: &Shifts) -> Option<Table> {
        (!self.related.is_empty()).then(|| Table {
            head: &[
                "Relation", "Began", "Offset", "Rule", SEVERITY, "Device", "Message",
            ],
            rows: self
                .related
                .iter()
                .map(|a| {
                    vec![
                        a.relation.to_string(),
                        shifts.local(a.begin_ns),
                        signed_duration(a.offset_ns),
                        a.rule.clone(),
                        a.severity.clone(),
                        a.device.clone(),
                        a.message.clone(),
                    ]
                })
                .collect(),
        })
    }
}

impl Report {
    pub fn title(&self) -> String {
        format!(
            "Incident report {} – {}",
            self.shifts.local(self.from_ns),
            self.shifts.local(self.until_ns)
        )
    }

    /// The summary's figures as (label, text).
    pub fn summary_facts(&self) -> Vec<(&'static str, String)> {
        let s = &self.summary;
        let sev: Vec<String> = s
            .by_severity
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let mut f = vec![
            (
                "Incidents",
                match sev.is_empty() {
                    true => s.total.to_string(),
                    false => format!("{} ({})", s.total, sev.join(", ")),
                },
            ),
            ("Still open at the end of the range", s.open.to_string()),
            (
                "Acknowledged",
                format!(
                    "{} of {}; escalated: {}",
                    s.acknowledged, s.total, s.escalated
                ),
            ),
            (
                "MTTA (time to acknowledge)",
                spread_text(&s.mtta, "no incident was acknowledged"),
            ),
            (
                "MTTR (time to resolve)",
                spread_text(&s.mttr, "no incident resolved"),
            ),
        ];
        if self.unmatched_rows + self.skipped_rows > 0 {
            f.push((
                "Rows not shown",
                format!(
                    "{} acknowledge/escalation rows of alerts not open in the range, {} unusable rows",
                    self.unmatched_rows, self.skipped_rows
                ),
            ));
        }
        f
    }

    /// The summary's tables with their headings: top rules, top devices (when any series has
    /// a `device` tag), incidents per shift. None without incidents.
    pub fn summary_tables(&self) -> Vec<(String, Table)> {
        let s = &self.summary;
        if s.total == 0 {
            return Vec::new();
        }
        let counts = |v: &[(String, usize)]| -> Vec<Vec<String>> {
            v.iter()
                .map(|(k, n)| vec![k.clone(), n.to_string()])
                .collect()
        };
        let mut out = vec![(
            "Top recurring rules".to_string(),
            Table {
                head: &["Rule", "Incidents"],
                rows: counts(&s.top_rules),
            },
        )];
        if !s.top_devices.is_empty() {
            out.push((
                "Top devices".to_string(),
                Table {
                    head: &["Device", "Incidents"],
                    rows: counts(&s.top_devices),
                },
            ));
        }
        out.push((
            format!("Incidents per shift ({})", self.shifts.tz_name()),
            Table {
                head: &["Shift", "Incidents", "critical", "warning"],
                rows: s
                    .per_shift
                    .iter()
                    .map(|c| {
                        vec![
                            c.slot.label.clone(),
                            c.total().to_string(),
                            c.critical.to_string(),
                            c.warning.to_string(),
                        ]
                    })
                    .collect(),
            },
        ));
        out
    }

    /// `06:00–14:00: 3, 14:00–22:00: 0, ...`.
    pub fn shifts_of_day(&self) -> String {
        self.summary
            .per_shift_of_day
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_offsets() {
        assert_eq!(signed_duration(-250_000_000_000), "-4m 10s");
        assert_eq!(signed_duration(30_000_000_000), "+30s");
        assert_eq!(signed_duration(0), "0s");
        assert_eq!(seconds(90.0), "1m 30s");
        assert_eq!(spread_text(&None, "none"), "none");
    }
}
