//! The history the report reads from InfluxDB: the rows of the events measurement in a range
//! (see docs/report.md for the schema) and the samples of one series' field around an
//! incident, through the replay's InfluxQL client (`[influx]` URL, auth and TLS).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{FieldValue, Sample};
use crate::rules::replay::{influxql, quote_ident, QueryClient};

use super::error::ReportError;

/// The tags every events row carries besides the series' tags and the rule's labels.
pub const OWN_TAGS: [&str; 5] = ["rule", "severity", "state", "source_measurement", "field"];

/// The fields the report reads; rows written before acknowledgements existed lack the last
/// ones, and InfluxDB answers null for them.
const EVENT_FIELDS: [&str; 15] = [
    "id",
    "message",
    "series",
    "started_ns",
    "duration_s",
    "value",
    "value_text",
    "threshold",
    "time_to_resolve_s",
    "time_to_ack_s",
    "acked_by",
    "comment",
    "step",
    "receivers",
    "silenced",
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowState {
    Firing,
    Acknowledged,
    Escalated,
    Resolved,
    Other(String),
}

impl RowState {
    pub fn parse(s: &str) -> RowState {
        match s {
            "firing" => RowState::Firing,
            "acknowledged" => RowState::Acknowledged,
            "escalated" => RowState::Escalated,
            "resolved" => RowState::Resolved,
            other => RowState::Other(other.to_string()),
        }
    }
}

/// One row of the events measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    pub time_ns: i64,
    pub state: RowState,
    pub rule: String,
    pub severity: String,
    /// The alert id; for rows written before it was a field, computed from rule + series
    /// as the rules stage does.
    pub id: String,
    /// `measurement,tag=v,...` of the series the rule watched.
    pub series: String,
    pub source_measurement: String,
    pub field: String,
    /// Every other tag: the series' tags and the rule's labels.
    pub tags: BTreeMap<String, String>,
    pub message: String,
    /// First breaching sample: the `started_ns` field, else row time - `duration_s`.
    pub started_ns: Option<i64>,
    pub value: Option<String>,
    pub threshold: Option<f64>,
    pub time_to_resolve_s: Option<f64>,
    pub time_to_ack_s: Option<f64>,
    pub acked_by: Option<String>,
    pub comment: Option<String>,
    pub step: Option<i64>,
    pub receivers: Option<String>,
    pub silenced: bool,
}

fn text(v: &FieldValue) -> String {
    match v {
        FieldValue::Str(s) => s.to_string(),
        FieldValue::Float(f) => short_float(*f),
        other => other.to_string(),
    }
}

/// A reading for people: 3.1999999999999993 (a float sum) as 3.2, four decimals at most.
pub fn short_float(v: f64) -> String {
    let r = (v * 1e4).round() / 1e4;
    if (r == 0.0 && v != 0.0) || !r.is_finite() {
        format!("{v:e}")
    } else {
        format!("{r}")
    }
}

