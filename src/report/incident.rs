//! Incidents from events rows: one incident per alert id from its firing to its resolve
//! (or open at the end of the range), with the timeline of what happened in between.

use std::collections::{BTreeMap, HashMap};

use super::history::{EventRow, RowState};

#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// First breaching sample (before a rule's `for` had elapsed).
    Breach,
    Firing,
    SeverityChange {
        from: String,
    },
    Acknowledged {
        by: Option<String>,
        comment: Option<String>,
    },
    Escalated {
        step: Option<i64>,
        receivers: Option<String>,
    },
    Resolved,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub time_ns: i64,
    pub kind: StepKind,
    /// Severity in force after the step.
    pub severity: String,
    pub message: String,
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: String,
    pub rule: String,
    /// The highest severity it reached.
    pub severity: String,
    pub series: String,
    pub source_measurement: String,
    pub field: String,
    pub tags: BTreeMap<String, String>,
    pub message: String,
    pub started_ns: i64,
    /// None for a resolve whose firing is not in the history read (an orphan resolve).
    pub firing_ns: Option<i64>,
    pub resolved_ns: Option<i64>,
    pub steps: Vec<Step>,
    /// (severity, threshold) pairs seen on its rows, in order of appearance.
    pub thresholds: Vec<(String, f64)>,
    /// From the resolve row (or the ack row) when written, else None.
    pub time_to_ack_field_s: Option<f64>,
    pub time_to_resolve_field_s: Option<f64>,
    pub silenced: bool,
}

impl Incident {
    fn new(row: &EventRow) -> Incident {
        Incident {
            id: row.id.clone(),
            rule: row.rule.clone(),
            severity: row.severity.clone(),
            series: row.series.clone(),
            source_measurement: row.source_measurement.clone(),
            field: row.field.clone(),
            tags: row.tags.clone(),
            message: row.message.clone(),
            started_ns: row.started_ns.unwrap_or(row.time_ns).min(row.time_ns),
            firing_ns: None,
            resolved_ns: None,
            steps: Vec::new(),
            thresholds: Vec::new(),
            time_to_ack_field_s: None,
            time_to_resolve_field_s: None,
            silenced: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.resolved_ns.is_none()
    }

    /// When it began for the report: its firing, else (orphan resolve) its breach.
    pub fn begin_ns(&self) -> i64 {
        self.firing_ns.unwrap_or(self.started_ns)
    }

    pub fn tag(&self, k: &str) -> Option<&str> {
        self.tags.get(k).map(String::as_str)
    }

    pub fn first_ack(&self) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| matches!(s.kind, StepKind::Acknowledged { .. }))
    }

    pub fn escalations(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.kind, StepKind::Escalated { .. }))
            .count()
    }

    /// Time to acknowledge: the `time_to_ack_s` field when written (the rules stage's wall
    /// clock), else first ack - firing.
    pub fn time_to_ack_s(&self) -> Option<f64> {
        self.time_to_ack_field_s.or_else(|| {
            let ack = self.first_ack()?.time_ns;
            Some((ack - self.firing_ns?).max(0) as f64 / 1e9)
        })
    }

    /// Time to resolve: the `time_to_resolve_s` field when written, else resolve - firing.
    pub fn time_to_resolve_s(&self) -> Option<f64> {
        self.time_to_resolve_field_s
            .or_else(|| Some((self.resolved_ns? - self.firing_ns?).max(0) as f64 / 1e9))
    }

    fn note_threshold(&mut self, row: &EventRow) {
        if let Some(t) = row.threshold {
            let pair = (row.severity.clone(), t);
            if !self.thresholds.contains(&pair) {
                self.thresholds.push(pair);
            }
        }
    }

    fn push(&mut self, row: &EventRow, kind: StepKind) {
        self.silenced |= row.silenced;
        self.note_threshold(row);
        self.steps.push(Step {
            time_ns: row.time_ns,
            kind,
            severity: row.severity.clone(),
            message: row.message.clone(),
            value: row.value.clone(),
        });
    }
}

fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// What the rows made.
#[derive(Debug, Default, PartialEq)]
pub struct Assembly {
    /// In order of their beginning.
    pub incidents: Vec<Incident>,
    /// Acknowledge/escalate rows of an alert that was not open (its firing is before the
    /// range), and rows with an unknown state: counted, not shown.
    pub unmatched_rows: usize,
}

