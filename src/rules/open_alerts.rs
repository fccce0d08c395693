//! What is firing now, whatever a dashboard's time range: the rules stage keeps every open
//! alert (its latest firing event) and writes it as a point of the `alerts` measurement on
//! every change and again every `[rules] alerts_every` (default 30 s). A Grafana table over
//! the last few minutes, taking the last row per alert, so lists every open alert with its
//! start, severity and silence, even one that began weeks ago; the resolve writes a last row
//! with `open = false`. The same list is published for `GET /api/v1/alerts`.
//!
//! Points of `alerts`: tags `rule`, `severity`, `state` (firing / resolved), the series' tags
//! and the rule's labels; fields `id` (the alert id of the API), `open`, `started_ns`,
//! `age_s`, `value` (or `value_text`), `threshold`, `message`, `series`, `silenced`, `acked`
//! (with `acked_by` and `ack_comment` once acknowledged), and one string field per
//! annotation (`runbook_url`, ...).
//!
//! It is also the responders' desk: an acknowledgement is kept with its open alert until the
//! alert resolves or changes severity, and the times to acknowledge and to resolve are
//! measured here on the wall clock from the alert's first firing (responders work on wall
//! time, whatever the samples' own clocks say).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::model::{Acknowledgement, Event, EventState, FieldValue, Sample};
use crate::pipeline::Response;

/// Default measurement of the open-alerts points.
pub const ALERTS_MEASUREMENT: &str = "alerts";
/// Default period of re-writing every open alert.
pub const DEFAULT_ALERTS_EVERY: Duration = Duration::from_secs(30);

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AckError {
    #[error("no open alert has id {0:?}: it may have resolved already (GET /api/v1/alerts lists the open ones)")]
    NotFound(String),
    #[error("alert {id} is already acknowledged (by {by} at {at})")]
    Already { id: String, by: String, at: String },
}

/// One open alert as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertView {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub series: String,
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub value: String,
    pub threshold: Option<f64>,
    pub message: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub started_ns: i64,
    /// Time of the latest event (firing or change of severity).
    pub updated_ns: i64,
    pub silenced: bool,
    /// Who acknowledged it, when and why; `None` while unacknowledged.
    pub acknowledged: Option<AckView>,
}

/// An acknowledgement as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AckView {
    pub by: String,
    pub comment: String,
    /// RFC 3339, UTC.
    pub at: String,
    pub at_ns: i64,
}

/// What the desk keeps of an open alert across a restart (in the rules state file).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SavedOpen {
    pub id: String,
    pub started_ns: i64,
    pub severity: String,
    /// Wall clock of its first firing.
    pub opened_ns: i64,
    #[serde(default)]
    pub ack: Option<Acknowledgement>,
}

/// What [`OpenAlerts::apply`] made of a run of events.
#[derive(Debug, Default)]
pub struct Applied {
    /// Points of the `alerts` measurement.
    pub rows: Vec<Sample>,
    /// Per event, in order: the responders' side (set on resolves of alerts known open).
    pub responses: Vec<Option<Response>>,
}

/// A successful acknowledgement.
#[derive(Debug)]
pub struct Acked {
    /// The alert's latest firing event.
    pub event: Event,
    pub ack: Arc<Acknowledgement>,
    pub response: Response,
    /// The alert's new point of the `alerts` measurement.
    pub row: Sample,
    pub view: AlertView,
}

/// The list `GET /api/v1/alerts` serves, replaced by the rules stage on every change.
#[derive(Clone, Default)]
pub struct AlertBoard(Arc<RwLock<Vec<AlertView>>>);

/// The service's board: the rules stage writes it, the HTTP endpoint reads it (one rules
/// stage per process, like the status board).
pub fn board() -> AlertBoard {
    static BOARD: std::sync::OnceLock<AlertBoard> = std::sync::OnceLock::new();
    BOARD.get_or_init(AlertBoard::default).clone()
}

