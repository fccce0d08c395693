//! Samples and rule events to remote-write points, and points to a [`WriteRequest`].
//!
//! # Samples
//!
//! One point per numeric field: metric name `<measurement>_<field>` (or `<field>` with a
//! `measurement` label, see [`MetricNaming`]), sanitized to `[a-zA-Z_:][a-zA-Z0-9_:]*`; each
//! tag becomes a label, its name sanitized to `[a-zA-Z_][a-zA-Z0-9_]*` (every other character
//! becomes `_`, a leading digit gets a `_` in front, and a name starting with `__`, which
//! Prometheus reserves, gets `tag` in front: `__name__` → `tag__name__`). Two tags that
//! sanitize to the same name keep the value of the one whose original name sorts last.
//! Floats, integers (as `f64`; beyond 2^53 they round) and booleans (0/1) are sent; strings
//! cannot be and are counted in `sitewatch_remote_write_samples_total{result="skipped_string"}`.
//! Timestamps go from nanoseconds to milliseconds (floor). The config's `labels` are added
//! unless the series has a tag of that name (Prometheus' `external_labels` rule).
//!
//! Labels are sorted by name in byte order and unique, as the spec requires. `__name__`
//! is first unless a tag name starts with an upper-case letter (`A`–`Z` sort before `_`).
//!
//! # Rule events
//!
//! An [`EventRecord`] becomes a point of `sitewatch_alert{rule, severity, measurement,
//! field, <the series' tags>}`: 1 when it fires at that severity, 0 when it resolves or moves
//! to another severity (a severity change writes 0 to the old severity's series and 1 to the
//! new one, at the same timestamp), so `sitewatch_alert == 1` (over a look-back long enough to
//! reach the last change, e.g. `last_over_time(sitewatch_alert[1d]) == 1`) lists what is
//! firing now. There is deliberately no `state` label: with one the firing and the resolved
//! points would be two series and the firing one would stay at 1 forever. `silenced` is not a
//! label for the same reason. The rule's `labels` replace series tags of the same name, and
//! the event's own labels win over both.
//! The message, threshold and value are not sent (they are not numbers of this series); they
//! are in InfluxDB's `events` measurement and in the notifications.
//!
//! Points are written when the state changes, like the InfluxDB `events` measurement, not
//! repeated on every evaluation as Prometheus' `ALERTS` is. Which severity an alert is firing
//! at is remembered in memory while it fires, to write the 0 of a severity change; after a
//! restart a de-escalation of an alert that was firing before it leaves the old severity's
//! last point at 1 (the resolve then writes 0 only to the severity that resolved).

use std::collections::{BTreeMap, HashMap};

use crate::model::{EventState, FieldValue, Sample, Severity};
use crate::pipeline::{Action, EventRecord};

use super::config::MetricNaming;
use super::proto::{self, Label, TimeSeries, WriteRequest};

/// The metric rule events are written to.
pub const ALERT_METRIC: &str = "sitewatch_alert";
pub const NAME_LABEL: &str = "__name__";

/// One remote-write sample with its complete, sorted label set (`__name__` included).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub labels: Vec<Label>,
    pub value: f64,
    pub timestamp_ms: i64,
}

/// What [`Encoder::encode_sample`] left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    pub strings: usize,
}

/// A metric name from any text: `[a-zA-Z_:][a-zA-Z0-9_:]*`, never empty.
pub fn sanitize_metric_name(raw: &str) -> String {
    sanitize(raw, true)
}

/// A label name from any text: `[a-zA-Z_][a-zA-Z0-9_]*`, never empty, never starting with
/// the reserved `__`.
pub fn sanitize_label_name(raw: &str) -> String {
    let s = sanitize(raw, false);
    if s.starts_with("__") {
        format!("tag{s}")
    } else {
        s
    }
}

fn sanitize(raw: &str, colon: bool) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    for c in raw.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
        out.push(if ok { c } else { '_' });
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn ns_to_ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

/// Identity of a firing alert: everything in its labels but the severity.
type AlertKey = Vec<Label>;

/// Turns samples and events into points; remembers the severity of firing alerts.
pub struct Encoder {
    naming: MetricNaming,
    /// Sanitized config labels, the lowest-priority layer of every label set.
    extra: BTreeMap<String, String>,
    firing: HashMap<AlertKey, Severity>,
}