impl EventRow {
    /// The row of one events sample; None when it lacks the `rule` or `state` tag (not
    /// written by sitewatch).
    pub fn from_sample(s: &Sample) -> Option<EventRow> {
        let tag = |k: &str| s.series.tags.get(k).map(str::to_string);
        let rule = tag("rule")?;
        let state = RowState::parse(&tag("state")?);
        let field = |k: &str| s.field(k);
        let num = |k: &str| {
            field(k)
                .and_then(FieldValue::as_f64)
                .filter(|v| v.is_finite())
        };
        let string = |k: &str| field(k).map(text).filter(|t| !t.is_empty());
        let series = string("series").unwrap_or_default();
        let id = string("id")
            .unwrap_or_else(|| format!("{:016x}", crate::text::fnv1a(&[&rule, &series])));
        let started_ns = num("started_ns")
            .map(|v| v as i64)
            .or_else(|| num("duration_s").map(|d| s.timestamp_ns.saturating_sub((d * 1e9) as i64)));
        let tags = s
            .series
            .tags
            .iter()
            .filter(|(k, _)| !OWN_TAGS.contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(EventRow {
            time_ns: s.timestamp_ns,
            state,
            severity: tag("severity").unwrap_or_default(),
            source_measurement: tag("source_measurement").unwrap_or_default(),
            field: tag("field").unwrap_or_default(),
            rule,
            id,
            series,
            tags,
            message: string("message").unwrap_or_default(),
            started_ns,
            value: field("value").or(field("value_text")).map(text),
            threshold: num("threshold"),
            time_to_resolve_s: num("time_to_resolve_s"),
            time_to_ack_s: num("time_to_ack_s"),
            acked_by: string("acked_by"),
            comment: string("comment"),
            step: num("step").map(|v| v as i64),
            receivers: string("receivers"),
            silenced: matches!(field("silenced"), Some(FieldValue::Bool(true))),
        })
    }
}

/// An InfluxQL string literal.
fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn event_fields() -> Vec<Arc<str>> {
    EVENT_FIELDS.iter().map(|f| Arc::from(*f)).collect()
}

/// The replay's history query (the fields asked for, then every tag), on the events.
pub fn events_query(measurement: &str, from_ns: i64, until_ns: i64) -> String {
    influxql(measurement, &event_fields(), from_ns, until_ns)
}

/// The events rows of `[from_ns, until_ns)` in time order, and how many rows were unusable.
pub async fn read_events(
    client: &QueryClient,
    measurement: &str,
    from_ns: i64,
    until_ns: i64,
) -> Result<(Vec<EventRow>, usize), ReportError> {
    let m: Arc<str> = measurement.into();
    let fields = event_fields();
    let mut rows = Vec::new();
    let mut foreign = 0usize;
    let skipped = client
        .select(
            &events_query(measurement, from_ns, until_ns),
            &m,
            &fields,
            &mut |samples| {
                for s in &samples {
                    match EventRow::from_sample(s) {
                        Some(r) => rows.push(r),
                        None => foreign += 1,
                    }
                }
            },
        )
        .await?;
    Ok((rows, skipped + foreign))
}

/// `measurement,k=v,k2=v2` back into its parts. The series string is not escaped, so a tag
/// value holding `,` is rejoined (a piece without `=` continues the value before it); a
/// value holding `,k=` cannot be told apart and is split (docs/report.md, limitations).
pub fn split_series(series: &str) -> (String, Vec<(String, String)>) {
    let mut parts = series.split(',');
    let measurement = parts.next().unwrap_or_default().to_string();
    let mut tags: Vec<(String, String)> = Vec::new();
    for p in parts {
        match (p.split_once('='), tags.last_mut()) {
            (Some((k, v)), _) => tags.push((k.to_string(), v.to_string())),
            (None, Some(last)) => {
                last.1.push(',');
                last.1.push_str(p);
            }
            (None, None) => {}
        }
    }
    (measurement, tags)
}

pub fn metric_query(
    measurement: &str,
    field: &str,
    tags: &[(String, String)],
    from_ns: i64,
    until_ns: i64,
) -> String {
    let mut cond: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{} = {}", quote_ident(k), quote_str(v)))
        .collect();
    cond.push(format!("time >= {from_ns} AND time < {until_ns}"));
    format!(
        "SELECT {}::field FROM {} WHERE {} ORDER BY time ASC",
        quote_ident(field),
        quote_ident(measurement),
        cond.join(" AND ")
    )
}

/// The numeric samples of `series`' `field` in `[from_ns, until_ns)`. Other series that
/// share these tags but have more (a superset) are included: InfluxQL matches on the tags
/// given, so a plot may show siblings; sitewatch's series are named by all their tags, so
/// this happens only when a device writes optional tags.
pub async fn read_metric(
    client: &QueryClient,
    series: &str,
    field: &str,
    from_ns: i64,
    until_ns: i64,
) -> Result<Vec<(i64, f64)>, ReportError> {
    let (measurement, tags) = split_series(series);
    let m: Arc<str> = measurement.as_str().into();
    let fields: Vec<Arc<str>> = vec![field.into()];
    let mut points = Vec::new();
    client
        .select(
            &metric_query(&measurement, field, &tags, from_ns, until_ns),
            &m,
            &fields,
            &mut |samples| {
                points.extend(samples.iter().filter_map(|s| {
                    let v = s.fields.first()?.1.as_f64()?;
                    v.is_finite().then_some((s.timestamp_ns, v))
                }))
            },
        )
        .await?;
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SeriesKey, TagSet};