/// Builds incidents from rows of any order (sorted here by time; at equal times a firing
/// comes before an ack, an escalation and a resolve).
pub fn assemble(rows: &[EventRow]) -> Assembly {
    let mut order: Vec<&EventRow> = rows.iter().collect();
    order.sort_by(|a, b| (a.time_ns, &a.state).cmp(&(b.time_ns, &b.state)));
    let mut out = Assembly::default();
    let mut open: HashMap<&str, usize> = HashMap::new();
    for row in order {
        let current = open.get(row.id.as_str()).copied();
        match (&row.state, current) {
            (RowState::Firing, None) => {
                let mut inc = Incident::new(row);
                if inc.started_ns < row.time_ns {
                    inc.push(row, StepKind::Breach);
                    inc.steps[0].time_ns = inc.started_ns;
                }
                inc.firing_ns = Some(row.time_ns);
                inc.push(row, StepKind::Firing);
                open.insert(&row.id, out.incidents.len());
                out.incidents.push(inc);
            }
            (RowState::Firing, Some(i)) => {
                let inc = &mut out.incidents[i];
                let from = inc
                    .steps
                    .last()
                    .map(|s| s.severity.clone())
                    .unwrap_or_default();
                // A firing row at the same severity is a re-announcement: nothing changed.
                if from != row.severity {
                    if rank(&row.severity) > rank(&inc.severity) {
                        inc.severity = row.severity.clone();
                    }
                    inc.push(row, StepKind::SeverityChange { from });
                } else {
                    inc.note_threshold(row);
                }
            }
            (RowState::Acknowledged, Some(i)) => {
                let inc = &mut out.incidents[i];
                if inc.time_to_ack_field_s.is_none() {
                    inc.time_to_ack_field_s = row.time_to_ack_s;
                }
                inc.push(
                    row,
                    StepKind::Acknowledged {
                        by: row.acked_by.clone(),
                        comment: row.comment.clone(),
                    },
                );
            }
            (RowState::Escalated, Some(i)) => out.incidents[i].push(
                row,
                StepKind::Escalated {
                    step: row.step,
                    receivers: row.receivers.clone(),
                },
            ),
            (RowState::Resolved, Some(i)) => {
                open.remove(row.id.as_str());
                let inc = &mut out.incidents[i];
                close(inc, row);
            }
            (RowState::Resolved, None) => {
                // Its firing is before the history read: an incident with a known breach
                // (started_ns) and end, but no firing time.
                let mut inc = Incident::new(row);
                inc.push(row, StepKind::Breach);
                inc.steps[0].time_ns = inc.started_ns;
                close(&mut inc, row);
                out.incidents.push(inc);
            }
            (RowState::Acknowledged | RowState::Escalated | RowState::Other(_), _) => {
                out.unmatched_rows += 1;
            }
        }
    }
    out.incidents.sort_by_key(Incident::begin_ns);
    out
}