impl Encoder {
    /// `extra` are the config's `labels` (validated names).
    pub fn new(naming: MetricNaming, extra: &BTreeMap<String, String>) -> Encoder {
        Encoder {
            naming,
            extra: extra
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (sanitize_label_name(k), v.clone()))
                .collect(),
            firing: HashMap::new(),
        }
    }

    /// Layers the label sets: config labels, then `tags` (sanitized), then `own` (already
    /// valid names, win every clash). Empty values mean "no label" and are left out.
    fn base_labels<'a>(
        &self,
        tags: impl Iterator<Item = (&'a str, &'a str)>,
        own: &[(&str, &str)],
    ) -> BTreeMap<String, String> {
        let mut labels = self.extra.clone();
        for (k, v) in tags {
            if !v.is_empty() {
                labels.insert(sanitize_label_name(k), v.to_string());
            }
        }
        for (k, v) in own {
            if !v.is_empty() {
                labels.insert((*k).to_string(), (*v).to_string());
            }
        }
        labels
    }

    /// Appends one point per numeric field of `sample` to `out`. The rules stage's
    /// open-alert points (the `alerts` measurement, for InfluxDB tables of what is firing
    /// now) are left out: here alerts are `sitewatch_alert` points, written from the events.
    pub fn encode_sample(&self, sample: &Sample, out: &mut Vec<Point>) -> Skipped {
        let measurement = sample.series.measurement.as_ref();
        if measurement == crate::rules::open_alerts::ALERTS_MEASUREMENT {
            return Skipped::default();
        }
        let own: &[(&str, &str)] = match self.naming {
            MetricNaming::MeasurementField => &[],
            MetricNaming::Field => &[("measurement", measurement)],
        };
        let base = self.base_labels(sample.series.tags.iter(), own);
        let timestamp_ms = ns_to_ms(sample.timestamp_ns);
        let mut skipped = Skipped::default();
        for (field, value) in &sample.fields {
            let value = match value {
                FieldValue::Float(v) => *v,
                FieldValue::Int(v) => *v as f64,
                FieldValue::UInt(v) => *v as f64,
                FieldValue::Bool(v) => f64::from(u8::from(*v)),
                FieldValue::Str(_) => {
                    skipped.strings += 1;
                    continue;
                }
            };
            let name = match self.naming {
                MetricNaming::MeasurementField => {
                    sanitize_metric_name(&format!("{measurement}_{field}"))
                }
                MetricNaming::Field => sanitize_metric_name(field),
            };
            out.push(Point {
                labels: with_name(&base, name),
                value,
                timestamp_ms,
            });
        }
        skipped
    }

    /// Appends the points of `records` (see the module docs) to `out`.
    pub fn encode_events(&mut self, records: &[EventRecord], out: &mut Vec<Point>) {
        for record in records {
            // Acknowledgements and escalations do not change what fires: sitewatch_alert
            // follows the rule's changes only.
            if record.action != Action::Change {
                continue;
            }
            let e = &record.event;
            // Rule labels (team, service) after the series tags, which they replace, as
            // Prometheus rule labels do; the identity labels win over both.
            let identity = self.base_labels(
                e.series
                    .tags
                    .iter()
                    .chain(e.labels.iter().map(|(k, v)| (&**k, v.as_str()))),
                &[
                    ("rule", e.rule.as_ref()),
                    ("measurement", e.series.measurement.as_ref()),
                    ("field", e.field.as_ref()),
                ],
            );
            let key: AlertKey = identity
                .iter()
                .map(|(k, v)| Label::new(k.clone(), v.clone()))
                .collect();
            let timestamp_ms = ns_to_ms(e.timestamp_ns);
            let mut point = |severity: Severity, value: f64| {
                let mut labels = identity.clone();
                labels.insert("severity".into(), severity.as_str().into());
                out.push(Point {
                    labels: with_name(&labels, ALERT_METRIC.into()),
                    value,
                    timestamp_ms,
                });
            };
            match e.state {
                EventState::Firing => {
                    if let Some(before) = self.firing.insert(key, e.severity) {
                        if before != e.severity {
                            point(before, 0.0);
                        }
                    }
                    point(e.severity, 1.0);
                }
                EventState::Resolved => {
                    if let Some(before) = self.firing.remove(&key) {
                        if before != e.severity {
                            point(before, 0.0);
                        }
                    }
                    point(e.severity, 0.0);
                }
            }
        }
    }

    /// Alerts currently remembered as firing (for tests and the gauge).
    pub fn firing_alerts(&self) -> usize {
        self.firing.len()
    }
}

