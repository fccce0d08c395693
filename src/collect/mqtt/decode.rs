//! Payload decoders: `number`, `json`, `line_protocol`.
//!
//! A [`Decoder`] is one compiled `[[mqtt.subscription]]`. Decoding is pure (no I/O, no
//! clock; receive time is passed in) so it is cheap to test and fuzz.
//!
//! Type policy: every JSON number and every `number` payload becomes a float field. InfluxDB
//! fixes a field's type at first write, so a sensor that sends `21` once and `21.5` later would
//! otherwise get its float points rejected. Line protocol keeps the types it spells out
//! (`1i`, `1u`, `1.0`, `"s"`, `t`).

use std::sync::Arc;

use serde_json::Value;

use super::config::{MqttConfigError, PayloadFormat, SubscriptionConfig, TimestampUnit};
use super::topic::TopicTemplate;
use crate::model::{FieldValue, Sample, SeriesKey, TagSet};

/// 2000-01-01T00:00:00Z in ns: older payload timestamps are a device with an unset clock.
const MIN_TIMESTAMP_NS: i64 = 946_684_800_000_000_000;
/// Payload timestamps more than a year ahead of receive time are rejected.
const MAX_FUTURE_NS: i64 = 366 * 86_400 * 1_000_000_000;

/// Why a payload was dropped; the `reason` label of `sitewatch_mqtt_decode_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeReason {
    Oversized,
    InvalidUtf8,
    NotANumber,
    NonFinite,
    MalformedJson,
    MalformedLineProtocol,
    NoFields,
    BadTimestamp,
    TimestampOutOfRange,
}

impl DecodeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeReason::Oversized => "oversized",
            DecodeReason::InvalidUtf8 => "invalid_utf8",
            DecodeReason::NotANumber => "not_a_number",
            DecodeReason::NonFinite => "non_finite",
            DecodeReason::MalformedJson => "malformed_json",
            DecodeReason::MalformedLineProtocol => "malformed_line_protocol",
            DecodeReason::NoFields => "no_fields",
            DecodeReason::BadTimestamp => "bad_timestamp",
            DecodeReason::TimestampOutOfRange => "timestamp_out_of_range",
        }
    }
}

impl std::fmt::Display for DecodeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload that can never decode: counted, logged, dropped and still acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mqtt topic {topic:?}: payload dropped ({reason}): {detail}")]
pub struct DecodeError {
    pub topic: String,
    pub reason: DecodeReason,
    pub detail: String,
}

/// A JSON path like `a.b.0.c`: object keys, or array indices where the value is an array.
#[derive(Debug, Clone, PartialEq)]
struct JsonPath {
    source: Box<str>,
    segments: Vec<(Box<str>, Option<usize>)>,
}

impl JsonPath {
    fn parse(path: &str) -> Result<JsonPath, String> {
        if path.is_empty() {
            // The whole payload element, for a bare JSON number.
            return Ok(JsonPath {
                source: "".into(),
                segments: Vec::new(),
            });
        }
        let mut segments = Vec::new();
        for seg in path.split('.') {
            if seg.is_empty() {
                return Err(format!(
                    "path {path:?} has an empty segment; write keys separated by single dots, \
                     e.g. \"sensor.temperature\" or \"readings.0.value\""
                ));
            }
            segments.push((seg.into(), seg.parse::<usize>().ok()));
        }
        Ok(JsonPath {
            source: path.into(),
            segments,
        })
    }

