//! How a rule event is stored in InfluxDB: a point of the events measurement (Grafana
//! annotations and history). Other sinks shape events their own way.

use crate::model::{FieldValue, Sample};
use crate::pipeline::{Action, EventRecord};

/// Default name of the InfluxDB measurement events are written to.
pub const EVENTS_MEASUREMENT: &str = "events";

/// The record as a point for the events measurement: tags `rule`, `severity`, `state`
/// (`firing`, `resolved`, `acknowledged`, `escalated`) plus the series' own tags (so Grafana
/// can filter annotations by site or device) and the rule's `labels` (team, service: few
/// values, good for grouping), fields `id` (the alert id of the API), `started_ns`, `value`,
/// `threshold`, `message`, `series`, `duration_s`, one per rule annotation (`runbook_url`
/// ...: free text, so fields, not tags) and `silenced = true` when a silence held back its
/// notification. The responders' side: `acked_by`, `comment` and `time_to_ack_s` once
/// acknowledged, `time_to_resolve_s` on the resolve, `step` and `receivers` on an
/// escalation (docs/alerting.md has the whole schema).
pub fn event_sample(record: &EventRecord, measurement: &str) -> Sample {
    let ev = &record.event;
    let own = [
        ("rule", ev.rule.as_ref()),
        ("severity", ev.severity.as_str()),
        ("state", record.action.state_name(ev)),
        ("source_measurement", ev.series.measurement.as_ref()),
        ("field", ev.field.as_ref()),
    ];
    let mut sample = ev.point(measurement, &own, ev.timestamp_ns);
    let duration_s = (ev.timestamp_ns - ev.started_ns).max(0) as f64 / 1e9;
    sample.fields.extend([
        ("duration_s".into(), FieldValue::Float(duration_s)),
        ("id".into(), FieldValue::Str(ev.alert_id().into())),
        ("started_ns".into(), FieldValue::Int(ev.started_ns)),
    ]);
    if let Some(r) = &record.response {
        if let Some(ack) = &r.ack {
            sample
                .fields
                .push(("acked_by".into(), FieldValue::Str(ack.by.as_str().into())));
            if record.action == Action::Acknowledged {
                sample.fields.push((
                    "comment".into(),
                    FieldValue::Str(ack.comment.as_str().into()),
                ));
            }
        }
        for (name, v) in [
            ("time_to_ack_s", r.time_to_ack_s),
            ("time_to_resolve_s", r.time_to_resolve_s),
        ] {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                sample.fields.push((name.into(), FieldValue::Float(v)));
            }
        }
    }
    if let Action::Escalated { step, receivers } = &record.action {
        sample.fields.extend([
            ("step".into(), FieldValue::Int(i64::from(*step))),
            (
                "receivers".into(),
                FieldValue::Str(receivers.join(",").into()),
            ),
        ]);
    }
    // `silenced` is a boolean on the points that have it; the responders' fields are
    // absent on some points.
    ev.add_annotations(&mut sample, &RESERVED_FIELDS);
    if record.silenced {
        sample
            .fields
            .push(("silenced".into(), FieldValue::Bool(true)));
    }
    sample
}

/// Fields some events points carry with their own type: an annotation never takes the name.
const RESERVED_FIELDS: [&str; 8] = [
    "silenced",
    "acked_by",
    "comment",
    "time_to_ack_s",
    "time_to_resolve_s",
    "step",
    "receivers",
    "started_ns",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, EventState, SeriesKey, Severity, TagSet};

    #[test]
    fn event_sample_carries_series_tags_and_identity() {
        let ev = s_event();
        let s = event_sample(&EventRecord::change(ev, false), EVENTS_MEASUREMENT);
        assert_eq!(&*s.series.measurement, "events");
        assert_eq!(s.series.tags.get("rack"), Some("r1"));
        assert_eq!(s.series.tags.get("severity"), Some("critical"));
        assert_eq!(s.series.tags.get("state"), Some("firing"));
        assert_eq!(s.field("value"), Some(&FieldValue::Float(33.5)));
        assert_eq!(s.field("threshold"), Some(&FieldValue::Float(32.0)));
        assert_eq!(s.field("duration_s"), Some(&FieldValue::Float(2.0)));
        assert_eq!(s.timestamp_ns, 3_000_000_000);

        // Rule labels become tags (a label named like an identity tag loses), annotations
        // fields (one named like a built-in field is left out).
        let mut ev = Event {
            labels: vec![
                ("team".into(), "facilities".into()),
                ("state".into(), "x".into()),
            ],
            annotations: vec![
                ("runbook_url".into(), "https://wiki/rb".into()),
                ("message".into(), "not this".into()),
            ],
            ..s_event()
        };
        ev.message = "hot".into();
        let s = event_sample(&EventRecord::change(ev, false), EVENTS_MEASUREMENT);
        assert_eq!(s.series.tags.get("team"), Some("facilities"));
        assert_eq!(s.series.tags.get("state"), Some("firing"));
        assert_eq!(
            s.field("runbook_url"),
            Some(&FieldValue::Str("https://wiki/rb".into()))
        );
        assert_eq!(s.field("message"), Some(&FieldValue::Str("hot".into())));
    }

    fn s_event() -> Event {
        Event {
            labels: Vec::new(),
            annotations: Vec::new(),
            rule: "rack_hot".into(),
            series: SeriesKey::new("environment", TagSet::new([("rack", "r1")])),
            field: "temperature".into(),
            severity: Severity::Critical,
            state: EventState::Firing,
            value: FieldValue::Float(33.5),
            threshold: Some(32.0),
            started_ns: 1_000_000_000,
            timestamp_ns: 3_000_000_000,
            message: "hot".into(),
        }
    }
}