/// The sorted label list of `labels` plus `__name__`.
fn with_name(labels: &BTreeMap<String, String>, name: String) -> Vec<Label> {
    let mut out: Vec<Label> = Vec::with_capacity(labels.len() + 1);
    let mut name = Some(name);
    for (k, v) in labels {
        if k.as_str() > NAME_LABEL {
            if let Some(n) = name.take() {
                out.push(Label::new(NAME_LABEL, n));
            }
        }
        out.push(Label::new(k.clone(), v.clone()));
    }
    if let Some(n) = name {
        out.push(Label::new(NAME_LABEL, n));
    }
    out
}

/// Groups `points` into series (one per label set, in first-seen order) with samples in
/// timestamp order. Two points of one series at the same millisecond keep the later one,
/// since receivers such as Prometheus reject a duplicate timestamp with another value.
pub fn write_request<'a>(points: impl IntoIterator<Item = &'a Point>) -> WriteRequest {
    let mut index: HashMap<&'a [Label], usize> = HashMap::new();
    let mut series: Vec<TimeSeries> = Vec::new();
    for p in points {
        let i = *index.entry(p.labels.as_slice()).or_insert_with(|| {
            series.push(TimeSeries {
                labels: p.labels.clone(),
                samples: Vec::new(),
            });
            series.len() - 1
        });
        series[i].samples.push(proto::Sample {
            value: p.value,
            timestamp: p.timestamp_ms,
        });
    }
    for s in &mut series {
        // Stable: among equal timestamps the arrival order is kept, so the last one wins.
        s.samples.sort_by_key(|x| x.timestamp);
        let mut kept: Vec<proto::Sample> = Vec::with_capacity(s.samples.len());
        for x in s.samples.drain(..) {
            match kept.last_mut() {
                Some(last) if last.timestamp == x.timestamp => *last = x,
                _ => kept.push(x),
            }
        }
        s.samples = kept;
    }
    WriteRequest { timeseries: series }
}

/// The HTTP body: the protobuf encoding, snappy-compressed in the block ("raw") format the
/// spec requires (not the framed/stream format).
pub fn body(req: &WriteRequest) -> Vec<u8> {
    use prost::Message as _;
    let raw = req.encode_to_vec();
    // Only fails for inputs beyond snappy's ~4 GiB limit, far past any batch_size.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_else(|e| panic!("snappy cannot compress {} bytes: {e}", raw.len()))
}

#[cfg(test)]
mod tests {
    use super::super::config::is_valid_label_name;
    use super::*;
    use crate::model::{Event, SeriesKey, TagSet};
    use proptest::prelude::*;
    use prost::Message as _;
    use std::sync::Arc;

    fn is_valid_metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn labels(p: &Point) -> Vec<(&str, &str)> {
        p.labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect()
    }