    fn get<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for (key, index) in &self.segments {
            v = match v {
                Value::Object(map) => map.get(key.as_ref())?,
                Value::Array(items) => items.get((*index)?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Number {
        field: Arc<str>,
    },
    Json {
        fields: Vec<(Arc<str>, JsonPath)>,
        tags: Vec<(Arc<str>, JsonPath)>,
        timestamp: Option<JsonPath>,
        parse_numeric_strings: bool,
    },
    LineProtocol,
}

/// One compiled subscription: topic template plus payload decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub(crate) index: usize,
    pub(crate) label: Arc<str>,
    pub(crate) template: TopicTemplate,
    pub(crate) qos: u8,
    measurement: Arc<str>,
    static_tags: Vec<(Arc<str>, Arc<str>)>,
    kind: Kind,
    timestamp_unit: TimestampUnit,
    max_payload: usize,
    pub(crate) max_series: usize,
}

impl Decoder {
    pub fn compile(index: usize, cfg: &SubscriptionConfig) -> Result<Decoder, MqttConfigError> {
        let err = |key: &'static str, problem: String| MqttConfigError::Subscription {
            index,
            topic: cfg.topic.clone(),
            key,
            problem,
        };
        let template = TopicTemplate::parse(&cfg.topic).map_err(|e| err("topic", e.problem))?;
        // QoS 2 is refused on purpose: rumqttc forgets incoming QoS 2 state on reconnect and
        // treats the broker's PUBREL for an earlier message as a protocol error, so the
        // connection would fail forever. The broker downgrades QoS 2 publishes to the
        // subscription's QoS 1, and QoS 1 with acks after storage plus InfluxDB's
        // same-timestamp overwrite gives the same result.
        if cfg.qos > 1 {
            return Err(err(
                "qos",
                format!(
                    "is {}; use 0 or 1 (QoS 2 publishes are delivered as QoS 1, which sitewatch \
                     acknowledges only after storing them)",
                    cfg.qos
                ),
            ));
        }
        let measurement = match (cfg.format, &cfg.measurement) {
            (PayloadFormat::LineProtocol, Some(_)) => {
                return Err(err(
                    "measurement",
                    "is taken from each line-protocol line; remove it".into(),
                ))
            }
            (PayloadFormat::LineProtocol, None) => Arc::from(""),
            (_, None) => return Err(err("measurement", "is required for this format".into())),
            (_, Some(m)) if m.trim().is_empty() => {
                return Err(err("measurement", "must not be empty".into()))
            }
            (_, Some(m)) => Arc::from(m.as_str()),
        };
        for (k, v) in &cfg.tags {
            if k.is_empty() || v.is_empty() {
                return Err(err(
                    "tags",
                    format!("tag {k:?} = {v:?}: keys and values must not be empty"),
                ));
            }
        }
        let json_only = |key: &'static str, set: bool| {
            if set && cfg.format != PayloadFormat::Json {
                Err(err(key, "only applies to format = \"json\"".into()))
            } else {
                Ok(())
            }
        };
        json_only("fields", !cfg.fields.is_empty())?;
        json_only("tag_paths", !cfg.tag_paths.is_empty())?;
        json_only("timestamp", cfg.timestamp.is_some())?;
        json_only("parse_numeric_strings", cfg.parse_numeric_strings)?;

        let kind = match cfg.format {
            PayloadFormat::Number => {
                if cfg.field.is_empty() {
                    return Err(err("field", "must not be empty".into()));
                }
                Kind::Number {
                    field: Arc::from(cfg.field.as_str()),
                }
            }
            PayloadFormat::LineProtocol => Kind::LineProtocol,
            PayloadFormat::Json => {
                if cfg.fields.is_empty() {
                    return Err(err(
                        "fields",
                        "json needs at least one field, e.g. fields = { temperature = \"temp\" }"
                            .into(),
                    ));
                }
                let mut fields = Vec::new();
                for (name, path) in &cfg.fields {
                    if name.is_empty() {
                        return Err(err("fields", "field names must not be empty".into()));
                    }
                    let p = JsonPath::parse(path).map_err(|e| err("fields", e))?;
                    fields.push((Arc::from(name.as_str()), p));
                }
                let mut tags = Vec::new();
                for (name, path) in &cfg.tag_paths {
                    if name.is_empty() {
                        return Err(err("tag_paths", "tag names must not be empty".into()));
                    }
                    let p = JsonPath::parse(path).map_err(|e| err("tag_paths", e))?;
                    tags.push((Arc::from(name.as_str()), p));
                }
                let timestamp = cfg
                    .timestamp
                    .as_deref()
                    .map(JsonPath::parse)
                    .transpose()
                    .map_err(|e| err("timestamp", e))?;
                Kind::Json {
                    fields,
                    tags,
                    timestamp,
                    parse_numeric_strings: cfg.parse_numeric_strings,
                }
            }
        };

        // InfluxDB 3 (and sane queries) forbid a tag and a field with the same name.
        let field_names: Vec<&str> = match &kind {
            Kind::Number { field } => vec![field.as_ref()],
            Kind::Json { fields, .. } => fields.iter().map(|(n, _)| n.as_ref()).collect(),
            Kind::LineProtocol => Vec::new(),
        };
        let tag_names = cfg
            .tags
            .keys()
            .map(String::as_str)
            .chain(template.capture_names())
            .chain(cfg.tag_paths.keys().map(String::as_str));
        for tag in tag_names {
            if field_names.contains(&tag) {
                return Err(err(
                    "fields",
                    format!("`{tag}` is both a tag and a field; rename one of them"),
                ));
            }
        }

        Ok(Decoder {
            index,
            label: Arc::from(cfg.label()),
            template,
            qos: cfg.qos,
            measurement,
            static_tags: cfg
                .tags
                .iter()
                .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
                .collect(),
            kind,
            timestamp_unit: cfg.timestamp_unit,
            max_payload: cfg.max_payload_size.unwrap_or(usize::MAX),
            max_series: cfg.max_series,
        })
    }