impl AlertBoard {
    pub fn get(&self) -> Vec<AlertView> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, alerts: Vec<AlertView>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = alerts;
    }
}

struct Open {
    event: Event,
    silenced: bool,
    /// Wall clock of the first firing: the start of time-to-acknowledge and -resolve.
    opened_ns: i64,
    ack: Option<Arc<Acknowledgement>>,
}

/// The open alerts, keyed by alert id.
pub struct OpenAlerts {
    open: BTreeMap<String, Open>,
    measurement: Arc<str>,
    board: AlertBoard,
    /// From the state file, taken by the alert's re-announcement after a restart.
    restored: BTreeMap<String, SavedOpen>,
}

impl OpenAlerts {
    pub fn new(board: AlertBoard) -> Self {
        OpenAlerts {
            open: BTreeMap::new(),
            measurement: ALERTS_MEASUREMENT.into(),
            board,
            restored: BTreeMap::new(),
        }
    }

    /// What a restart must keep: first-firing times and acknowledgements.
    pub fn saved(&self) -> Vec<SavedOpen> {
        self.saved_entries(|_| true)
    }

    fn saved_entries(&self, keep: impl Fn(&Open) -> bool) -> Vec<SavedOpen> {
        self.open
            .iter()
            .filter(|(_, o)| keep(o))
            .map(|(id, o)| SavedOpen {
                id: id.clone(),
                started_ns: o.event.started_ns,
                severity: o.event.severity.as_str().to_string(),
                opened_ns: o.opened_ns,
                ack: o.ack.as_deref().cloned(),
            })
            .collect()
    }

    /// Keeps saved desk entries for the alerts about to be re-announced ([`Self::apply`]
    /// takes an entry whose start and severity still match).
    pub fn restore(&mut self, saved: Vec<SavedOpen>) {
        self.restored = saved.into_iter().map(|s| (s.id.clone(), s)).collect();
    }

    /// Adds saved desk entries of alerts taken over with a cluster unit; the alerts' events
    /// ([`Self::apply`]) then take them up, as after a restart.
    pub fn take_over(&mut self, saved: Vec<SavedOpen>) {
        self.restored
            .extend(saved.into_iter().map(|s| (s.id.clone(), s)));
    }

    /// The latest event of the open alert `id`.
    pub fn event_of(&self, id: &str) -> Option<&Event> {
        self.open.get(id).map(|o| &o.event)
    }

    /// The acknowledgement of the open alert `id`, if any.
    pub fn ack_of(&self, id: &str) -> Option<Arc<Acknowledgement>> {
        self.open.get(id).and_then(|o| o.ack.clone())
    }

    /// The desk entries of the open alerts whose event `of` accepts (a cluster unit's).
    pub fn saved_where(&self, of: impl Fn(&Event) -> bool) -> Vec<SavedOpen> {
        self.saved_entries(|o| of(&o.event))
    }

    /// Removes the open alerts whose event `of` accepts (a cluster unit handed to another
    /// member): returns their desk entries and latest events. No rows: they are not closed.
    pub fn hand_over(&mut self, of: impl Fn(&Event) -> bool) -> (Vec<SavedOpen>, Vec<Event>) {
        let saved = self.saved_where(&of);
        let mut events = Vec::new();
        self.open.retain(|_, o| {
            if of(&o.event) {
                events.push(o.event.clone());
                false
            } else {
                true
            }
        });
        if !events.is_empty() {
            self.publish();
        }
        (saved, events)
    }