    fn encoder() -> Encoder {
        Encoder::new(MetricNaming::MeasurementField, &BTreeMap::new())
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(
            sanitize_metric_name("ups_battery.charge"),
            "ups_battery_charge"
        );
        assert_eq!(sanitize_metric_name("1wire:temp"), "_1wire:temp");
        assert_eq!(sanitize_metric_name(""), "_");
        assert_eq!(sanitize_metric_name("température"), "temp_rature");
        assert_eq!(sanitize_label_name("rack-id"), "rack_id");
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name("9"), "_9");
        assert_eq!(sanitize_label_name("__name__"), "tag__name__");
        assert_eq!(sanitize_label_name("_"), "_");
    }

    #[test]
    fn a_sample_becomes_one_point_per_numeric_field() {
        let s = Sample::new(
            SeriesKey::new(
                "ups",
                TagSet::new([("site", "dc1"), ("rack-id", "r7"), ("Zone", "A")]),
            ),
            1_700_000_000_123_456_789,
        )
        .with_field("charge", FieldValue::Float(97.5))
        .with_field("runtime_s", FieldValue::Int(-3))
        .with_field("count", FieldValue::UInt(u64::MAX))
        .with_field("on_battery", FieldValue::Bool(true))
        .with_field("status", FieldValue::Str("online".into()));
        let mut out = Vec::new();
        let skipped = encoder().encode_sample(&s, &mut out);
        assert_eq!(skipped.strings, 1);
        assert_eq!(out.len(), 4);
        assert_eq!(
            labels(&out[0]),
            vec![
                ("Zone", "A"),
                ("__name__", "ups_charge"),
                ("rack_id", "r7"),
                ("site", "dc1")
            ]
        );
        assert_eq!(out[0].value, 97.5);
        assert_eq!(out[0].timestamp_ms, 1_700_000_000_123);
        assert_eq!(out[1].value, -3.0);
        assert_eq!(out[2].value, u64::MAX as f64);
        assert_eq!(labels(&out[3])[1], ("__name__", "ups_on_battery"));
        assert_eq!(out[3].value, 1.0);
        // Before the epoch, milliseconds are floored, not truncated toward zero.
        let mut out = Vec::new();
        encoder().encode_sample(
            &Sample::new(SeriesKey::new("m", TagSet::empty()), -1)
                .with_field("v", FieldValue::Bool(false)),
            &mut out,
        );
        assert_eq!((out[0].timestamp_ms, out[0].value), (-1, 0.0));
    }

    #[test]
    fn config_labels_yield_to_tags_and_field_naming_labels_the_measurement() {
        let extra = BTreeMap::from([
            ("dc".to_string(), "x".into()),
            ("site".into(), "cfg".into()),
        ]);
        let e = Encoder::new(MetricNaming::Field, &extra);
        let s = Sample::new(
            SeriesKey::new(
                "pdu",
                TagSet::new([("site", "tag"), ("measurement", "spoofed")]),
            ),
            0,
        )
        .with_field("watts", FieldValue::Int(5));
        let mut out = Vec::new();
        e.encode_sample(&s, &mut out);
        assert_eq!(
            labels(&out[0]),
            vec![
                ("__name__", "watts"),
                ("dc", "x"),
                ("measurement", "pdu"),
                ("site", "tag")
            ]
        );
    }

    fn event(state: EventState, severity: Severity, ts_ms: i64) -> EventRecord {
        EventRecord {
            event: Event {
                labels: Vec::new(),
                annotations: Vec::new(),
                rule: "inlet_hot".into(),
                series: SeriesKey::new(
                    "env",
                    TagSet::new([("site", "dc1"), ("rule", "tag-loses")]),
                ),
                field: "temp".into(),
                severity,
                state,
                value: FieldValue::Float(31.0),
                threshold: Some(30.0),
                started_ns: 0,
                timestamp_ns: ts_ms * 1_000_000,
                message: "hot".into(),
            },
            silenced: false,
            action: Action::Change,
            response: None,
        }
    }

    #[test]
    fn events_are_one_while_firing_and_zero_after() {
        let mut e = encoder();
        let mut out = Vec::new();
        e.encode_events(
            &[
                event(EventState::Firing, Severity::Warning, 1),
                event(EventState::Firing, Severity::Critical, 2),
                event(EventState::Firing, Severity::Warning, 3),
                event(EventState::Resolved, Severity::Warning, 4),
            ],
            &mut out,
        );
        let got: Vec<(&str, f64, i64)> = out
            .iter()
            .map(|p| {
                let sev = p.labels.iter().find(|l| l.name == "severity").unwrap();
                (sev.value.as_str(), p.value, p.timestamp_ms)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("warning", 1.0, 1),
                ("warning", 0.0, 2),
                ("critical", 1.0, 2),
                ("critical", 0.0, 3),
                ("warning", 1.0, 3),
                ("warning", 0.0, 4),
            ]
        );
        assert_eq!(
            labels(&out[0]),
            vec![
                ("__name__", "sitewatch_alert"),
                ("field", "temp"),
                ("measurement", "env"),
                ("rule", "inlet_hot"),
                ("severity", "warning"),
                ("site", "dc1"),
            ]
        );
        assert_eq!(e.firing_alerts(), 0);
    }

    #[test]
    fn a_request_groups_series_sorts_samples_and_keeps_the_last_duplicate() {
        let p = |name: &str, v: f64, t: i64| Point {
            labels: vec![Label::new(NAME_LABEL, name)],
            value: v,
            timestamp_ms: t,
        };
        let points = [
            p("a", 1.0, 20),
            p("b", 2.0, 5),
            p("a", 3.0, 10),
            p("a", 4.0, 20),
        ];
        let req = write_request(&points);
        assert_eq!(req.timeseries.len(), 2);
        let a: Vec<(f64, i64)> = req.timeseries[0]
            .samples
            .iter()
            .map(|s| (s.value, s.timestamp))
            .collect();
        assert_eq!(a, vec![(3.0, 10), (4.0, 20)]);
        let bytes = snap::raw::Decoder::new()
            .decompress_vec(&body(&req))
            .unwrap();
        assert_eq!(WriteRequest::decode(bytes.as_slice()).unwrap(), req);
    }

    /// A series' labels and its samples as (value bits, timestamp).
    type FlatSeries = (Vec<Label>, Vec<(u64, i64)>);

    fn any_field_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<f64>().prop_map(FieldValue::Float),
            any::<i64>().prop_map(FieldValue::Int),
            any::<u64>().prop_map(FieldValue::UInt),
            any::<bool>().prop_map(FieldValue::Bool),
            ".{0,8}".prop_map(|s| FieldValue::Str(Arc::from(s))),
        ]
    }

    fn any_sample() -> impl Strategy<Value = Sample> {
        (
            ".{0,12}",
            prop::collection::vec((".{0,10}", ".{0,10}"), 0..6),
            prop::collection::vec((".{0,10}", any_field_value()), 1..6),
            any::<i64>(),
        )
            .prop_map(|(m, tags, fields, ts)| {
                let mut s = Sample::new(SeriesKey::new(m, TagSet::new(tags)), ts);
                for (k, v) in fields {
                    s = s.with_field(k, v);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn sanitized_names_are_always_valid(raw in ".{0,24}") {
            let m = sanitize_metric_name(&raw);
            prop_assert!(is_valid_metric_name(&m), "{:?} -> {:?}", raw, m);
            let l = sanitize_label_name(&raw);
            prop_assert!(is_valid_label_name(&l) && !l.starts_with("__"), "{:?} -> {:?}", raw, l);
            // Already valid names are kept as they are.
            if is_valid_label_name(&raw) && !raw.starts_with("__") {
                prop_assert_eq!(l, raw);
            }
        }

        /// Any sample gives points whose label sets follow the spec, and the snappy body
        /// decodes back with prost to exactly the series that were encoded.
        #[test]
        fn any_sample_encodes_to_a_valid_request_that_round_trips(
            samples in prop::collection::vec(any_sample(), 1..6),
            naming in prop_oneof![Just(MetricNaming::MeasurementField), Just(MetricNaming::Field)],
        ) {
            let e = Encoder::new(naming, &BTreeMap::new());
            let mut points = Vec::new();
            let mut numeric = 0;
            for s in &samples {
                let skipped = e.encode_sample(s, &mut points);
                numeric += s.fields.len() - skipped.strings;
            }
            prop_assert_eq!(points.len(), numeric);
            for p in &points {
                let names: Vec<&str> = p.labels.iter().map(|l| l.name.as_str()).collect();
                prop_assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, unique: {:?}", names);
                prop_assert_eq!(names.iter().filter(|n| **n == NAME_LABEL).count(), 1);
                for l in &p.labels {
                    if l.name == NAME_LABEL {
                        prop_assert!(is_valid_metric_name(&l.value), "{:?}", l.value);
                    } else {
                        prop_assert!(is_valid_label_name(&l.name) && !l.name.starts_with("__"));
                        prop_assert!(!l.value.is_empty());
                    }
                }
            }
            let req = write_request(&points);
            for s in &req.timeseries {
                prop_assert!(s.samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
            }
            let decoded = WriteRequest::decode(
                snap::raw::Decoder::new().decompress_vec(&body(&req)).unwrap().as_slice(),
            ).unwrap();
            // NaN != NaN: compare bit patterns (so a stale-marker NaN must survive). proto3
            // leaves out a zero double, so -0.0 arrives as 0.0, which is the same number.
            let bits = |v: f64| if v == 0.0 { 0 } else { v.to_bits() };
            let flat = |r: &WriteRequest| -> Vec<FlatSeries> {
                r.timeseries.iter().map(|s| (
                    s.labels.clone(),
                    s.samples.iter().map(|x| (bits(x.value), x.timestamp)).collect(),
                )).collect()
            };
            prop_assert_eq!(flat(&decoded), flat(&req));
            // Every point is in the request (its series and timestamp), last duplicate kept.
            for p in &points {
                let s = req.timeseries.iter().find(|s| s.labels == p.labels).expect("series");
                prop_assert!(s.samples.iter().any(|x| x.timestamp == p.timestamp_ms));
            }
        }
    }
}