    /// The subscription's label (for metrics and logs).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn template(&self) -> &TopicTemplate {
        &self.template
    }

    /// Decodes one payload received on `topic`, whose template captures are `captures`.
    /// `recv_ns` is used where the payload carries no timestamp.
    pub fn decode(
        &self,
        topic: &str,
        captures: &[(Arc<str>, Arc<str>)],
        payload: &[u8],
        recv_ns: i64,
    ) -> Result<Vec<Sample>, DecodeError> {
        let fail = |reason: DecodeReason, detail: String| DecodeError {
            topic: topic.to_string(),
            reason,
            detail,
        };
        if payload.len() > self.max_payload {
            return Err(fail(
                DecodeReason::Oversized,
                format!(
                    "{} bytes, max_payload_size is {}",
                    payload.len(),
                    self.max_payload
                ),
            ));
        }
        let text = std::str::from_utf8(payload).map_err(|e| {
            fail(
                DecodeReason::InvalidUtf8,
                format!(
                    "{e}; payload starts {}",
                    preview(&String::from_utf8_lossy(payload))
                ),
            )
        })?;
        match &self.kind {
            Kind::Number { field } => {
                let value = parse_number(text).map_err(|reason| {
                    fail(reason, format!("expected a number, got {}", preview(text)))
                })?;
                let tags = self.tags(captures, std::iter::empty());
                Ok(vec![Sample::new(
                    SeriesKey::new(self.measurement.clone(), tags),
                    recv_ns,
                )
                .with_field(field.clone(), value)])
            }
            Kind::Json {
                fields,
                tags,
                timestamp,
                parse_numeric_strings,
            } => {
                let doc: Value = serde_json::from_str(text).map_err(|e| {
                    fail(
                        DecodeReason::MalformedJson,
                        format!("{e}; payload starts {}", preview(text)),
                    )
                })?;
                let elements: &[Value] = match &doc {
                    Value::Array(items) => items,
                    other => std::slice::from_ref(other),
                };
                let mut samples = Vec::with_capacity(elements.len());
                for element in elements {
                    let mut sample_fields = Vec::with_capacity(fields.len());
                    for (name, path) in fields {
                        if let Some(v) = path
                            .get(element)
                            .and_then(|v| json_field(v, *parse_numeric_strings))
                        {
                            sample_fields.push((name.clone(), v));
                        }
                    }
                    if sample_fields.is_empty() {
                        continue;
                    }
                    let ts = match timestamp.as_ref().and_then(|p| p.get(element)) {
                        None | Some(Value::Null) => recv_ns,
                        Some(v) => {
                            let ns = json_timestamp(v, self.timestamp_unit).map_err(|d| {
                                fail(
                                    DecodeReason::BadTimestamp,
                                    format!(
                                        "at path {:?}: {d}",
                                        timestamp.as_ref().map(|p| &*p.source).unwrap_or_default()
                                    ),
                                )
                            })?;
                            check_timestamp(ns, recv_ns)
                                .map_err(|d| fail(DecodeReason::TimestampOutOfRange, d))?
                        }
                    };
                    let payload_tags = tags.iter().filter_map(|(name, path)| {
                        path.get(element)
                            .and_then(json_tag)
                            .map(|v| (name.clone(), v))
                    });
                    let tagset = self.tags(captures, payload_tags);
                    let mut sample =
                        Sample::new(SeriesKey::new(self.measurement.clone(), tagset), ts);
                    sample.fields = sample_fields;
                    samples.push(sample);
                }
                if samples.is_empty() {
                    let wanted: Vec<&str> = fields.iter().map(|(_, p)| &*p.source).collect();
                    return Err(fail(
                        DecodeReason::NoFields,
                        format!(
                            "none of the paths {wanted:?} holds a number, bool or string; payload \
                             starts {}",
                            preview(text)
                        ),
                    ));
                }
                Ok(samples)
            }
            Kind::LineProtocol => self.decode_line_protocol(text, captures, recv_ns, &fail),
        }
    }

    fn decode_line_protocol(
        &self,
        text: &str,
        captures: &[(Arc<str>, Arc<str>)],
        recv_ns: i64,
        fail: &dyn Fn(DecodeReason, String) -> DecodeError,
    ) -> Result<Vec<Sample>, DecodeError> {
        let mut samples = Vec::new();
        for (n, line) in influxdb_line_protocol::parse_lines(text).enumerate() {
            let line = line.map_err(|e| {
                fail(
                    DecodeReason::MalformedLineProtocol,
                    format!("line {}: {e}", n + 1),
                )
            })?;
            let mut fields: Vec<(Arc<str>, FieldValue)> = Vec::with_capacity(line.field_set.len());
            for (key, value) in &line.field_set {
                let v = match value {
                    influxdb_line_protocol::FieldValue::F64(f) => {
                        if !f.is_finite() {
                            return Err(fail(
                                DecodeReason::NonFinite,
                                format!("line {}: field {} is {f}", n + 1, key.as_str()),
                            ));
                        }
                        FieldValue::Float(*f)
                    }
                    influxdb_line_protocol::FieldValue::I64(i) => FieldValue::Int(*i),
                    influxdb_line_protocol::FieldValue::U64(u) => FieldValue::UInt(*u),
                    influxdb_line_protocol::FieldValue::Boolean(b) => FieldValue::Bool(*b),
                    influxdb_line_protocol::FieldValue::String(s) => {
                        FieldValue::Str(Arc::from(s.as_str()))
                    }
                };
                // A repeated key: the last value wins, as in InfluxDB.
                match fields.iter_mut().find(|(k, _)| k.as_ref() == key.as_str()) {
                    Some(slot) => slot.1 = v,
                    None => fields.push((Arc::from(key.as_str()), v)),
                }
            }
            let ts = match line.timestamp {
                None => recv_ns,
                Some(raw) => {
                    let ns = int_timestamp(raw, self.timestamp_unit).ok_or_else(|| {
                        fail(
                            DecodeReason::BadTimestamp,
                            format!("line {}: timestamp {raw} overflows", n + 1),
                        )
                    })?;
                    check_timestamp(ns, recv_ns).map_err(|d| {
                        fail(
                            DecodeReason::TimestampOutOfRange,
                            format!("line {}: {d}", n + 1),
                        )
                    })?
                }
            };
            let payload_tags = line
                .series
                .tag_set
                .iter()
                .flatten()
                .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())));
            let tags = self.tags(captures, payload_tags);
            let mut sample = Sample::new(
                SeriesKey::new(Arc::from(line.series.measurement.as_str()), tags),
                ts,
            );
            sample.fields = fields;
            samples.push(sample);
        }
        if samples.is_empty() {
            return Err(fail(
                DecodeReason::NoFields,
                "payload has no line-protocol lines".into(),
            ));
        }
        Ok(samples)
    }

    /// Static tags, then topic captures, then payload tags: the more specific source wins.
    fn tags(
        &self,
        captures: &[(Arc<str>, Arc<str>)],
        payload: impl Iterator<Item = (Arc<str>, Arc<str>)>,
    ) -> TagSet {
        TagSet::new(
            self.static_tags
                .iter()
                .cloned()
                .chain(captures.iter().cloned())
                .chain(payload),
        )
    }
}