    /// Acknowledges the open alert `id`: escalation and repeats stop until it resolves or
    /// changes severity.
    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        comment: &str,
        now_ns: i64,
    ) -> Result<Acked, AckError> {
        let open = self
            .open
            .get_mut(id)
            .ok_or_else(|| AckError::NotFound(id.to_string()))?;
        if let Some(ack) = &open.ack {
            return Err(AckError::Already {
                id: id.to_string(),
                by: ack.by.clone(),
                at: crate::time::rfc3339_millis(ack.at_ns),
            });
        }
        let ack = Arc::new(Acknowledgement {
            by: by.to_string(),
            comment: comment.to_string(),
            at_ns: now_ns,
        });
        open.ack = Some(ack.clone());
        let response = Response {
            ack: Some(ack.clone()),
            time_to_ack_s: Some(seconds(now_ns - open.opened_ns)),
            time_to_resolve_s: None,
        };
        let event = open.event.clone();
        let open = &self.open[id];
        let row = self.row(id, open, now_ns, now_ns);
        let view = view(id, open);
        self.publish();
        Ok(Acked {
            event,
            ack,
            response,
            row,
            view,
        })
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Applies events (in order) and returns the points they change: one per event, stamped
    /// now (an alert from replayed, hours-old data is open now; a window of a few minutes
    /// must find it).
    pub fn apply<'a>(
        &mut self,
        events: impl IntoIterator<Item = (&'a Event, bool)>,
        now_ns: i64,
    ) -> Applied {
        let mut out = Applied::default();
        for (ev, silenced) in events {
            let id = ev.alert_id();
            match ev.state {
                EventState::Firing => {
                    let (opened_ns, ack) = match self.open.get(&id) {
                        // An acknowledgement holds until the severity changes.
                        Some(prev) => (
                            prev.opened_ns,
                            prev.ack
                                .clone()
                                .filter(|_| prev.event.severity == ev.severity),
                        ),
                        None => match self.restored.remove(&id) {
                            Some(saved) if saved.started_ns == ev.started_ns => (
                                saved.opened_ns,
                                saved
                                    .ack
                                    .filter(|_| saved.severity == ev.severity.as_str())
                                    .map(Arc::new),
                            ),
                            _ => (now_ns, None),
                        },
                    };
                    let open = Open {
                        event: ev.clone(),
                        silenced,
                        opened_ns,
                        ack,
                    };
                    out.rows
                        .push(self.row(&id, &open, now_ns.max(ev.timestamp_ns), now_ns));
                    out.responses.push(None);
                    self.open.insert(id, open);
                }
                EventState::Resolved => {
                    let known = self.open.remove(&id);
                    let response = known.as_ref().map(|o| Response {
                        ack: o.ack.clone(),
                        time_to_ack_s: o.ack.as_ref().map(|a| seconds(a.at_ns - o.opened_ns)),
                        time_to_resolve_s: Some(seconds(now_ns - o.opened_ns)),
                    });
                    let closed = known.unwrap_or(Open {
                        event: ev.clone(),
                        silenced,
                        opened_ns: now_ns,
                        ack: None,
                    });
                    let mut last = Open {
                        event: ev.clone(),
                        silenced: closed.silenced,
                        opened_ns: closed.opened_ns,
                        ack: closed.ack,
                    };
                    last.event.started_ns = closed.event.started_ns.min(ev.started_ns);
                    out.rows
                        .push(self.row(&id, &last, now_ns.max(ev.timestamp_ns), now_ns));
                    out.responses.push(response);
                }
            }
        }
        if !out.rows.is_empty() {
            self.publish();
        }
        out
    }

    /// The latest firing event and acknowledgement of every acknowledged open alert (told
    /// to the alert router after re-announcing alerts at start).
    pub fn acknowledged(&self) -> Vec<(Event, Arc<Acknowledgement>)> {
        self.open
            .values()
            .filter_map(|o| o.ack.clone().map(|a| (o.event.clone(), a)))
            .collect()
    }

    /// Every open alert again, stamped `now_ns` (the periodic re-write).
    pub fn rewrite(&self, now_ns: i64) -> Vec<Sample> {
        self.open
            .iter()
            .map(|(id, open)| self.row(id, open, now_ns, now_ns))
            .collect()
    }

    fn publish(&self) {
        let views = self.open.iter().map(|(id, o)| view(id, o)).collect();
        self.board.set(views);
    }

    fn row(&self, id: &str, open: &Open, ts: i64, now_ns: i64) -> Sample {
        let ev = &open.event;
        let own = [
            ("rule", ev.rule.as_ref()),
            ("severity", ev.severity.as_str()),
            ("state", ev.state.as_str()),
        ];
        let mut s = ev.point(self.measurement.clone(), &own, ts);
        s.fields.extend([
            ("id".into(), FieldValue::Str(id.into())),
            (
                "open".into(),
                FieldValue::Bool(ev.state == EventState::Firing),
            ),
            ("started_ns".into(), FieldValue::Int(ev.started_ns)),
            (
                "age_s".into(),
                FieldValue::Float((now_ns - ev.started_ns).max(0) as f64 / 1e9),
            ),
            ("silenced".into(), FieldValue::Bool(open.silenced)),
            ("acked".into(), FieldValue::Bool(open.ack.is_some())),
        ]);
        if let Some(ack) = &open.ack {
            s.fields.extend([
                ("acked_by".into(), FieldValue::Str(ack.by.as_str().into())),
                (
                    "ack_comment".into(),
                    FieldValue::Str(ack.comment.as_str().into()),
                ),
            ]);
        }
        ev.add_annotations(&mut s, &["acked_by", "ack_comment"]);
        s
    }
}