    #[test]
    fn rows_read_with_and_without_the_new_fields() {
        let tags = TagSet::new([
            ("rule", "ups_on_battery"),
            ("severity", "critical"),
            ("state", "resolved"),
            ("source_measurement", "ups"),
            ("field", "on_battery"),
            ("site", "fra1"),
            ("device", "ups-a"),
            ("team", "power"),
        ]);
        let s = Sample::new(SeriesKey::new("events", tags), 10_000_000_000)
            .with_field("message", FieldValue::Str("ups-a on battery".into()))
            .with_field(
                "series",
                FieldValue::Str("ups,device=ups-a,site=fra1".into()),
            )
            .with_field("duration_s", FieldValue::Float(4.0))
            .with_field("value", FieldValue::Bool(true));
        let r = EventRow::from_sample(&s).unwrap();
        assert_eq!(r.state, RowState::Resolved);
        assert_eq!(r.started_ns, Some(6_000_000_000));
        assert_eq!(r.tags.get("team").map(String::as_str), Some("power"));
        assert!(!r.tags.contains_key("rule"));
        let key = SeriesKey::new("ups", TagSet::new([("device", "ups-a"), ("site", "fra1")]));
        assert_eq!(r.id, crate::model::alert_id("ups_on_battery", &key));
        assert_eq!(r.value.as_deref(), Some("true"));
        assert_eq!(r.time_to_ack_s, None);

        let s = s
            .with_field("id", FieldValue::Str("00000000000000ab".into()))
            .with_field("started_ns", FieldValue::Float(5e9))
            .with_field("time_to_ack_s", FieldValue::Float(42.0))
            .with_field("acked_by", FieldValue::Str("ana".into()));
        let r = EventRow::from_sample(&s).unwrap();
        assert_eq!(r.id, "00000000000000ab");
        assert_eq!(r.started_ns, Some(5_000_000_000));
        assert_eq!(r.time_to_ack_s, Some(42.0));
        assert_eq!(r.acked_by.as_deref(), Some("ana"));

        let foreign = Sample::new(SeriesKey::new("events", TagSet::new([("x", "y")])), 1)
            .with_field("message", FieldValue::Str("m".into()));
        assert_eq!(EventRow::from_sample(&foreign), None);
    }

    #[test]
    fn readings_are_shortened_for_people() {
        assert_eq!(short_float(3.1999999999999993), "3.2");
        assert_eq!(short_float(30.0), "30");
        assert_eq!(short_float(-0.12345), "-0.1235");
        assert_eq!(short_float(0.00001), "1e-5");
        assert_eq!(short_float(0.0), "0");
    }

    #[test]
    fn series_strings_split_back_into_a_query() {
        assert_eq!(
            split_series("env,rack=r1,room=a,b,site=x"),
            (
                "env".to_string(),
                vec![
                    ("rack".into(), "r1".into()),
                    ("room".into(), "a,b".into()),
                    ("site".into(), "x".into())
                ]
            )
        );
        assert_eq!(
            metric_query("env", "t", &[("rack".into(), "o'k".into())], 1, 2),
            r#"SELECT "t"::field FROM "env" WHERE "rack" = 'o\'k' AND time >= 1 AND time < 2 ORDER BY time ASC"#
        );
        assert!(events_query("events", 1, 2).contains("\"time_to_ack_s\"::field"));
    }
}