/// At most 64 characters of a payload for error messages.
fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    format!("{out:?}")
}

fn parse_number(text: &str) -> Result<FieldValue, DecodeReason> {
    let t = text.trim();
    match t {
        "true" => return Ok(FieldValue::Bool(true)),
        "false" => return Ok(FieldValue::Bool(false)),
        _ => {}
    }
    // Rust also accepts "inf"/"NaN": parse, then refuse non-finite values explicitly.
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(FieldValue::Float(v)),
        Ok(_) => Err(DecodeReason::NonFinite),
        Err(_) => Err(DecodeReason::NotANumber),
    }
}

fn json_field(v: &Value, parse_numeric_strings: bool) -> Option<FieldValue> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(FieldValue::Float),
        Value::Bool(b) => Some(FieldValue::Bool(*b)),
        Value::String(s) => {
            if parse_numeric_strings {
                if let Ok(f) = s.trim().parse::<f64>() {
                    if f.is_finite() {
                        return Some(FieldValue::Float(f));
                    }
                }
            }
            Some(FieldValue::Str(Arc::from(s.as_str())))
        }
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn json_tag(v: &Value) -> Option<Arc<str>> {
    match v {
        Value::String(s) if !s.is_empty() => Some(Arc::from(s.as_str())),
        Value::Number(n) => Some(Arc::from(n.to_string())),
        Value::Bool(b) => Some(Arc::from(if *b { "true" } else { "false" })),
        _ => None,
    }
}