fn seconds(ns: i64) -> f64 {
    ns.max(0) as f64 / 1e9
}

fn view(id: &str, open: &Open) -> AlertView {
    let ev = &open.event;
    let pairs =
        |l: &crate::model::Labels| l.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    AlertView {
        id: id.to_string(),
        rule: ev.rule.to_string(),
        severity: ev.severity.as_str().to_string(),
        series: ev.series.to_string(),
        measurement: ev.series.measurement.to_string(),
        tags: ev
            .series
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        labels: pairs(&ev.labels),
        annotations: pairs(&ev.annotations),
        value: ev.value.to_string(),
        threshold: ev.threshold.filter(|t| t.is_finite()),
        message: ev.message.clone(),
        started_at: crate::time::rfc3339_millis(ev.started_ns),
        started_ns: ev.started_ns,
        updated_ns: ev.timestamp_ns,
        silenced: open.silenced,
        acknowledged: open.ack.as_ref().map(|a| AckView {
            by: a.by.clone(),
            comment: a.comment.clone(),
            at: crate::time::rfc3339_millis(a.at_ns),
            at_ns: a.at_ns,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{alert_id, SeriesKey, Severity, TagSet};

    fn event(rack: &str, state: EventState, sev: Severity, ts: i64) -> Event {
        Event {
            rule: "hot".into(),
            labels: vec![("team".into(), "facilities".into())],
            annotations: vec![("runbook_url".into(), "https://wiki/rb/hot".into())],
            series: SeriesKey::new("env", TagSet::new([("rack", rack)])),
            field: "t".into(),
            severity: sev,
            state,
            value: FieldValue::Float(30.0),
            threshold: Some(27.0),
            started_ns: 1_000,
            timestamp_ns: ts,
            message: format!("{rack} hot"),
        }
    }

    #[test]
    fn open_alerts_are_rewritten_until_they_resolve() {
        let board = AlertBoard::default();
        let mut open = OpenAlerts::new(board.clone());
        let fire = event("r1", EventState::Firing, Severity::Warning, 2_000);
        let other = event("r2", EventState::Firing, Severity::Critical, 2_500);
        let rows = open.apply([(&fire, false), (&other, true)], 3_000).rows;
        assert_eq!(rows.len(), 2);
        assert_eq!(&*rows[0].series.measurement, "alerts");
        assert_eq!(rows[0].series.tags.get("team"), Some("facilities"));
        assert_eq!(rows[0].series.tags.get("state"), Some("firing"));
        assert_eq!(rows[0].field("open"), Some(&FieldValue::Bool(true)));
        assert_eq!(
            rows[0].field("id"),
            Some(&FieldValue::Str(fire.alert_id().into()))
        );
        assert_eq!(
            rows[0].field("runbook_url"),
            Some(&FieldValue::Str("https://wiki/rb/hot".into()))
        );
        assert_eq!(rows[1].field("silenced"), Some(&FieldValue::Bool(true)));
        assert_eq!(board.get().len(), 2);
        assert_eq!(board.get()[0].started_at, "1970-01-01T00:00:00.000Z");

        // The periodic re-write stamps every open alert now, keeping its start.
        let again = open.rewrite(60_000_000_000);
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|s| s.timestamp_ns == 60_000_000_000));
        assert_eq!(again[0].field("started_ns"), Some(&FieldValue::Int(1_000)));
        let age = again[0]
            .field("age_s")
            .and_then(FieldValue::as_f64)
            .unwrap();
        assert!((age - 59.999_999).abs() < 1e-9, "{age}");

        // The resolve writes a last row with open = false and leaves the list.
        let done = event(
            "r1",
            EventState::Resolved,
            Severity::Warning,
            70_000_000_000,
        );
        let rows = open.apply([(&done, false)], 70_000_000_000).rows;
        assert_eq!(rows[0].field("open"), Some(&FieldValue::Bool(false)));
        assert_eq!(rows[0].series.tags.get("state"), Some("resolved"));
        assert_eq!(open.len(), 1);
        assert_eq!(open.rewrite(80_000_000_000).len(), 1);
        let ids: Vec<String> = board.get().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![other.alert_id()]);
        assert_eq!(alert_id("hot", &other.series), other.alert_id());
    }

    #[test]
    fn an_ack_holds_until_the_severity_changes_and_survives_a_restart() {
        let mut open = OpenAlerts::new(AlertBoard::default());
        let fire = event("r1", EventState::Firing, Severity::Warning, 2_000);
        let id = fire.alert_id();
        open.apply([(&fire, false)], 10_000_000_000);
        assert!(matches!(
            open.acknowledge("0000000000000000", "alice", "", 1),
            Err(AckError::NotFound(_))
        ));
        let acked = open
            .acknowledge(&id, "alice", "on it", 25_000_000_000)
            .unwrap();
        assert_eq!(acked.response.time_to_ack_s, Some(15.0));
        assert_eq!(acked.row.field("acked"), Some(&FieldValue::Bool(true)));
        assert_eq!(
            acked.row.field("acked_by"),
            Some(&FieldValue::Str("alice".into()))
        );
        assert_eq!(acked.view.acknowledged.as_ref().unwrap().by, "alice");
        assert!(matches!(
            open.acknowledge(&id, "bob", "", 26_000_000_000),
            Err(AckError::Already { .. })
        ));

        // Across a restart: the first-firing time and the ack come back with the alert.
        let saved = open.saved();
        let mut again = OpenAlerts::new(AlertBoard::default());
        again.restore(saved);
        again.apply([(&fire, false)], 90_000_000_000);
        assert_eq!(again.acknowledged().len(), 1);
        let done = event("r1", EventState::Resolved, Severity::Warning, 3_000);
        let applied = again.apply([(&done, false)], 100_000_000_000);
        let r = applied.responses[0].clone().unwrap();
        assert_eq!(r.time_to_ack_s, Some(15.0));
        assert_eq!(r.time_to_resolve_s, Some(90.0));
        assert_eq!(r.ack.unwrap().by, "alice");

        // A change of severity ends the ack: it is a new situation to take.
        let critical = event("r1", EventState::Firing, Severity::Critical, 2_500);
        open.apply([(&critical, false)], 30_000_000_000);
        assert!(open.acknowledged().is_empty());
        assert!(open.acknowledge(&id, "bob", "", 31_000_000_000).is_ok());
    }
}