fn close(inc: &mut Incident, row: &EventRow) {
    inc.resolved_ns = Some(row.time_ns);
    if row.time_to_ack_s.is_some() {
        inc.time_to_ack_field_s = row.time_to_ack_s;
    }
    inc.time_to_resolve_field_s = row.time_to_resolve_s;
    inc.push(row, StepKind::Resolved);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(id: &str, state: &str, severity: &str, t_s: i64) -> EventRow {
        EventRow {
            time_ns: t_s * 1_000_000_000,
            state: RowState::parse(state),
            rule: format!("rule_{id}"),
            severity: severity.to_string(),
            id: id.to_string(),
            series: format!("env,device=d{id},site=s1"),
            source_measurement: "env".into(),
            field: "t".into(),
            tags: [("device", format!("d{id}")), ("site", "s1".into())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            message: format!("{id} {state}"),
            started_ns: None,
            value: Some("30".into()),
            threshold: Some(if severity == "critical" { 32.0 } else { 27.0 }),
            time_to_resolve_s: None,
            time_to_ack_s: None,
            acked_by: None,
            comment: None,
            step: None,
            receivers: None,
            silenced: false,
        }
    }

    #[test]
    fn a_full_lifecycle_becomes_one_incident_with_its_timeline() {
        let mut firing = row("a", "firing", "warning", 100);
        firing.started_ns = Some(40_000_000_000);
        let crit = row("a", "firing", "critical", 160);
        let again = row("a", "firing", "critical", 170);
        let mut ack = row("a", "acknowledged", "critical", 200);
        ack.acked_by = Some("ana".into());
        ack.comment = Some("on it".into());
        let mut esc = row("a", "escalated", "critical", 190);
        esc.step = Some(1);
        esc.receivers = Some("oncall-2".into());
        let mut resolved = row("a", "resolved", "critical", 400);
        resolved.time_to_resolve_s = Some(301.0);
        // Shuffled: assembly sorts by time.
        let a = assemble(&[resolved, ack, firing, esc, again, crit]);
        assert_eq!(a.unmatched_rows, 0);
        assert_eq!(a.incidents.len(), 1);
        let inc = &a.incidents[0];
        let kinds: Vec<&StepKind> = inc.steps.iter().map(|s| &s.kind).collect();
        assert_eq!(
            kinds,
            vec![
                &StepKind::Breach,
                &StepKind::Firing,
                &StepKind::SeverityChange {
                    from: "warning".into()
                },
                &StepKind::Escalated {
                    step: Some(1),
                    receivers: Some("oncall-2".into())
                },
                &StepKind::Acknowledged {
                    by: Some("ana".into()),
                    comment: Some("on it".into())
                },
                &StepKind::Resolved,
            ]
        );
        assert_eq!(inc.steps[0].time_ns, 40_000_000_000);
        assert_eq!(inc.severity, "critical");
        assert_eq!(inc.firing_ns, Some(100_000_000_000));
        assert_eq!(inc.escalations(), 1);
        // No time_to_ack_s field: ack - firing. time_to_resolve_s written: that wins.
        assert_eq!(inc.time_to_ack_s(), Some(100.0));
        assert_eq!(inc.time_to_resolve_s(), Some(301.0));
        assert_eq!(
            inc.thresholds,
            vec![("warning".into(), 27.0), ("critical".into(), 32.0)]
        );
    }

    #[test]
    fn open_orphan_and_repeated_incidents() {
        let rows = vec![
            // b resolves without its firing in the rows read.
            {
                let mut r = row("b", "resolved", "warning", 50);
                r.started_ns = Some(10_000_000_000);
                r.time_to_ack_s = Some(7.0);
                r
            },
            // an ack of an alert that is not open: counted, not shown.
            row("c", "acknowledged", "warning", 55),
            row("a", "firing", "warning", 60),
            row("a", "resolved", "warning", 70),
            row("a", "firing", "warning", 80),
            row("x", "weird", "warning", 81),
        ];
        let a = assemble(&rows);
        assert_eq!(a.unmatched_rows, 2);
        assert_eq!(a.incidents.len(), 3);
        let b = &a.incidents[0];
        assert_eq!(b.id, "b");
        assert_eq!(b.firing_ns, None);
        assert_eq!(b.begin_ns(), 10_000_000_000);
        assert_eq!(b.time_to_resolve_s(), None);
        assert_eq!(b.time_to_ack_s(), Some(7.0));
        assert!(!b.is_open());
        let (first, second) = (&a.incidents[1], &a.incidents[2]);
        assert_eq!(first.time_to_resolve_s(), Some(10.0));
        assert_eq!(first.time_to_ack_s(), None);
        assert!(second.is_open());
        assert_eq!(second.time_to_resolve_s(), None);
    }

    proptest::proptest! {
        /// Whatever rows InfluxDB holds (hand-written, foreign, out of order): no panic, and
        /// every incident's steps are in time order with its firing inside.
        #[test]
        fn arbitrary_rows_never_panic(
            specs in proptest::collection::vec(
                (0u8..3, 0u8..6, 0u8..3, -5i64..50, proptest::option::of(-100i64..100),
                 proptest::option::of(-1e12f64..1e12)),
                0..40),
        ) {
            let states = ["firing", "resolved", "acknowledged", "escalated", "x", ""];
            let sevs = ["warning", "critical", ""];
            let rows: Vec<EventRow> = specs
                .iter()
                .map(|(id, st, sev, t, started, tta)| {
                    let mut r = row(&id.to_string(), states[*st as usize], sevs[*sev as usize], *t);
                    r.started_ns = started.map(|s| s * 1_000_000_000);
                    r.time_to_ack_s = *tta;
                    r.time_to_resolve_s = *tta;
                    r
                })
                .collect();
            let a = assemble(&rows);
            for inc in &a.incidents {
                let _ = (inc.time_to_ack_s(), inc.time_to_resolve_s(), inc.begin_ns());
                proptest::prop_assert!(!inc.steps.is_empty());
                for w in inc.steps.windows(2) {
                    proptest::prop_assert!(w[0].time_ns <= w[1].time_ns);
                }
            }
        }
    }
}