fn unit_multiplier(unit: TimestampUnit, magnitude: f64) -> i64 {
    match unit {
        TimestampUnit::S => 1_000_000_000,
        TimestampUnit::Ms => 1_000_000,
        TimestampUnit::Us => 1_000,
        TimestampUnit::Ns => 1,
        TimestampUnit::Auto | TimestampUnit::Rfc3339 => {
            if magnitude < 1e11 {
                1_000_000_000
            } else if magnitude < 1e14 {
                1_000_000
            } else if magnitude < 1e17 {
                1_000
            } else {
                1
            }
        }
    }
}

fn int_timestamp(raw: i64, unit: TimestampUnit) -> Option<i64> {
    raw.checked_mul(unit_multiplier(unit, raw.unsigned_abs() as f64))
}

fn json_timestamp(v: &Value, unit: TimestampUnit) -> Result<i64, String> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                int_timestamp(i, unit).ok_or_else(|| format!("{i} overflows"))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                float_timestamp(f, unit)
            }
        }
        Value::String(s) => {
            if unit == TimestampUnit::Auto || unit == TimestampUnit::Rfc3339 {
                if let Some(ns) = parse_rfc3339(s) {
                    return Ok(ns);
                }
            }
            match s.trim().parse::<f64>() {
                Ok(f) if unit != TimestampUnit::Rfc3339 => match s.trim().parse::<i64>() {
                    Ok(i) => int_timestamp(i, unit).ok_or_else(|| format!("{i} overflows")),
                    Err(_) => float_timestamp(f, unit),
                },
                _ => Err(format!(
                    "{} is neither an RFC 3339 time nor a number",
                    preview(s)
                )),
            }
        }
        other => Err(format!("expected a number or a string, got {other}")),
    }
}

fn float_timestamp(f: f64, unit: TimestampUnit) -> Result<i64, String> {
    if !f.is_finite() {
        return Err(format!("{f} is not a finite number"));
    }
    let ns = f * unit_multiplier(unit, f.abs()) as f64;
    // i64 range, with margin for the float rounding at the edges.
    if ns.abs() < 9.2e18 {
        Ok(ns.round() as i64)
    } else {
        Err(format!("{f} overflows"))
    }
}

