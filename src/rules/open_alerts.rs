//! What is firing now, whatever a dashboard's time range: the rules stage keeps every open
//! alert (its latest firing event) and writes it as a point of the `alerts` measurement on
//! every change and again every `[rules] alerts_every` (default 30 s). A Grafana table over
//! the last few minutes, taking the last row per alert, so lists every open alert with its
//! start, severity and silence, even one that began weeks ago; the resolve writes a last row
//! with `open = false`. The same list is published for `GET /api/v1/alerts`.
//!
//! Points of `alerts`: tags `rule`, `severity`, `state` (firing / resolved), the series' tags
//! and the rule's labels; fields `id` (the alert id of the API), `open`, `started_ns`,
//! `age_s`, `value` (or `value_text`), `threshold`, `message`, `series`, `silenced`, and one
//! string field per annotation (`runbook_url`, ...).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::model::{Event, EventState, FieldValue, Sample};

/// Default measurement of the open-alerts points.
pub const ALERTS_MEASUREMENT: &str = "alerts";
/// Default period of re-writing every open alert.
pub const DEFAULT_ALERTS_EVERY: Duration = Duration::from_secs(30);

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
}

/// The open alerts, keyed by alert id.
pub struct OpenAlerts {
    open: BTreeMap<String, Open>,
    measurement: Arc<str>,
    board: AlertBoard,
}

impl OpenAlerts {
    pub fn new(board: AlertBoard) -> Self {
        OpenAlerts {
            open: BTreeMap::new(),
            measurement: ALERTS_MEASUREMENT.into(),
            board,
        }
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
    ) -> Vec<Sample> {
        let mut rows = Vec::new();
        for (ev, silenced) in events {
            let id = ev.alert_id();
            match ev.state {
                EventState::Firing => {
                    let open = Open {
                        event: ev.clone(),
                        silenced,
                    };
                    rows.push(self.row(&id, &open, now_ns.max(ev.timestamp_ns), now_ns));
                    self.open.insert(id, open);
                }
                EventState::Resolved => {
                    let closed = self.open.remove(&id).unwrap_or(Open {
                        event: ev.clone(),
                        silenced,
                    });
                    let mut last = Open {
                        event: ev.clone(),
                        silenced: closed.silenced,
                    };
                    last.event.started_ns = closed.event.started_ns.min(ev.started_ns);
                    rows.push(self.row(&id, &last, now_ns.max(ev.timestamp_ns), now_ns));
                }
            }
        }
        if !rows.is_empty() {
            self.publish();
        }
        rows
    }

    /// Every open alert again, stamped `now_ns` (the periodic re-write).
    pub fn rewrite(&self, now_ns: i64) -> Vec<Sample> {
        self.open
            .iter()
            .map(|(id, open)| self.row(id, open, now_ns, now_ns))
            .collect()
    }

    fn publish(&self) {
        let views = self
            .open
            .iter()
            .map(|(id, o)| view(id, &o.event, o.silenced))
            .collect();
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
        ]);
        ev.add_annotations(&mut s, &[]);
        s
    }
}

fn view(id: &str, ev: &Event, silenced: bool) -> AlertView {
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
        silenced,
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
        let rows = open.apply([(&fire, false), (&other, true)], 3_000);
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
        let rows = open.apply([(&done, false)], 70_000_000_000);
        assert_eq!(rows[0].field("open"), Some(&FieldValue::Bool(false)));
        assert_eq!(rows[0].series.tags.get("state"), Some("resolved"));
        assert_eq!(open.len(), 1);
        assert_eq!(open.rewrite(80_000_000_000).len(), 1);
        let ids: Vec<String> = board.get().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![other.alert_id()]);
        assert_eq!(alert_id("hot", &other.series), other.alert_id());
    }
}
