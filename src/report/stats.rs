//! The summary at the top of a report: incidents by severity, MTTA and MTTR (mean and
//! median), the rules and devices that recur most, incidents per shift, and what is open.

use std::collections::BTreeMap;

use super::incident::Incident;
use super::shifts::{ShiftSlot, Shifts};

/// Mean and median of a set of durations, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Spread {
    pub mean_s: f64,
    pub median_s: f64,
    pub count: usize,
}

pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median_s = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        mean_s: v.iter().sum::<f64>() / n as f64,
        median_s,
        count: n,
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct ShiftCount {
    pub slot: ShiftSlot,
    pub critical: usize,
    pub warning: usize,
    pub other: usize,
}

impl ShiftCount {
    pub fn total(&self) -> usize {
        self.critical + self.warning + self.other
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub total: usize,
    /// (severity, count), critical first.
    pub by_severity: Vec<(String, usize)>,
    pub open: usize,
    pub acknowledged: usize,
    pub escalated: usize,
    /// Over the incidents with a time to acknowledge.
    pub mtta: Option<Spread>,
    /// Over the resolved incidents.
    pub mttr: Option<Spread>,
    /// (rule, incidents), most first, at most [`TOP`].
    pub top_rules: Vec<(String, usize)>,
    /// (device, incidents) by the `device` tag, most first, at most [`TOP`].
    pub top_devices: Vec<(String, usize)>,
    /// Shifts on days with incidents, in time order.
    pub per_shift: Vec<ShiftCount>,
    /// (shift of day, incidents) over the whole range, in order of the day.
    pub per_shift_of_day: Vec<(String, usize)>,
}

pub const TOP: usize = 5;

fn top(counts: BTreeMap<String, usize>) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    // Most first; ties by name, so the order does not depend on the data's order.
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(TOP);
    v
}

pub fn summarize(incidents: &[&Incident], shifts: &Shifts) -> Summary {
    let mut sev: BTreeMap<String, usize> = BTreeMap::new();
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    let mut devices: BTreeMap<String, usize> = BTreeMap::new();
    let mut slots: BTreeMap<ShiftSlot, ShiftCount> = BTreeMap::new();
    for inc in incidents {
        *sev.entry(inc.severity.clone()).or_default() += 1;
        *rules.entry(inc.rule.clone()).or_default() += 1;
        if let Some(d) = inc.tag("device") {
            *devices.entry(d.to_string()).or_default() += 1;
        }
        let slot = shifts.slot_of(inc.begin_ns());
        let c = slots.entry(slot.clone()).or_insert_with(|| ShiftCount {
            slot,
            critical: 0,
            warning: 0,
            other: 0,
        });
        match inc.severity.as_str() {
            "critical" => c.critical += 1,
            "warning" => c.warning += 1,
            _ => c.other += 1,
        }
    }
    let mut by_severity: Vec<(String, usize)> = sev.into_iter().collect();
    by_severity.sort_by_key(|(s, _)| match s.as_str() {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    });
    let per_shift: Vec<ShiftCount> = slots.into_values().collect();
    let mut of_day: Vec<(String, usize)> =
        shifts.names().into_iter().map(|n| (n, 0usize)).collect();
    for c in &per_shift {
        if let Some(e) = of_day.iter_mut().find(|(n, _)| *n == c.slot.name) {
            e.1 += c.total();
        }
    }
    let tta: Vec<f64> = incidents.iter().filter_map(|i| i.time_to_ack_s()).collect();
    let ttr: Vec<f64> = incidents
        .iter()
        .filter_map(|i| i.time_to_resolve_s())
        .collect();
    Summary {
        total: incidents.len(),
        by_severity,
        open: incidents.iter().filter(|i| i.is_open()).count(),
        acknowledged: incidents
            .iter()
            .filter(|i| i.first_ack().is_some() || i.time_to_ack_field_s.is_some())
            .count(),
        escalated: incidents.iter().filter(|i| i.escalations() > 0).count(),
        mtta: spread(&tta),
        mttr: spread(&ttr),
        top_rules: top(rules),
        top_devices: top(devices),
        per_shift,
        per_shift_of_day: of_day,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::incident::assemble;
    use crate::report::incident::tests::row;

    #[test]
    fn mean_and_median() {
        assert_eq!(spread(&[]), None);
        let s = spread(&[30.0, 10.0, 20.0, 100.0]).unwrap();
        assert_eq!((s.mean_s, s.median_s, s.count), (40.0, 25.0, 4));
        let s = spread(&[5.0, f64::NAN, 1.0, 3.0]).unwrap();
        assert_eq!((s.mean_s, s.median_s, s.count), (3.0, 3.0, 3));
    }

    #[test]
    fn summary_counts_severities_times_recurrence_and_shifts() {
        let mut rows = vec![
            row("a", "firing", "warning", 3_600),
            row("a", "resolved", "warning", 3_660),
            row("a", "firing", "warning", 7_200),
            row("a", "resolved", "warning", 7_500),
            row("b", "firing", "critical", 50_000),
        ];
        let mut ack = row("b", "acknowledged", "critical", 50_090);
        ack.time_to_ack_s = Some(90.0);
        rows.push(ack);
        let a = assemble(&rows);
        let incs: Vec<&Incident> = a.incidents.iter().collect();
        let shifts = Shifts::parse("06:00,14:00,22:00", "UTC").unwrap();
        let s = summarize(&incs, &shifts);
        assert_eq!(s.total, 3);
        assert_eq!(
            s.by_severity,
            vec![("critical".into(), 1), ("warning".into(), 2)]
        );
        assert_eq!(s.open, 1);
        assert_eq!(s.acknowledged, 1);
        assert_eq!(s.mtta.as_ref().map(|m| m.mean_s), Some(90.0));
        let mttr = s.mttr.unwrap();
        assert_eq!((mttr.mean_s, mttr.median_s, mttr.count), (180.0, 180.0, 2));
        assert_eq!(s.top_rules[0], ("rule_a".into(), 2));
        assert_eq!(s.top_devices, vec![("da".into(), 2), ("db".into(), 1)]);
        // 01:00 and 02:00 UTC on 1970-01-01 are in the night shift that began the day
        // before; 13:53 is in the early shift.
        let labels: Vec<(&str, usize)> = s
            .per_shift
            .iter()
            .map(|c| (c.slot.label.as_str(), c.total()))
            .collect();
        assert_eq!(
            labels,
            vec![("1969-12-31 22:00–06:00", 2), ("1970-01-01 06:00–14:00", 1)]
        );
        assert_eq!(
            s.per_shift_of_day,
            vec![
                ("06:00–14:00".into(), 1),
                ("14:00–22:00".into(), 0),
                ("22:00–06:00".into(), 2)
            ]
        );
    }
}