fn check_timestamp(ns: i64, recv_ns: i64) -> Result<i64, String> {
    if ns < MIN_TIMESTAMP_NS {
        return Err(format!(
            "timestamp {ns} ns is before 2000-01-01 (device clock not set?)"
        ));
    }
    if ns > recv_ns.saturating_add(MAX_FUTURE_NS) {
        return Err(format!(
            "timestamp {ns} ns is more than a year after receive time {recv_ns} ns \
             (wrong timestamp_unit?)"
        ));
    }
    Ok(ns)
}

pub(crate) use crate::time::parse_rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn sub(toml_src: &str) -> Decoder {
        let cfg: SubscriptionConfig = toml::from_str(toml_src).unwrap();
        Decoder::compile(0, &cfg).unwrap()
    }

    fn run(d: &Decoder, topic: &str, payload: &[u8]) -> Result<Vec<Sample>, DecodeError> {
        let mut caps = Vec::new();
        assert!(d.template.match_topic(topic, &mut caps), "topic must match");
        d.decode(topic, &caps, payload, NOW)
    }

    #[test]
    fn number_payload() {
        let d = sub(r#"
            topic = "dc/{site}/{rack}/temp"
            measurement = "env"
            format = "number"
            field = "temp_c"
            tags = { source = "mqtt", site = "overridden" }
        "#);
        let s = run(&d, "dc/ams1/r7/temp", b" 21.5\n").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(&*s[0].series.measurement, "env");
        let tags: Vec<_> = s[0].series.tags.iter().collect();
        assert_eq!(
            tags,
            vec![("rack", "r7"), ("site", "ams1"), ("source", "mqtt")]
        );
        assert_eq!(s[0].field("temp_c"), Some(&FieldValue::Float(21.5)));
        assert_eq!(s[0].timestamp_ns, NOW);
        assert_eq!(
            run(&d, "dc/a/b/temp", b"true").unwrap()[0].field("temp_c"),
            Some(&FieldValue::Bool(true))
        );
        for (bad, reason) in [
            (&b"warm"[..], DecodeReason::NotANumber),
            (b"", DecodeReason::NotANumber),
            (b"NaN", DecodeReason::NonFinite),
            (b"inf", DecodeReason::NonFinite),
            (b"\xff\xfe", DecodeReason::InvalidUtf8),
        ] {
            let e = run(&d, "dc/a/b/temp", bad).unwrap_err();
            assert_eq!(e.reason, reason);
            assert!(e.to_string().contains("dc/a/b/temp"));
        }
    }

    #[test]
    fn oversized_payload() {
        let d = sub("topic=\"t/{a}\"\nformat=\"number\"\nmeasurement=\"m\"\nmax_payload_size=4");
        assert!(run(&d, "t/x", b"1234").is_ok());
        let e = run(&d, "t/x", b"12345").unwrap_err();
        assert_eq!(e.reason, DecodeReason::Oversized);
    }

    #[test]
    fn json_payload() {
        let d = sub(r#"
            topic = "z2m/{sensor}"
            measurement = "env"
            format = "json"
            fields = { temp = "sensor.temperature", hum = "readings.1.v", leak = "water_leak", state = "state", battery = "battery" }
            tag_paths = { model = "device.model", zone = "zone" }
            timestamp = "ts"
            parse_numeric_strings = true
        "#);
        let payload = br#"{"sensor":{"temperature":22},"readings":[{"v":1},{"v":45.5}],
            "water_leak":false,"state":"ON","battery":"87","device":{"model":"WSDCGQ11LM"},
            "zone":3,"ts":1699999999123}"#;
        let s = run(&d, "z2m/rack7", payload).unwrap();
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.field("temp"), Some(&FieldValue::Float(22.0)));
        assert_eq!(s.field("hum"), Some(&FieldValue::Float(45.5)));
        assert_eq!(s.field("leak"), Some(&FieldValue::Bool(false)));
        assert_eq!(s.field("state"), Some(&FieldValue::Str("ON".into())));
        assert_eq!(s.field("battery"), Some(&FieldValue::Float(87.0)));
        assert_eq!(s.series.tags.get("sensor"), Some("rack7"));
        assert_eq!(s.series.tags.get("model"), Some("WSDCGQ11LM"));
        assert_eq!(s.series.tags.get("zone"), Some("3"));
        assert_eq!(s.timestamp_ns, 1_699_999_999_123_000_000);

        // Missing fields are absent; no fields at all is an error.
        let s = run(&d, "z2m/x", br#"{"sensor":{"temperature":1.5}}"#).unwrap();
        assert_eq!(s[0].fields.len(), 1);
        assert_eq!(s[0].timestamp_ns, NOW);
        let e = run(&d, "z2m/x", br#"{"other":1}"#).unwrap_err();
        assert_eq!(e.reason, DecodeReason::NoFields);
        let e = run(&d, "z2m/x", br#"{"sensor":"#).unwrap_err();
        assert_eq!(e.reason, DecodeReason::MalformedJson);
        let e = run(&d, "z2m/x", br#"{"battery":1,"ts":5}"#).unwrap_err();
        assert_eq!(e.reason, DecodeReason::TimestampOutOfRange);
        let e = run(&d, "z2m/x", br#"{"battery":1,"ts":{"a":1}}"#).unwrap_err();
        assert_eq!(e.reason, DecodeReason::BadTimestamp);
        // An array yields one sample per element.
        let s = run(
            &d,
            "z2m/x",
            br#"[{"battery":1,"ts":"2023-11-14T22:13:20Z"},{"battery":2}]"#,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].timestamp_ns, 1_700_000_000_000_000_000);
        assert_eq!(s[1].timestamp_ns, NOW);
    }

    #[test]
    fn line_protocol_payload() {
        let d = sub(r#"
            topic = "lp/{site}"
            format = "line_protocol"
            tags = { source = "mqtt" }
        "#);
        let payload = b"ups,ups=u1 load=41.5,status=\"online\",alarms=0i,ok=t 1700000000000000000\npdu,site=payload amps=3u\n";
        let s = run(&d, "lp/ams1", payload).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(&*s[0].series.measurement, "ups");
        assert_eq!(s[0].series.tags.get("ups"), Some("u1"));
        assert_eq!(s[0].series.tags.get("site"), Some("ams1"));
        assert_eq!(s[0].series.tags.get("source"), Some("mqtt"));
        assert_eq!(s[0].field("load"), Some(&FieldValue::Float(41.5)));
        assert_eq!(
            s[0].field("status"),
            Some(&FieldValue::Str("online".into()))
        );
        assert_eq!(s[0].field("alarms"), Some(&FieldValue::Int(0)));
        assert_eq!(s[0].field("ok"), Some(&FieldValue::Bool(true)));
        assert_eq!(s[0].timestamp_ns, 1_700_000_000_000_000_000);
        assert_eq!(s[1].series.tags.get("site"), Some("payload"));
        assert_eq!(s[1].field("amps"), Some(&FieldValue::UInt(3)));
        assert_eq!(s[1].timestamp_ns, NOW);
        // Seconds are recognised by magnitude.
        let s = run(&d, "lp/a", b"m v=1 1700000000").unwrap();
        assert_eq!(s[0].timestamp_ns, 1_700_000_000_000_000_000);
        for (bad, reason) in [
            (&b"m v=NaN"[..], None),
            (b"m v=inf", None),
            (b"m", Some(DecodeReason::MalformedLineProtocol)),
            (b"m v=1 12", Some(DecodeReason::TimestampOutOfRange)),
            (b"", Some(DecodeReason::NoFields)),
        ] {
            let e = run(&d, "lp/a", bad).unwrap_err();
            if let Some(r) = reason {
                assert_eq!(e.reason, r, "{:?}", String::from_utf8_lossy(bad));
            }
        }
    }

    #[test]
    fn config_errors() {
        let bad = [
            ("topic=\"a\"\nformat=\"json\"\nmeasurement=\"m\"", "fields"),
            ("topic=\"a\"\nformat=\"number\"", "measurement"),
            (
                "topic=\"a\"\nformat=\"line_protocol\"\nmeasurement=\"m\"",
                "measurement",
            ),
            (
                "topic=\"a/{v}\"\nformat=\"number\"\nmeasurement=\"m\"\nfield=\"v\"",
                "fields",
            ),
            (
                "topic=\"a\"\nformat=\"number\"\nmeasurement=\"m\"\nqos=3",
                "qos",
            ),
            (
                "topic=\"a\"\nformat=\"number\"\nmeasurement=\"m\"\ntimestamp=\"t\"",
                "timestamp",
            ),
            (
                "topic=\"a\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={v=\"a..b\"}",
                "fields",
            ),
        ];
        for (src, key) in bad {
            let cfg: SubscriptionConfig = toml::from_str(src).unwrap();
            let e = Decoder::compile(3, &cfg).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{key}`")) && e.contains("subscription[3]"),
                "{e}"
            );
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14 22:13:20.123456789123z"),
            Some(1_700_000_000_123_456_789)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn any_decoder() -> impl Strategy<Value = Decoder> {
        prop_oneof![
            Just(sub("topic=\"t/{a}\"\nformat=\"number\"\nmeasurement=\"m\"")),
            Just(sub("topic=\"t/{a}\"\nformat=\"line_protocol\"")),
            Just(sub("topic=\"t/{a}\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={x=\"a.0.b\",y=\"\"}\ntimestamp=\"ts\"\ntag_paths={k=\"k\"}\nparse_numeric_strings=true")),
        ]
    }

    proptest! {
        #[test]
        fn decoders_never_panic(d in any_decoder(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = run(&d, "t/x", &payload);
        }

        #[test]
        fn decoders_never_panic_on_text(d in any_decoder(), payload in "[ -~\n]{0,200}") {
            let _ = run(&d, "t/x", payload.as_bytes());
        }

        #[test]
        fn line_protocol_shaped_input(
            m in "[a-z,= \\\\]{1,8}", k in "[a-z=,\"]{1,5}", v in "-?[0-9.eiu]{1,8}|t|f|\"[a-z]*\"|nan|inf",
            ts in proptest::option::of(any::<i64>()),
        ) {
            let d = sub("topic=\"t/{a}\"\nformat=\"line_protocol\"");
            let line = match ts { Some(t) => format!("{m} {k}={v} {t}"), None => format!("{m} {k}={v}") };
            if let Ok(samples) = run(&d, "t/x", line.as_bytes()) {
                for s in samples {
                    prop_assert!(s.timestamp_ns >= MIN_TIMESTAMP_NS);
                    for (_, f) in &s.fields {
                        if let FieldValue::Float(x) = f { prop_assert!(x.is_finite()); }
                    }
                }
            }
        }

        #[test]
        fn rfc3339_never_panics(s in ".{0,40}", y in 0i64..10000, mo in 0i64..14, d in 0i64..33, h in 0i64..25, off in "Z|[+-][0-9]{2}:[0-9]{2}|") {
            let _ = parse_rfc3339(&s);
            let _ = parse_rfc3339(&format!("{y:04}-{mo:02}-{d:02}T{h:02}:00:00{off}"));
        }

        #[test]
        fn json_timestamps_round_trip(secs in 946_684_800i64..4_000_000_000, ms in 0i64..1000) {
            let d = sub("topic=\"t/{a}\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={x=\"x\"}\ntimestamp=\"ts\"");
            let expect = secs * 1_000_000_000 + ms * 1_000_000;
            let recv = 4_100_000_000_000_000_000;
            for payload in [
                format!("{{\"x\":1,\"ts\":{}}}", secs * 1000 + ms),
                format!("{{\"x\":1,\"ts\":{}}}", expect),
                format!("{{\"x\":1,\"ts\":{}}}", (secs * 1000 + ms) * 1000),
            ] {
                let mut caps = Vec::new();
                d.template.match_topic("t/x", &mut caps);
                let s = d.decode("t/x", &caps, payload.as_bytes(), recv).unwrap();
                prop_assert_eq!(s[0].timestamp_ns, expect);
            }
        }
    }
}
