//! Escalation: which alerts are due to go on to the next receivers.
//!
//! A receiver with `escalate_after` arms a timer for every alert it is told about; when the
//! timer runs out and nobody has acknowledged the alert, the router hands the alert to that
//! receiver's `escalate_to` (each step an `escalated` events row), whose own `escalate_after`
//! arms the next step. An acknowledgement disarms every timer of the alert; a later change of
//! severity arms them again from that moment (for receivers not yet escalated from); the
//! resolve forgets the alert. Timers run on the router's monotonic clock from the moment the
//! receiver was told, so a restart of sitewatch restarts them (documented in docs/alerting.md).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::AlertKey;
use crate::model::{Event, Severity};

/// One receiver's escalation settings, with its targets as receiver positions.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub after: Duration,
    pub targets: Vec<usize>,
}

#[derive(Debug)]
struct Tracked {
    /// The latest firing event: what the next receivers get.
    event: Event,
    acked: bool,
    /// Receivers told about the alert whose step is still to come, and when.
    armed: Vec<(usize, Instant)>,
    /// Receivers the alert has escalated from (each escalates it once).
    done: Vec<usize>,
    /// Steps taken so far.
    steps: u32,
}

/// A step that is due: hand `event` to the targets of receiver `from`.
#[derive(Debug)]
pub struct Due {
    pub key: AlertKey,
    pub event: Event,
    pub from: usize,
}

/// The alerts with escalation timers, keyed like the router's alerts.
#[derive(Debug, Default)]
pub struct Escalations {
    alerts: HashMap<AlertKey, Tracked>,
}

impl Escalations {
    /// A firing event (new alert or change of severity) was routed; `told` are the receivers
    /// that now have it.
    pub fn firing(
        &mut self,
        key: &AlertKey,
        ev: &Event,
        told: impl IntoIterator<Item = usize>,
        policies: &[Option<Policy>],
        now: Instant,
    ) {
        let t = self.alerts.entry(key.clone()).or_insert_with(|| Tracked {
            event: ev.clone(),
            acked: false,
            armed: Vec::new(),
            done: Vec::new(),
            steps: 0,
        });
        let changed: bool = t.event.severity != ev.severity;
        t.event = ev.clone();
        if t.acked && changed {
            // The acknowledgement held for the old severity only.
            t.acked = false;
        }
        if t.acked {
            return;
        }
        for r in told {
            Self::arm_one(t, r, policies, now);
        }
    }

    fn arm_one(t: &mut Tracked, r: usize, policies: &[Option<Policy>], now: Instant) {
        let Some(Some(p)) = policies.get(r) else {
            return;
        };
        if t.done.contains(&r) || t.armed.iter().any(|(a, _)| *a == r) {
            return;
        }
        t.armed.push((r, now + p.after));
    }

    /// Receivers that got the alert by escalation arm their own next step.
    pub fn escalated(
        &mut self,
        key: &AlertKey,
        to: &[usize],
        policies: &[Option<Policy>],
        now: Instant,
    ) -> u32 {
        let Some(t) = self.alerts.get_mut(key) else {
            return 0;
        };
        t.steps += 1;
        for r in to {
            Self::arm_one(t, *r, policies, now);
        }
        t.steps
    }

    pub fn acknowledged(&mut self, key: &AlertKey) {
        if let Some(t) = self.alerts.get_mut(key) {
            t.acked = true;
            t.armed.clear();
        }
    }

    pub fn resolved(&mut self, key: &AlertKey) {
        self.alerts.remove(key);
    }

    /// The steps due at `now`, each once.
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        for (key, t) in &mut self.alerts {
            if t.acked {
                continue;
            }
            let mut i = 0;
            while i < t.armed.len() {
                if t.armed[i].1 <= now {
                    let (from, _) = t.armed.swap_remove(i);
                    t.done.push(from);
                    out.push(Due {
                        key: key.clone(),
                        event: t.event.clone(),
                        from,
                    });
                } else {
                    i += 1;
                }
            }
        }
        // Oldest alerts first, so a burst escalates in a stable order.
        out.sort_by_key(|d| (d.event.started_ns, d.from));
        out
    }

    /// The severity the alert fires with, if it is tracked.
    pub fn severity(&self, key: &AlertKey) -> Option<Severity> {
        self.alerts.get(key).map(|t| t.event.severity)
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventState, FieldValue, SeriesKey, TagSet};

    fn ev(sev: Severity) -> Event {
        Event {
            labels: Vec::new(),
            annotations: Vec::new(),
            rule: "hot".into(),
            series: SeriesKey::new("env", TagSet::new([("rack", "r1")])),
            field: "t".into(),
            severity: sev,
            state: EventState::Firing,
            value: FieldValue::Float(31.0),
            threshold: Some(30.0),
            started_ns: 1,
            timestamp_ns: 2,
            message: String::new(),
        }
    }

    fn policies() -> Vec<Option<Policy>> {
        // 0 -> 1 after 10 s, 1 -> 2 after 20 s, 2 ends.
        vec![
            Some(Policy {
                after: Duration::from_secs(10),
                targets: vec![1],
            }),
            Some(Policy {
                after: Duration::from_secs(20),
                targets: vec![2],
            }),
            None,
        ]
    }

    #[test]
    fn steps_come_in_turn_and_stop_at_the_acknowledgement() {
        let p = policies();
        let e = ev(Severity::Critical);
        let key: AlertKey = (e.rule.clone(), e.series.clone());
        let t0 = Instant::now();
        let mut esc = Escalations::default();
        esc.firing(&key, &e, [0], &p, t0);
        assert!(esc.due(t0 + Duration::from_secs(9)).is_empty());
        let due = esc.due(t0 + Duration::from_secs(10));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].from, 0);
        assert!(
            esc.due(t0 + Duration::from_secs(11)).is_empty(),
            "each step once"
        );
        assert_eq!(
            esc.escalated(&key, &[1], &p, t0 + Duration::from_secs(10)),
            1
        );
        // A repeat of the same severity does not re-arm receiver 0.
        esc.firing(&key, &e, [0, 1], &p, t0 + Duration::from_secs(12));
        assert!(esc.due(t0 + Duration::from_secs(29)).is_empty());
        esc.acknowledged(&key);
        assert!(
            esc.due(t0 + Duration::from_secs(60)).is_empty(),
            "acknowledged"
        );
        // A change of severity after the acknowledgement arms what is left, from then.
        let warn = ev(Severity::Warning);
        let t1 = t0 + Duration::from_secs(100);
        esc.firing(&key, &warn, [0, 1], &p, t1);
        assert!(esc.due(t1 + Duration::from_secs(19)).is_empty());
        let due = esc.due(t1 + Duration::from_secs(20));
        assert_eq!(due.iter().map(|d| d.from).collect::<Vec<_>>(), vec![1]);
        esc.resolved(&key);
        assert!(esc.is_empty());
    }
}
