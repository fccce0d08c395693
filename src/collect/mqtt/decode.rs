//! Payload decoders: `number`, `json`, `line_protocol`.
//!
//! A [`Decoder`] is one compiled `[[mqtt.subscription]]`. Decoding is pure (no I/O, no
//! clock; receive time is passed in) so it is cheap to test and fuzz.
//!
//! Type policy. InfluxDB fixes a field's type at its first write and rejects every later point
//! whose value has another type, so one stray value would block a series for good. Hence:
//!
//! - A field without a declared type takes numbers (always as float: a sensor that sends `21`
//!   once and `21.5` later must not get its float points rejected) and booleans. A string is
//!   dropped from the point, unless `parse_numeric_strings` is set and it is a number
//!   (`"21.5"`): `{"value":"12,5"}` can never make `value` a string field.
//! - A declared type ([`FieldType`]) is enforced: a value that does not fit (`"abc"` or `true`
//!   for a float, `3.7` for an integer, `-1` for unsigned) is dropped from the point; the other
//!   fields of the point are kept. Numeric strings are parsed for numeric types only with
//!   `parse_numeric_strings`.
//! - Every dropped value is reported as a [`FieldError`] (the subscriber counts and logs them);
//!   a payload left with no field at all is a [`DecodeError`] (`no_valid_fields`).
//! - `number` payloads follow the same rules with the subscription's `type`; as the payload is
//!   the one value, a value that does not fit drops the message.
//! - Line protocol keeps the types it spells out (`1i`, `1u`, `1.0`, `"s"`, `t`).

use std::sync::Arc;

use serde_json::Value;

use super::config::{
    check_max_payload, FieldType, MqttConfig, MqttConfigError, PayloadFormat, SubscriptionConfig,
    TimestampFallback, DEFAULT_MAX_PAYLOAD_SIZE,
};
use super::each::EachList;
use super::flat_json::FlatKeys;
use super::json_value::parse_numeric_str;
use super::path::JsonPath;
use super::points::{sanitise, PointList, Skipped, UnknownPoints};
pub use super::reason::DecodeReason;
use super::sparkplug::{Births, SparkplugTopic};
use super::timefmt::{int_timestamp, TimestampSpec};
use super::topic::TopicTemplate;
use super::values::ValueConv;
use crate::model::{FieldValue, Sample, SeriesKey, TagSet};
use crate::text::preview;

impl MqttConfig {
    /// Checks everything that can be checked without the network, including compiling every
    /// subscription (templates, paths, tag/field name clashes).
    pub fn validate(&self) -> Result<(), MqttConfigError> {
        self.compile().map(|_| ())
    }

    /// What `sitewatch check` warns about in a valid config (positional JSON paths).
    pub fn check_warnings(&self) -> Vec<String> {
        self.compile()
            .map(|ds| ds.iter().flat_map(Decoder::positional_warnings).collect())
            .unwrap_or_default()
    }

    /// One decoder per subscription, after [`MqttConfig::check_global`].
    pub(crate) fn compile(&self) -> Result<Vec<Decoder>, MqttConfigError> {
        self.check_global()?;
        let mut labels = std::collections::HashSet::new();
        let mut decoders = Vec::with_capacity(self.subscriptions.len());
        for (index, sub) in self.subscriptions.iter().enumerate() {
            if !labels.insert(sub.label()) {
                return Err(MqttConfigError::Subscription {
                    index,
                    topic: sub.topic.clone(),
                    key: "name",
                    problem: format!(
                        "label {:?} is used by an earlier subscription; set a distinct `name`",
                        sub.label()
                    ),
                });
            }
            decoders.push(Decoder::compile_with(index, sub, self.max_payload())?);
        }
        let filters: Vec<String> = decoders.iter().map(|d| d.template.filter()).collect();
        super::partition::check(self, &filters)?;
        Ok(decoders)
    }
}

/// 2000-01-01T00:00:00Z in ns: older payload timestamps are a device with an unset clock.
const MIN_TIMESTAMP_NS: i64 = 946_684_800_000_000_000;
/// Payload timestamps more than a year ahead of receive time are rejected.
const MAX_FUTURE_NS: i64 = 366 * 86_400 * 1_000_000_000;

/// A payload that can never decode: counted, logged, dropped and still acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mqtt topic {topic:?}: payload dropped ({reason}): {detail}")]
pub struct DecodeError {
    pub topic: String,
    pub reason: DecodeReason,
    pub detail: String,
}

/// One field value dropped from a decoded point because it does not fit the field's type; the
/// rest of the point is kept. Counted and logged by the subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: Arc<str>,
    pub reason: DecodeReason,
    pub detail: String,
}

/// What a decode left out besides the samples, for the subscriber to count and log.
#[derive(Debug, Default)]
pub struct DecodeNotes {
    /// Field values dropped from kept points because they do not fit.
    pub field_errors: Vec<FieldError>,
    /// Raw names of points not in `points.known`, dropped (`unknown = "drop"`).
    pub unknown_points: Vec<String>,
    /// Points without a usable name (shown shortened), dropped.
    pub nameless_points: Vec<String>,
    /// Timestamps replaced by receive time (`timestamp_fallback = "receive_time"`): why.
    pub timestamp_fallbacks: Vec<(DecodeReason, String)>,
}

impl DecodeNotes {
    pub fn clear(&mut self) {
        self.field_errors.clear();
        self.unknown_points.clear();
        self.nameless_points.clear();
        self.timestamp_fallbacks.clear();
    }
}

#[derive(Debug, Clone)]
struct JsonField {
    name: Arc<str>,
    path: JsonPath,
    conv: ValueConv,
}

/// What a `json` subscription reads from each element, borrowed from its [`Kind::Json`].
struct JsonPaths<'a> {
    fields: &'a [JsonField],
    tags: &'a [(Arc<str>, JsonPath)],
    timestamp: Option<&'a JsonPath>,
    parse_numeric_strings: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Number {
        field: NumberField,
        conv: ValueConv,
    },
    Json {
        fields: Vec<JsonField>,
        tags: Vec<(Arc<str>, JsonPath)>,
        timestamp: Option<JsonPath>,
        parse_numeric_strings: bool,
        points: Option<Box<PointList>>,
        each: Vec<EachList>,
        /// Set when every path is one key and there are no `points` or `each`: an object
        /// payload is then read without a document tree.
        flat: Option<FlatKeys>,
    },
    LineProtocol,
    SparkplugB {
        births: Births,
        names: std::collections::HashMap<Box<str>, Arc<str>>,
        unknown: UnknownPoints,
    },
}

/// Measurement of the Sparkplug B device-health rows (`up` = BIRTH, DEATH): the rules engine
/// inhibits a device's rules while its latest row says `up=false`, as for `snmp_poll`.
pub const SPARKPLUG_STATE_MEASUREMENT: &str = "sparkplug_state";

/// The field of a `number` payload.
#[derive(Debug, Clone)]
enum NumberField {
    Fixed(Arc<str>),
    /// Named by the topic level captured as `capture`: through `names`, else sanitised.
    Capture {
        capture: Arc<str>,
        names: std::collections::HashMap<Box<str>, Arc<str>>,
    },
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
    timestamps: TimestampSpec,
    timestamp_fallback: TimestampFallback,
    max_payload: usize,
    pub(crate) max_series: usize,
}

impl Decoder {
    /// Compiles one subscription on its own; without `max_payload_size` its limit is 1 MiB.
    pub fn compile(index: usize, cfg: &SubscriptionConfig) -> Result<Decoder, MqttConfigError> {
        Self::compile_with(index, cfg, DEFAULT_MAX_PAYLOAD_SIZE)
    }

    /// Compiles one subscription of an `[mqtt]` table whose payload limit (`max_payload_size`
    /// there, inherited where the subscription sets none) is `inherited_max_payload`.
    pub fn compile_with(
        index: usize,
        cfg: &SubscriptionConfig,
        inherited_max_payload: usize,
    ) -> Result<Decoder, MqttConfigError> {
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
        match (cfg.format, cfg.field_type) {
            (PayloadFormat::Json, Some(_)) => {
                return Err(err(
                    "type",
                    "applies to format = \"number\"; for json give each field its type, e.g. \
                     fields = { seq = { path = \"seq\", type = \"integer\" } }"
                        .into(),
                ))
            }
            (PayloadFormat::LineProtocol, Some(_)) => {
                return Err(err(
                    "type",
                    "applies to format = \"number\"; line protocol spells each field's type \
                     (1.5, 2i, 3u, t, \"text\")"
                        .into(),
                ))
            }
            _ => {}
        }
        if let Some(max) = cfg.max_payload_size {
            check_max_payload(max).map_err(|p| err("max_payload_size", p.into()))?;
        }

        let sparkplug_only = |key: &'static str, set: bool| {
            if set && cfg.format != PayloadFormat::SparkplugB {
                Err(err(key, "only applies to format = \"sparkplug_b\"".into()))
            } else {
                Ok(())
            }
        };
        sparkplug_only("metric_names", !cfg.metric_names.is_empty())?;
        sparkplug_only("unknown_metrics", cfg.unknown_metrics.is_some())?;
        json_only("points", cfg.points.is_some())?;
        json_only("each", !cfg.each.is_empty())?;
        json_only("timestamp_format", cfg.timestamp_format.is_some())?;
        json_only("timestamp_timezone", cfg.timestamp_timezone.is_some())?;
        let timestamps = TimestampSpec::compile(
            cfg.timestamp_unit,
            cfg.timestamp_format.as_deref(),
            cfg.timestamp_timezone.as_deref(),
        )
        .map_err(|(key, problem)| err(key, problem))?;
        if cfg.states.is_some() && cfg.format != PayloadFormat::Number {
            return Err(err(
                "states",
                "applies to format = \"number\"; for json give the field its states, e.g. \
                 fields = { relay = { path = \"POWER\", states = \"default\" } }"
                    .into(),
            ));
        }

        let kind = match cfg.format {
            PayloadFormat::Number => {
                if cfg.field.is_empty() {
                    return Err(err("field", "must not be empty".into()));
                }
                let field = match cfg
                    .field
                    .strip_prefix('{')
                    .and_then(|f| f.strip_suffix('}'))
                {
                    Some(capture) => {
                        if !template.capture_names().any(|c| c == capture) {
                            return Err(err(
                                "field",
                                format!(
                                    "names the topic level {{{capture}}}, which the topic \
                                     template does not capture"
                                ),
                            ));
                        }
                        let mut names = std::collections::HashMap::new();
                        for (level, f) in &cfg.field_names {
                            if f.is_empty() {
                                return Err(err(
                                    "field_names",
                                    format!("{level:?}: the field name is empty"),
                                ));
                            }
                            names.insert(Box::from(level.as_str()), Arc::from(f.as_str()));
                        }
                        NumberField::Capture {
                            capture: Arc::from(capture),
                            names,
                        }
                    }
                    None => {
                        if !cfg.field_names.is_empty() {
                            return Err(err(
                                "field_names",
                                "only applies with field = \"{capture}\" (a field named by \
                                 a topic level)"
                                    .into(),
                            ));
                        }
                        NumberField::Fixed(Arc::from(cfg.field.as_str()))
                    }
                };
                Kind::Number {
                    field,
                    conv: ValueConv::compile(cfg.field_type, cfg.states.as_ref())
                        .map_err(|e| err("states", e))?,
                }
            }
            PayloadFormat::LineProtocol => Kind::LineProtocol,
            PayloadFormat::SparkplugB => {
                let mut names = std::collections::HashMap::new();
                for (metric, f) in &cfg.metric_names {
                    if f.is_empty() {
                        return Err(err(
                            "metric_names",
                            format!("{metric:?}: the field name is empty"),
                        ));
                    }
                    names.insert(Box::from(metric.as_str()), Arc::from(f.as_str()));
                }
                let unknown = cfg.unknown_metrics.unwrap_or(UnknownPoints::Keep);
                if unknown == UnknownPoints::Drop && names.is_empty() {
                    return Err(err(
                        "unknown_metrics",
                        "\"drop\" without metric_names would store nothing; list the metrics \
                         in metric_names or keep them"
                            .into(),
                    ));
                }
                Kind::SparkplugB {
                    births: Births::default(),
                    names,
                    unknown,
                }
            }
            PayloadFormat::Json => {
                if cfg.fields.is_empty() && cfg.points.is_none() && cfg.each.is_empty() {
                    return Err(err(
                        "fields",
                        "json needs at least one field, e.g. fields = { temperature = \"temp\" }, \
                         or a [mqtt.subscription.points] table"
                            .into(),
                    ));
                }
                let mut fields = Vec::new();
                for (name, spec) in &cfg.fields {
                    if name.is_empty() {
                        return Err(err("fields", "field names must not be empty".into()));
                    }
                    let path = JsonPath::parse(&spec.path).map_err(|e| err("fields", e))?;
                    let conv = ValueConv::compile(spec.field_type, spec.states.as_ref())
                        .and_then(|c| c.with_numeric(&spec.numeric))
                        .map_err(|e| err("fields", format!("field {name:?}: {e}")))?;
                    fields.push(JsonField {
                        name: Arc::from(name.as_str()),
                        path,
                        conv,
                    });
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
                let points = cfg
                    .points
                    .as_ref()
                    .map(|p| PointList::compile(p).map(Box::new))
                    .transpose()
                    .map_err(|e| err("points", e))?;
                let each = cfg
                    .each
                    .iter()
                    .enumerate()
                    .map(|(n, e)| EachList::compile(n, e))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err("each", e))?;
                let flat = if points.is_none() && each.is_empty() {
                    FlatKeys::for_paths(
                        fields
                            .iter()
                            .map(|f| &f.path)
                            .chain(tags.iter().map(|(_, p)| p))
                            .chain(timestamp.iter()),
                    )
                } else {
                    None
                };
                Kind::Json {
                    fields,
                    tags,
                    timestamp,
                    parse_numeric_strings: cfg.parse_numeric_strings,
                    points,
                    each,
                    flat,
                }
            }
        };

        // InfluxDB 3 (and sane queries) forbid a tag and a field with the same name.
        let mut field_names: Vec<&str> = match &kind {
            Kind::Number {
                field: NumberField::Fixed(field),
                ..
            } => vec![field.as_ref()],
            Kind::Number { .. } => Vec::new(),
            Kind::Json { fields, .. } => fields.iter().map(|f| f.name.as_ref()).collect(),
            Kind::LineProtocol | Kind::SparkplugB { .. } => Vec::new(),
        };
        let point_list = match &kind {
            Kind::Json { points, .. } => points.as_deref(),
            _ => None,
        };
        if let Some(pl) = point_list {
            let parent_fields = field_names.len();
            for f in pl.field_names() {
                if field_names[..parent_fields].contains(&f) && pl.name_tag().is_none() {
                    return Err(err(
                        "points",
                        format!(
                            "field `{f}` is written both by `fields` and by a known point; \
                             give one of them another name"
                        ),
                    ));
                }
                field_names.push(f);
            }
        }
        let each_lists: &[EachList] = match &kind {
            Kind::Json { each, .. } => each,
            _ => &[],
        };
        for e in each_lists {
            field_names.extend(e.fields.iter().map(|(n, _, _)| &**n));
        }
        let tag_names = cfg
            .tags
            .keys()
            .map(String::as_str)
            .chain(template.capture_names())
            .chain(cfg.tag_paths.keys().map(String::as_str))
            .chain(point_list.into_iter().flat_map(|p| p.tag_names()))
            .chain(each_lists.iter().flat_map(|e| e.tag_names()));
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
            timestamps,
            timestamp_fallback: cfg.timestamp_fallback,
            max_payload: cfg.max_payload_size.unwrap_or(inherited_max_payload),
            max_series: cfg.max_series,
        })
    }

    /// Paths that pick an array element by its position (`points.0.value`): a device that
    /// reorders or inserts elements moves another value under the name. One line each, for
    /// `sitewatch check` and the start-up log.
    pub fn positional_warnings(&self) -> Vec<String> {
        let Kind::Json {
            fields,
            tags,
            timestamp,
            ..
        } = &self.kind
        else {
            return Vec::new();
        };
        let named = fields
            .iter()
            .map(|f| (format!("fields.{}", f.name), &f.path))
            .chain(tags.iter().map(|(n, p)| (format!("tag_paths.{n}"), p)))
            .chain(timestamp.iter().map(|p| ("timestamp".to_string(), p)));
        named
            .filter_map(|(key, path)| {
                let prefix = path.positional_prefix()?;
                Some(format!(
                    "mqtt.subscription[{}] ({:?}): {key}: path {:?} picks `{prefix}` by \
                     position; if the device reorders or inserts elements, another value is \
                     stored under this name. Where the elements carry a name, map them by it \
                     with [mqtt.subscription.points] (mappings/mqtt/README.md, \"Point lists\")",
                    self.index,
                    self.template.as_str(),
                    path.as_str()
                ))
            })
            .collect()
    }

    /// Whether a `no_fields` error means "a message of a shape this subscription does not
    /// map" (json: another message type on the same topic, such as Shelly's `NotifyEvent`),
    /// which is counted quietly rather than as a decode error.
    pub(crate) fn maps_shapes(&self) -> bool {
        // Sparkplug: STATE messages of host applications on `spBv1.0/#` are not telemetry.
        matches!(self.kind, Kind::Json { .. } | Kind::SparkplugB { .. })
    }

    /// The subscription's label (for metrics and logs).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn template(&self) -> &TopicTemplate {
        &self.template
    }

    /// Decodes one payload received on `topic`, whose template captures are `captures`.
    /// `recv_ns` is used where the payload carries no timestamp. Field values dropped for
    /// their type are left out silently; [`Decoder::decode_into`] reports them.
    pub fn decode(
        &self,
        topic: &str,
        captures: &[(Arc<str>, Arc<str>)],
        payload: &[u8],
        recv_ns: i64,
    ) -> Result<Vec<Sample>, DecodeError> {
        self.decode_into(
            topic,
            captures,
            payload,
            recv_ns,
            &mut DecodeNotes::default(),
        )
    }

    /// Like [`Decoder::decode`], and appends to `notes` every field value dropped from a point
    /// (it does not fit the field's type) and every point dropped from a point list, also when
    /// the whole payload fails.
    pub fn decode_into(
        &self,
        topic: &str,
        captures: &[(Arc<str>, Arc<str>)],
        payload: &[u8],
        recv_ns: i64,
        notes: &mut DecodeNotes,
    ) -> Result<Vec<Sample>, DecodeError> {
        let fail = |reason: DecodeReason, detail: String| DecodeError {
            topic: topic.to_string(),
            reason,
            detail,
        };
        // First, before anything touches the bytes: an oversized payload is never copied.
        if payload.len() > self.max_payload {
            return Err(fail(
                DecodeReason::Oversized,
                format!(
                    "{} bytes, over max_payload_size = {}",
                    payload.len(),
                    self.max_payload
                ),
            ));
        }
        if let Kind::SparkplugB {
            births,
            names,
            unknown,
        } = &self.kind
        {
            return self.decode_sparkplug(
                topic, captures, payload, recv_ns, births, names, *unknown, notes, &fail,
            );
        }
        let text = std::str::from_utf8(payload).map_err(|e| {
            // Only the start is converted for the message, not a whole large payload.
            let head = &payload[..payload.len().min(256)];
            fail(
                DecodeReason::InvalidUtf8,
                format!(
                    "{e}; payload starts {}",
                    preview(&String::from_utf8_lossy(head))
                ),
            )
        })?;
        match &self.kind {
            Kind::Number { field, conv } => {
                let ty = conv.field_type();
                let value = match conv.apply_text(text) {
                    Some(Ok(v)) => v,
                    Some(Err(reason)) => {
                        return Err(fail(
                            reason,
                            format!(
                                "{} is none of the states {}",
                                preview(text.trim()),
                                conv.state_words().unwrap_or_default()
                            ),
                        ))
                    }
                    None => parse_number_payload(text, ty)
                        .map_err(|reason| fail(reason, number_payload_problem(text, ty, reason)))?,
                };
                let (name, tags) = match field {
                    NumberField::Fixed(name) => {
                        (name.clone(), self.tags(captures, std::iter::empty()))
                    }
                    NumberField::Capture { capture, names } => {
                        let level = captures
                            .iter()
                            .find(|(k, _)| k == capture)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default();
                        let name = match names.get(&*level) {
                            Some(n) => n.clone(),
                            None => Arc::from(sanitise(&level).ok_or_else(|| {
                                fail(
                                    DecodeReason::NoFields,
                                    format!(
                                        "topic level {{{capture}}} = {level:?} gives no field name"
                                    ),
                                )
                            })?),
                        };
                        let others: Vec<_> = captures
                            .iter()
                            .filter(|(k, _)| k != capture)
                            .cloned()
                            .collect();
                        (name, self.tags(&others, std::iter::empty()))
                    }
                };
                Ok(vec![Sample::new(
                    SeriesKey::new(self.measurement.clone(), tags),
                    recv_ns,
                )
                .with_field(name, value)])
            }
            Kind::Json {
                fields,
                tags,
                timestamp,
                parse_numeric_strings,
                points,
                each,
                flat,
            } => {
                let malformed = |e: serde_json::Error| {
                    fail(
                        DecodeReason::MalformedJson,
                        format!("{e}; payload starts {}", preview(text)),
                    )
                };
                let errors_before = notes.field_errors.len();
                let mut samples = Vec::new();
                let mut list_found = false;
                let flat = match flat {
                    Some(keys) => keys.parse(text).map_err(malformed)?.map(|s| (keys, s)),
                    None => None,
                };
                let json = JsonPaths {
                    fields,
                    tags,
                    timestamp: timestamp.as_ref(),
                    parse_numeric_strings: *parse_numeric_strings,
                };
                if let Some((keys, slots)) = &flat {
                    let get = |p: &JsonPath| keys.get(slots, p);
                    if let Some(sample) =
                        self.json_sample(get, &json, captures, recv_ns, notes, &fail)?
                    {
                        samples.push(sample);
                    }
                } else {
                    let doc: Value = serde_json::from_str(text).map_err(malformed)?;
                    let elements: &[Value] = match &doc {
                        Value::Array(items) if !fields.is_empty() => items,
                        Value::Array(_) => &[],
                        other => std::slice::from_ref(other),
                    };
                    samples.reserve(elements.len());
                    for element in elements {
                        let get = |p: &JsonPath| p.get(element);
                        if let Some(sample) =
                            self.json_sample(get, &json, captures, recv_ns, notes, &fail)?
                        {
                            samples.push(sample);
                        }
                    }
                    if let Some(pl) = points {
                        list_found = self.decode_points(
                            pl,
                            &doc,
                            &json,
                            captures,
                            recv_ns,
                            notes,
                            &mut samples,
                        );
                    }
                    for e in each {
                        self.decode_each(e, &doc, &json, captures, recv_ns, notes, &mut samples);
                    }
                }
                let field_errors = &notes.field_errors;
                if samples.is_empty() {
                    let dropped = field_errors.len() - errors_before;
                    if dropped > 0 {
                        return Err(fail(
                            DecodeReason::NoValidFields,
                            format!(
                                "{dropped} field value(s) dropped for their type and no other \
                                 field left; payload starts {}",
                                preview(text)
                            ),
                        ));
                    }
                    let mut wanted: Vec<&str> = fields.iter().map(|f| f.path.as_str()).collect();
                    wanted.extend(each.iter().map(|e| e.path.as_str()));
                    let points_note = match points {
                        Some(pl) if !list_found => {
                            wanted.push(pl.path.as_str());
                            " (the points path holds no array or object)"
                        }
                        Some(_) => " (no point of the list is mapped; see unknown points)",
                        None => "",
                    };
                    return Err(fail(
                        DecodeReason::NoFields,
                        format!(
                            "none of the paths {wanted:?} holds a number, bool or string\
                             {points_note}; payload starts {}",
                            preview(text)
                        ),
                    ));
                }
                Ok(samples)
            }
            Kind::LineProtocol => self.decode_line_protocol(text, captures, recv_ns, notes, &fail),
            Kind::SparkplugB { .. } => unreachable!("decoded before the UTF-8 check"),
        }
    }

    /// One sample from one JSON element (the payload object, or an element of a payload
    /// array); `get` reads a path in it, from the document tree or the flat slots. `None`:
    /// no field of the element is mapped.
    fn json_sample<'v>(
        &self,
        get: impl Fn(&JsonPath) -> Option<&'v Value>,
        json: &JsonPaths<'_>,
        captures: &[(Arc<str>, Arc<str>)],
        recv_ns: i64,
        notes: &mut DecodeNotes,
        fail: &dyn Fn(DecodeReason, String) -> DecodeError,
    ) -> Result<Option<Sample>, DecodeError> {
        let mut sample_fields = Vec::with_capacity(json.fields.len());
        for f in json.fields {
            let Some(v) = get(&f.path) else {
                continue;
            };
            match f.conv.apply(v, json.parse_numeric_strings) {
                Ok(Some(value)) => sample_fields.push((f.name.clone(), value)),
                Ok(None) => {}
                Err(reason) => notes.field_errors.push(FieldError {
                    field: f.name.clone(),
                    reason,
                    detail: field_problem(
                        &f.name,
                        f.path.as_str(),
                        &f.conv,
                        v,
                        json.parse_numeric_strings,
                        reason,
                    ),
                }),
            }
        }
        if sample_fields.is_empty() {
            return Ok(None);
        }
        let ts = match json.timestamp.and_then(&get) {
            None | Some(Value::Null) => recv_ns,
            Some(v) => {
                let checked = self.payload_timestamp(v, json.timestamp, recv_ns);
                self.or_receive_time(checked, recv_ns, notes)
                    .map_err(|(reason, d)| fail(reason, d))?
            }
        };
        let payload_tags = json
            .tags
            .iter()
            .filter_map(|(name, path)| get(path).and_then(json_tag).map(|v| (name.clone(), v)));
        let tagset = self.tags(captures, payload_tags);
        let mut sample = Sample::new(SeriesKey::new(self.measurement.clone(), tagset), ts);
        sample.fields = sample_fields;
        Ok(Some(sample))
    }

    /// With `timestamp_fallback = "receive_time"`, a timestamp error becomes receive time
    /// (noted for the subscriber to count); otherwise it stays an error.
    fn or_receive_time(
        &self,
        checked: Result<i64, (DecodeReason, String)>,
        recv_ns: i64,
        notes: &mut DecodeNotes,
    ) -> Result<i64, (DecodeReason, String)> {
        match (checked, self.timestamp_fallback) {
            (Err(e), TimestampFallback::ReceiveTime) => {
                notes.timestamp_fallbacks.push(e);
                Ok(recv_ns)
            }
            (other, _) => other,
        }
    }

    /// Appends one sample per selected element of `e` in `doc` to `samples`; elements of
    /// several `each` tables with the same measurement, tags and timestamp share a sample.
    #[allow(clippy::too_many_arguments)]
    fn decode_each(
        &self,
        e: &EachList,
        doc: &Value,
        json: &JsonPaths<'_>,
        captures: &[(Arc<str>, Arc<str>)],
        recv_ns: i64,
        notes: &mut DecodeNotes,
        samples: &mut Vec<Sample>,
    ) {
        let (tag_paths, parent_ts_path, parse_numeric_strings) =
            (json.tags, json.timestamp, json.parse_numeric_strings);
        let Some(elements) = e.elements(doc) else {
            return;
        };
        let measurement = e.measurement.clone().unwrap_or(self.measurement.clone());
        let parent_ts = parent_ts_path
            .and_then(|p| p.get(doc))
            .filter(|v| !v.is_null());
        for (key, element) in elements {
            let mut fields = Vec::with_capacity(e.fields.len());
            for (name, path, conv) in &e.fields {
                let Some(v) = path.get(element) else {
                    continue;
                };
                match conv.apply(v, parse_numeric_strings) {
                    Ok(Some(value)) => fields.push((name.clone(), value)),
                    Ok(None) => {}
                    Err(reason) => notes.field_errors.push(FieldError {
                        field: name.clone(),
                        reason,
                        detail: field_problem(
                            name,
                            &format!(
                                "{:?} of element {key} of {:?}",
                                path.as_str(),
                                e.path.as_str()
                            ),
                            conv,
                            v,
                            parse_numeric_strings,
                            reason,
                        ),
                    }),
                }
            }
            if fields.is_empty() {
                continue;
            }
            let (ts_value, ts_path) = match e.timestamp.as_ref().and_then(|p| p.get(element)) {
                Some(v) if !v.is_null() => (Some(v), e.timestamp.as_ref()),
                _ => (parent_ts, parent_ts_path),
            };
            let ts = match self.element_timestamp(ts_value, ts_path, recv_ns, notes) {
                Ok(ns) => ns,
                Err((reason, detail)) => {
                    notes.field_errors.push(FieldError {
                        field: fields[0].0.clone(),
                        reason,
                        detail: format!("element {key} of {:?} dropped: {detail}", e.path.as_str()),
                    });
                    continue;
                }
            };
            let parent_tags = tag_paths
                .iter()
                .filter_map(|(n, p)| p.get(doc).and_then(json_tag).map(|v| (n.clone(), v)));
            let element_tags = e
                .tags
                .iter()
                .filter_map(|(n, p)| p.get(element).and_then(json_tag).map(|v| (n.clone(), v)));
            let key_tag = e.key_tag.clone().map(|t| (t, key.clone()));
            let tagset = self.tags(captures, parent_tags.chain(element_tags).chain(key_tag));
            for (name, value) in fields {
                if !put_field(samples, 0, &measurement, &tagset, ts, name.clone(), value) {
                    notes.field_errors.push(FieldError {
                        field: name.clone(),
                        reason: DecodeReason::DuplicatePoint,
                        detail: format!(
                            "element {key} of {:?} sets field {name:?} of a sample that \
                             already has it; the first is kept",
                            e.path.as_str()
                        ),
                    });
                }
            }
        }
    }

    /// Sparkplug B: metrics as fields (one sample per timestamp) plus `sparkplug_state`
    /// rows for BIRTH and DEATH.
    #[allow(clippy::too_many_arguments)]
    fn decode_sparkplug(
        &self,
        topic: &str,
        captures: &[(Arc<str>, Arc<str>)],
        payload: &[u8],
        recv_ns: i64,
        births: &Births,
        names: &std::collections::HashMap<Box<str>, Arc<str>>,
        unknown: UnknownPoints,
        notes: &mut DecodeNotes,
        fail: &dyn Fn(DecodeReason, String) -> DecodeError,
    ) -> Result<Vec<Sample>, DecodeError> {
        let Some(t) = SparkplugTopic::parse(topic) else {
            return Err(fail(
                DecodeReason::NoFields,
                "not a Sparkplug B topic (spBv1.0/<group>/<NBIRTH|NDATA|NDEATH>/<edge node>, \
                 or .../<DBIRTH|DDATA|DDEATH>/<edge node>/<device>)"
                    .into(),
            ));
        };
        let decoded = births.decode(&t, payload).map_err(|e| {
            let reason = if e.starts_with("BIRTH refused") {
                DecodeReason::TooManyDevices
            } else {
                DecodeReason::MalformedProtobuf
            };
            fail(reason, e)
        })?;
        let device = t.device.unwrap_or(t.edge);
        let base = [
            (Arc::<str>::from("group"), Arc::<str>::from(t.group)),
            (Arc::from("edge_node"), Arc::from(t.edge)),
        ];
        let mut samples = Vec::new();
        for (dev, up) in &decoded.health {
            let tags = self.tags(
                captures,
                base.iter()
                    .cloned()
                    .chain([(Arc::from("device"), dev.clone())]),
            );
            samples.push(
                Sample::new(SeriesKey::new(SPARKPLUG_STATE_MEASUREMENT, tags), recv_ns)
                    .with_field("up", FieldValue::Bool(*up)),
            );
        }
        if decoded.unresolved > 0 {
            notes.nameless_points.push(format!(
                "{} metric(s) by an alias no BIRTH of {topic:?} declared (the BIRTH was missed; \
                 the host application should request a rebirth)",
                decoded.unresolved
            ));
        }
        let tags = self.tags(
            captures,
            base.iter()
                .cloned()
                .chain([(Arc::from("device"), Arc::from(device))]),
        );
        let first = samples.len();
        for (name, value, ts_ms) in decoded.metrics {
            let field = match names.get(&*name) {
                Some(f) => f.clone(),
                None => match (unknown, sanitise(&name)) {
                    (UnknownPoints::Keep, Some(f)) => Arc::from(f),
                    (UnknownPoints::Keep, None) => {
                        notes.nameless_points.push(name.to_string());
                        continue;
                    }
                    (UnknownPoints::Drop, _) => {
                        notes.unknown_points.push(name.to_string());
                        continue;
                    }
                },
            };
            let value = match value {
                Ok(v) => v,
                Err(why) => {
                    notes.field_errors.push(FieldError {
                        field: field.clone(),
                        reason: DecodeReason::TypeMismatch,
                        detail: format!("Sparkplug metric {name:?}: {why}"),
                    });
                    continue;
                }
            };
            let ts = match ts_ms.or(decoded.payload_ts_ms) {
                None => recv_ns,
                Some(ms) => {
                    let checked = i64::try_from(ms)
                        .ok()
                        .and_then(|ms| ms.checked_mul(1_000_000))
                        .ok_or_else(|| {
                            (
                                DecodeReason::BadTimestamp,
                                format!("metric {name:?}: timestamp {ms} ms overflows"),
                            )
                        })
                        .and_then(|ns| {
                            check_timestamp(ns, recv_ns)
                                .map_err(|d| (DecodeReason::TimestampOutOfRange, d))
                        });
                    match self.or_receive_time(checked, recv_ns, notes) {
                        Ok(ns) => ns,
                        Err((reason, detail)) => {
                            notes.field_errors.push(FieldError {
                                field: field.clone(),
                                reason,
                                detail,
                            });
                            continue;
                        }
                    }
                }
            };
            match samples[first..].iter_mut().find(|s| s.timestamp_ns == ts) {
                Some(s) if s.fields.iter().any(|(k, _)| *k == field) => {
                    notes.field_errors.push(FieldError {
                        field: field.clone(),
                        reason: DecodeReason::DuplicatePoint,
                        detail: format!(
                            "metric {name:?} maps to field {field:?}, which another metric of \
                             the payload with the same timestamp set; the first is kept"
                        ),
                    });
                }
                Some(s) => s.fields.push((field, value)),
                None => {
                    let mut s =
                        Sample::new(SeriesKey::new(self.measurement.clone(), tags.clone()), ts);
                    s.fields.push((field, value));
                    samples.push(s);
                }
            }
        }
        Ok(samples)
    }

    /// The timestamp of one element of a point list or `each` table: its own, else the
    /// parent's (`ts_value` is whichever applies), else receive time.
    fn element_timestamp(
        &self,
        ts_value: Option<&Value>,
        ts_path: Option<&JsonPath>,
        recv_ns: i64,
        notes: &mut DecodeNotes,
    ) -> Result<i64, (DecodeReason, String)> {
        match ts_value {
            None => Ok(recv_ns),
            Some(v) => {
                self.or_receive_time(self.payload_timestamp(v, ts_path, recv_ns), recv_ns, notes)
            }
        }
    }

    /// A payload timestamp at `path` (for messages) as ns, checked against receive time.
    fn payload_timestamp(
        &self,
        v: &Value,
        path: Option<&JsonPath>,
        recv_ns: i64,
    ) -> Result<i64, (DecodeReason, String)> {
        let ns = self.timestamps.parse(v).map_err(|d| {
            (
                DecodeReason::BadTimestamp,
                format!(
                    "at path {:?}: {d}",
                    path.map(JsonPath::as_str).unwrap_or_default()
                ),
            )
        })?;
        check_timestamp(ns, recv_ns).map_err(|d| (DecodeReason::TimestampOutOfRange, d))
    }

    /// Appends the samples of the point list `pl` in `doc` to `samples`: points with the same
    /// tags and timestamp share one sample. `false` when `doc` has no list at `pl.path`.
    #[allow(clippy::too_many_arguments)]
    fn decode_points(
        &self,
        pl: &PointList,
        doc: &Value,
        json: &JsonPaths<'_>,
        captures: &[(Arc<str>, Arc<str>)],
        recv_ns: i64,
        notes: &mut DecodeNotes,
        samples: &mut Vec<Sample>,
    ) -> bool {
        let (tag_paths, parent_ts_path, parse_numeric_strings) =
            (json.tags, json.timestamp, json.parse_numeric_strings);
        let mut skipped = Vec::new();
        let Some(list) = pl.extract(doc, &mut skipped) else {
            return false;
        };
        for s in skipped {
            match s {
                Skipped::Unknown(raw) => notes.unknown_points.push(raw),
                Skipped::NoName(what) => notes.nameless_points.push(what),
            }
        }
        let first = samples.len();
        let parent_ts = parent_ts_path
            .and_then(|p| p.get(doc))
            .filter(|v| !v.is_null());
        let parent_tags: Vec<(Arc<str>, Arc<str>)> = tag_paths
            .iter()
            .filter_map(|(name, path)| path.get(doc).and_then(json_tag).map(|v| (name.clone(), v)))
            .collect();
        for p in list {
            let (field, name_tag) = match pl.name_tag() {
                Some((tag, field)) => (field.clone(), Some((tag.clone(), p.name.clone()))),
                None => (p.name.clone(), None),
            };
            let value = match p.conv.apply(p.value, parse_numeric_strings) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(reason) => {
                    notes.field_errors.push(FieldError {
                        field: field.clone(),
                        reason,
                        detail: field_problem(
                            &field,
                            &format!("point {:?} of {:?}", p.raw, pl.path.as_str()),
                            p.conv,
                            p.value,
                            parse_numeric_strings,
                            reason,
                        ),
                    });
                    continue;
                }
            };
            let (ts_value, ts_path) = match p.timestamp {
                Some(v) => (Some(v), pl.timestamp_path()),
                None => (parent_ts, parent_ts_path),
            };
            let ts = match self.element_timestamp(ts_value, ts_path, recv_ns, notes) {
                Ok(ns) => ns,
                Err((reason, detail)) => {
                    notes.field_errors.push(FieldError {
                        field: field.clone(),
                        reason,
                        detail: format!("point {:?} dropped: {detail}", p.raw),
                    });
                    continue;
                }
            };
            let tagset = self.tags(
                captures,
                parent_tags.iter().cloned().chain(p.tags).chain(name_tag),
            );
            if !put_field(
                samples,
                first,
                &self.measurement,
                &tagset,
                ts,
                field.clone(),
                value,
            ) {
                notes.field_errors.push(FieldError {
                    field: field.clone(),
                    reason: DecodeReason::DuplicatePoint,
                    detail: format!(
                        "point {:?} maps to field {field:?}, which an earlier point of \
                         the same payload already set; the first is kept (map the \
                         points to distinct fields in points.known)",
                        p.raw
                    ),
                });
            }
        }
        true
    }

    fn decode_line_protocol(
        &self,
        text: &str,
        captures: &[(Arc<str>, Arc<str>)],
        recv_ns: i64,
        notes: &mut DecodeNotes,
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
                    let checked = match int_timestamp(raw, self.timestamps.unit()) {
                        None => Err((
                            DecodeReason::BadTimestamp,
                            format!("line {}: timestamp {raw} overflows", n + 1),
                        )),
                        Some(ns) => check_timestamp(ns, recv_ns).map_err(|d| {
                            (
                                DecodeReason::TimestampOutOfRange,
                                format!("line {}: {d}", n + 1),
                            )
                        }),
                    };
                    self.or_receive_time(checked, recv_ns, notes)
                        .map_err(|(reason, d)| fail(reason, d))?
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

/// A `number` payload as the value of a field of type `ty` (`None`: numbers as float,
/// `true`/`false` as bool).
fn parse_number_payload(text: &str, ty: Option<FieldType>) -> Result<FieldValue, DecodeReason> {
    let t = text.trim();
    let boolean = match t {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    match (ty, boolean) {
        (None | Some(FieldType::Bool), Some(b)) => Ok(FieldValue::Bool(b)),
        (Some(FieldType::Bool), None) => Err(DecodeReason::TypeMismatch),
        (Some(FieldType::String), _) if t.is_empty() => Err(DecodeReason::NoFields),
        (Some(FieldType::String), _) => Ok(FieldValue::Str(Arc::from(t))),
        (Some(_), Some(_)) => Err(DecodeReason::TypeMismatch),
        (None, None) => parse_numeric_str(t, FieldType::Float),
        (Some(numeric), None) => parse_numeric_str(t, numeric),
    }
}

/// What a dropped JSON field value was and why it does not fit (for the log line).
fn field_problem(
    name: &str,
    path: &str,
    conv: &ValueConv,
    v: &Value,
    parse_numeric_strings: bool,
    reason: DecodeReason,
) -> String {
    use FieldType as T;
    let got = match v {
        Value::String(s) => format!("string {}", preview(s)),
        Value::Number(n) => format!("number {n}"),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        Value::Null => "null".to_string(),
    };
    let ty = conv.field_type();
    let declared = match ty {
        Some(t) => format!("type = \"{t}\""),
        None => "no declared type".to_string(),
    };
    let states;
    let why = match reason {
        DecodeReason::TypeMismatch => match (ty, v) {
            (None, Value::String(_)) if !parse_numeric_strings => {
                "a field without a type takes numbers and booleans; declare type = \"string\" \
                 to store strings, states = \"default\" for ON/OFF words, or set \
                 parse_numeric_strings = true for quoted numbers"
            }
            (Some(T::Float | T::Integer | T::Unsigned), Value::String(_)) => {
                "quoted numbers are parsed only with parse_numeric_strings = true"
            }
            _ => "does not fit",
        },
        DecodeReason::UnknownState => {
            states = format!(
                "is none of the field's states ({}); add it to `states`",
                conv.state_words().unwrap_or_default()
            );
            &states
        }
        DecodeReason::NotANumber => "is not a number (write numbers with a decimal point)",
        DecodeReason::NotAnInteger => "is not a whole number",
        DecodeReason::OutOfRange => "is out of the type's range",
        DecodeReason::NonFinite => "is not a finite number",
        _ => "does not fit",
    };
    format!("field {name:?} (path {path:?}, {declared}): {got} dropped: {why}")
}

/// Why a `number` payload was rejected (for the log line).
fn number_payload_problem(text: &str, ty: Option<FieldType>, reason: DecodeReason) -> String {
    let expected = match ty {
        None => "a number or true/false",
        Some(FieldType::Float) => "a number (type = \"float\")",
        Some(FieldType::Integer) => "a whole number (type = \"integer\")",
        Some(FieldType::Unsigned) => "a whole number >= 0 (type = \"unsigned\")",
        Some(FieldType::Bool) => "true or false (type = \"bool\")",
        Some(FieldType::String) => "a non-empty text (type = \"string\")",
    };
    format!("expected {expected}, got {} ({reason})", preview(text))
}

fn json_tag(v: &Value) -> Option<Arc<str>> {
    match v {
        Value::String(s) if !s.is_empty() => Some(Arc::from(s.as_str())),
        Value::Number(n) => Some(Arc::from(n.to_string())),
        Value::Bool(b) => Some(Arc::from(if *b { "true" } else { "false" })),
        _ => None,
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

/// Puts `field = value` into the sample of `measurement` and `tags` at `ts` among
/// `samples[from..]` (a new sample if there is none); `false` if that sample already has the
/// field, which keeps its first value.
fn put_field(
    samples: &mut Vec<Sample>,
    from: usize,
    measurement: &Arc<str>,
    tags: &TagSet,
    ts: i64,
    field: Arc<str>,
    value: FieldValue,
) -> bool {
    let slot = samples[from..].iter_mut().find(|s| {
        s.timestamp_ns == ts && s.series.tags == *tags && s.series.measurement == *measurement
    });
    match slot {
        Some(sample) if sample.fields.iter().any(|(k, _)| *k == field) => false,
        Some(sample) => {
            sample.fields.push((field, value));
            true
        }
        None => {
            let mut sample = Sample::new(SeriesKey::new(measurement.clone(), tags.clone()), ts);
            sample.fields.push((field, value));
            samples.push(sample);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::TimestampUnit;
    use super::super::timefmt::decimal_timestamp;
    use super::*;
    use crate::time::parse_rfc3339;
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
            fields = { temp = "sensor.temperature", hum = "readings.1.v", leak = "water_leak", state = { path = "state", type = "string" }, battery = "battery" }
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

    const BMS: &str = r#"
        topic = "bms/{device}/points"
        measurement = "cooling"
        format = "json"
        timestamp = "ts"
        tag_paths = { gateway = "gw" }
        [points]
        path = "points"
        [points.known]
        "CRAH-1 supply air" = "crah1_supply_c"
        "CRAH-1 return air" = "crah1_return_c"
        "CRAH-1 fan" = { field = "crah1_fan_pct", type = "float" }
        "CRAH-1 running" = { field = "crah1_running", states = "default" }
    "#;

    /// The issue's corruption case: a reordered point list still stores every value under
    /// its own name; unknown points are reported, not stored.
    #[test]
    fn reordered_point_list_keeps_every_name() {
        let d = sub(BMS);
        let in_order = br#"{"gw":"bms-gw1","ts":1699999990000,"points":[
            {"name":"CRAH-1 supply air","value":18.2,"unit":"C"},
            {"name":"CRAH-1 return air","value":28.1,"unit":"C"},
            {"name":"CRAH-1 fan","value":"55"},
            {"name":"CRAH-1 running","value":"ON"}]}"#;
        let reordered = br#"{"gw":"bms-gw1","ts":1699999990000,"points":[
            {"name":"CRAH-2 supply air","value":19.0},
            {"name":"CRAH-1 running","value":"OFF"},
            {"name":"CRAH-1 return air","value":28.4,"unit":"C"},
            {"name":"CRAH-1 supply air","value":18.1,"unit":"C"}]}"#;
        let mut caps = Vec::new();
        assert!(d.template.match_topic("bms/crah-1/points", &mut caps));
        let mut notes = DecodeNotes::default();
        let s = d
            .decode_into("bms/crah-1/points", &caps, in_order, NOW, &mut notes)
            .unwrap();
        assert_eq!(s.len(), 1, "one timestamp, one tag set: one sample");
        assert_eq!(
            s[0].fields,
            vec![
                ("crah1_supply_c".into(), FieldValue::Float(18.2)),
                ("crah1_return_c".into(), FieldValue::Float(28.1)),
                ("crah1_running".into(), FieldValue::Bool(true)),
            ]
        );
        // "55" is a string and parse_numeric_strings is off: dropped and reported.
        assert_eq!(
            reasons(&notes.field_errors),
            vec![("crah1_fan_pct", DecodeReason::TypeMismatch)]
        );
        assert!(notes.field_errors[0].detail.contains("CRAH-1 fan"));
        assert_eq!(s[0].timestamp_ns, 1_699_999_990_000_000_000);
        assert_eq!(s[0].series.tags.get("gateway"), Some("bms-gw1"));
        assert_eq!(s[0].series.tags.get("device"), Some("crah-1"));
        let mut notes = DecodeNotes::default();
        let s = d
            .decode_into("bms/crah-1/points", &caps, reordered, NOW, &mut notes)
            .unwrap();
        let mut fields = s[0].fields.clone();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            fields,
            vec![
                ("crah1_return_c".into(), FieldValue::Float(28.4)),
                ("crah1_running".into(), FieldValue::Bool(false)),
                ("crah1_supply_c".into(), FieldValue::Float(18.1)),
            ]
        );
        assert_eq!(notes.unknown_points, vec!["CRAH-2 supply air".to_string()]);
    }

    #[test]
    fn point_lists_group_by_timestamp_and_tags() {
        let d = sub(r#"
            topic = "gw/{device}"
            measurement = "sensor"
            format = "json"
            timestamp = "ts"
            [points]
            path = ""
            tags = { unit = "u" }
            timestamp = "t"
            unknown = "keep"
            [points.known]
            "A" = "a_c"
        "#);
        let payload = br#"{"ts": 1699999990, "A": {"value": 1, "u": "C"}, "Fan Speed": {"value": 2, "u": "%"},
            "B": {"value": 3, "u": "C", "t": 1699999995}, "B2": {"value": 4, "u": "C"}, "junk": {"u": "C"}}"#;
        let s = run(&d, "gw/x", payload).unwrap();
        let got: Vec<(i64, Option<&str>, Vec<&str>)> = s
            .iter()
            .map(|s| {
                (
                    s.timestamp_ns,
                    s.series.tags.get("unit"),
                    s.fields.iter().map(|(k, _)| &**k).collect(),
                )
            })
            .collect();
        // Object entries in key order; "ts" is a point too with unknown = "keep" only if it
        // has a value: it is a plain number, so it is its own value.
        assert_eq!(
            got,
            vec![
                (1_699_999_990_000_000_000, Some("C"), vec!["a_c", "b2"]),
                (1_699_999_995_000_000_000, Some("C"), vec!["b"]),
                (1_699_999_990_000_000_000, Some("%"), vec!["fan_speed"]),
                (1_699_999_990_000_000_000, None, vec!["ts"]),
            ]
        );
    }

    #[test]
    fn point_names_as_tags_and_duplicates() {
        let d = sub(r#"
            topic = "gw/{device}"
            measurement = "sensor"
            format = "json"
            [points]
            path = "p"
            name = "id"
            value = "v"
            name_tag = "sensor"
            unknown = "keep"
            [points.known]
            "40001" = "supply"
        "#);
        let s = run(
            &d,
            "gw/x",
            br#"{"p":[{"id":40001,"v":1.5},{"id":"Return Air","v":2}]}"#,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].series.tags.get("sensor"), Some("supply"));
        assert_eq!(s[0].field("value"), Some(&FieldValue::Float(1.5)));
        assert_eq!(s[1].series.tags.get("sensor"), Some("return_air"));
        // Two points that sanitise to one field: the first wins, the second is reported.
        let d = sub(r#"
            topic = "gw/{device}"
            measurement = "sensor"
            format = "json"
            [points]
            path = "p"
            unknown = "keep"
        "#);
        let (r, errors) = run_typed(
            &d,
            "gw/x",
            br#"{"p":[{"name":"Supply Air","value":1},{"name":"supply-air","value":2}]}"#,
        );
        assert_eq!(
            r.unwrap()[0].fields,
            vec![("supply_air".into(), FieldValue::Float(1.0))]
        );
        assert_eq!(
            reasons(&errors),
            vec![("supply_air", DecodeReason::DuplicatePoint)]
        );
        // No list at the path: no_fields, naming the path.
        let e = run(&d, "gw/x", br#"{"q":[]}"#).unwrap_err();
        assert_eq!(e.reason, DecodeReason::NoFields);
        assert!(e.detail.contains("\"p\""), "{e}");
    }

    #[test]
    fn point_list_config_errors() {
        for (extra, wants) in [
            ("[points]\npath = \"p\"", "would store nothing"),
            (
                "fields = { a_c = \"x\" }\n[points]\npath = \"p\"\nknown = { A = \"a_c\" }",
                "both by `fields` and by a known point",
            ),
            (
                "[points]\npath = \"p\"\nunknown = \"keep\"\ntags = { a_c = \"u\" }\nknown = { A = \"a_c\" }",
                "both a tag and a field",
            ),
        ] {
            let cfg: SubscriptionConfig = toml::from_str(&format!(
                "topic = \"t/{{a}}\"\nmeasurement = \"m\"\nformat = \"json\"\n{extra}"
            ))
            .unwrap();
            let e = Decoder::compile(2, &cfg).unwrap_err().to_string();
            assert!(
                e.contains(wants) && e.contains("subscription[2]") && e.contains("`"),
                "{extra}: {e}"
            );
        }
        let cfg: SubscriptionConfig = toml::from_str(
            "topic = \"t\"\nmeasurement = \"m\"\nformat = \"number\"\n[points]\npath = \"p\"\nunknown = \"keep\"",
        )
        .unwrap();
        let e = Decoder::compile(0, &cfg).unwrap_err().to_string();
        assert!(e.contains("`points`") && e.contains("json"), "{e}");
    }

    #[test]
    fn state_words_become_booleans_and_integers() {
        let d = sub(r#"
            topic = "t/{a}"
            measurement = "m"
            format = "json"
            [fields]
            relay = { path = "POWER", states = "default" }
            door_open = { path = "door", states = "default" }
            mode = { path = "mode", states = { auto = 0, cool = 1, heat = 2 } }
        "#);
        let (r, errors) = run_typed(
            &d,
            "t/x",
            br#"{"POWER":"ON","door":"closed","mode":"Cool"}"#,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let s = &r.unwrap()[0];
        assert_eq!(s.field("relay"), Some(&FieldValue::Bool(true)));
        assert_eq!(s.field("door_open"), Some(&FieldValue::Bool(false)));
        assert_eq!(s.field("mode"), Some(&FieldValue::Int(1)));
        let (r, errors) = run_typed(&d, "t/x", br#"{"POWER":"TOGGLE","door":true,"mode":"dry"}"#);
        assert_eq!(
            r.unwrap()[0].fields,
            vec![("door_open".into(), FieldValue::Bool(true))]
        );
        assert_eq!(
            reasons(&errors),
            vec![
                ("mode", DecodeReason::UnknownState),
                ("relay", DecodeReason::UnknownState)
            ]
        );
        assert!(
            errors[1].detail.contains("TOGGLE") && errors[1].detail.contains("on, off"),
            "{}",
            errors[1].detail
        );
        // A bare ON/OFF payload (Tasmota stat/.../POWER, ESPHome binary sensors).
        let d = sub("topic=\"t/{a}\"\nformat=\"number\"\nmeasurement=\"m\"\nfield=\"relay\"\nstates=\"default\"");
        assert_eq!(
            run(&d, "t/x", b"OFF").unwrap()[0].field("relay"),
            Some(&FieldValue::Bool(false))
        );
        assert_eq!(
            run(&d, "t/x", b"true").unwrap()[0].field("relay"),
            Some(&FieldValue::Bool(true))
        );
        let e = run(&d, "t/x", b"blink").unwrap_err();
        assert_eq!(e.reason, DecodeReason::UnknownState);
        assert!(e.to_string().contains("blink") && e.to_string().contains("t/x"));
        // Mismatched declarations are config errors.
        for src in [
            "topic=\"t\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={r={path=\"r\",type=\"float\",states=\"default\"}}",
            "topic=\"t\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={r=\"r\"}\nstates=\"default\"",
        ] {
            let cfg: SubscriptionConfig = toml::from_str(src).unwrap();
            let e = Decoder::compile(0, &cfg).unwrap_err().to_string();
            assert!(e.contains("states"), "{e}");
        }
    }

    #[test]
    fn positional_paths_are_warned_about() {
        let d = sub(r#"
            topic = "bms/{device}"
            measurement = "m"
            format = "json"
            fields = { supply_c = "points.0.value", inlet_c = "temp.inlet" }
            tag_paths = { unit = "points.0.unit" }
        "#);
        let w = d.positional_warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("fields.supply_c")
                && w[0].contains("\"points.0.value\"")
                && w[0].contains("subscription[0]")
                && w[0].contains("[mqtt.subscription.points]"),
            "{}",
            w[0]
        );
        assert!(w[1].contains("tag_paths.unit"), "{}", w[1]);
        assert!(sub(BMS).positional_warnings().is_empty());
    }

    #[test]
    fn local_timestamps_and_the_receive_time_fallback() {
        let d = sub(r#"
            topic = "tele/{device}/SENSOR"
            measurement = "environment"
            format = "json"
            fields = { temperature_c = "AM2301.Temperature" }
            timestamp = "Time"
            timestamp_timezone = "Europe/Berlin"
        "#);
        // Tasmota's local time, 2023-11-14 23:13:20 CET = 22:13:20 UTC.
        let s = run(
            &d,
            "tele/t1/SENSOR",
            br#"{"Time":"2023-11-14T23:13:20","AM2301":{"Temperature":21.3}}"#,
        )
        .unwrap();
        assert_eq!(s[0].timestamp_ns, 1_700_000_000_000_000_000);
        let e = run(
            &d,
            "tele/t1/SENSOR",
            br#"{"Time":"soon","AM2301":{"Temperature":1}}"#,
        )
        .unwrap_err();
        assert_eq!(e.reason, DecodeReason::BadTimestamp);
        assert!(
            e.detail.contains("\"Time\"") && e.detail.contains("soon"),
            "{e}"
        );

        let d = sub(r#"
            topic = "t/{a}"
            measurement = "m"
            format = "json"
            fields = { v = "v" }
            timestamp = "ts"
            timestamp_format = "%d.%m.%Y %H:%M:%S"
            timestamp_timezone = "UTC"
            timestamp_fallback = "receive_time"
        "#);
        let mut caps = Vec::new();
        d.template.match_topic("t/x", &mut caps);
        let mut notes = DecodeNotes::default();
        let s = d
            .decode_into(
                "t/x",
                &caps,
                br#"{"v":1,"ts":"14.11.2023 22:13:20"}"#,
                NOW + 1,
                &mut notes,
            )
            .unwrap();
        assert_eq!(s[0].timestamp_ns, 1_700_000_000_000_000_000);
        assert!(notes.timestamp_fallbacks.is_empty());
        // Unreadable, and a device clock in 1970: receive time, noted with the reason.
        for (ts, reason) in [
            ("\"garbage\"", DecodeReason::BadTimestamp),
            ("\"01.01.1970 00:00:10\"", DecodeReason::TimestampOutOfRange),
        ] {
            let mut notes = DecodeNotes::default();
            let payload = format!("{{\"v\":1,\"ts\":{ts}}}");
            let s = d
                .decode_into("t/x", &caps, payload.as_bytes(), NOW, &mut notes)
                .unwrap();
            assert_eq!(s[0].timestamp_ns, NOW);
            assert_eq!(notes.timestamp_fallbacks.len(), 1);
            assert_eq!(notes.timestamp_fallbacks[0].0, reason);
        }
        // Config errors name the key.
        for (extra, key) in [
            (
                "timestamp_timezone = \"Nowhere/Else\"",
                "timestamp_timezone",
            ),
            ("timestamp_format = \"%Y-%m-%d %H:%M\"", "timestamp_format"),
        ] {
            let cfg: SubscriptionConfig = toml::from_str(&format!(
                "topic = \"t\"\nmeasurement = \"m\"\nformat = \"json\"\nfields = {{ v = \"v\" }}\n{extra}"
            ))
            .unwrap();
            let e = Decoder::compile(0, &cfg).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{e}");
        }
        let d = sub("topic=\"lp\"\nformat=\"line_protocol\"\ntimestamp_fallback=\"receive_time\"");
        assert_eq!(run(&d, "lp", b"m v=1 12").unwrap()[0].timestamp_ns, NOW);
    }

    #[test]
    fn one_sample_per_element() {
        // TTN v3: one sample per receiving gateway, the uplink's own fields on their own.
        let d = sub(r#"
            topic = "v3/{application}/devices/{device}/up"
            measurement = "environment"
            format = "json"
            timestamp = "received_at"
            fields = { temperature_c = "uplink_message.decoded_payload.temperature" }
            [[each]]
            path = "uplink_message.rx_metadata"
            measurement = "lorawan_gateway"
            fields = { rssi_dbm = "rssi", snr_db = "snr" }
            tags = { gateway = "gateway_ids.gateway_id" }
            timestamp = "time"
        "#);
        let payload = br#"{"end_device_ids":{"device_id":"dev1"},"received_at":"2023-11-14T22:13:20Z",
            "uplink_message":{"decoded_payload":{"temperature":21.5},"rx_metadata":[
              {"gateway_ids":{"gateway_id":"gtw1"},"time":"2023-11-14T22:13:19.5Z","rssi":-35,"snr":5.2},
              {"gateway_ids":{"gateway_id":"gtw2"},"rssi":-101,"snr":-3}]}}"#;
        let s = run(&d, "v3/app1@ttn/devices/dev1/up", payload).unwrap();
        let got: Vec<_> = s
            .iter()
            .map(|s| {
                (
                    s.series.measurement.to_string(),
                    s.series.tags.get("gateway").map(str::to_string),
                    s.timestamp_ns,
                    s.fields.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "environment".to_string(),
                    None,
                    1_700_000_000_000_000_000,
                    vec![("temperature_c".into(), FieldValue::Float(21.5))]
                ),
                (
                    "lorawan_gateway".to_string(),
                    Some("gtw1".to_string()),
                    1_699_999_999_500_000_000,
                    vec![
                        ("rssi_dbm".into(), FieldValue::Float(-35.0)),
                        ("snr_db".into(), FieldValue::Float(5.2))
                    ]
                ),
                (
                    "lorawan_gateway".to_string(),
                    Some("gtw2".to_string()),
                    1_700_000_000_000_000_000,
                    vec![
                        ("rssi_dbm".into(), FieldValue::Float(-101.0)),
                        ("snr_db".into(), FieldValue::Float(-3.0))
                    ]
                ),
            ]
        );
        // Multi-channel arrays: one sample per channel, arrays of the same length merged.
        let d = sub(r#"
            topic = "tele/{device}/SENSOR"
            measurement = "pdu_outlet"
            format = "json"
            fields = { voltage_v = "ENERGY.Voltage" }
            [[each]]
            path = "ENERGY.Power"
            key_tag = "outlet"
            first_index = 1
            fields = { power_w = "" }
            [[each]]
            path = "ENERGY.Current"
            key_tag = "outlet"
            first_index = 1
            fields = { current_a = "" }
        "#);
        let s = run(
            &d,
            "tele/p/SENSOR",
            br#"{"ENERGY":{"Voltage":230,"Power":[120,85],"Current":[0.52,0.37]}}"#,
        )
        .unwrap();
        let got: Vec<_> = s
            .iter()
            .map(|s| {
                (
                    s.series.tags.get("outlet").map(str::to_string),
                    s.fields.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (None, vec![("voltage_v".into(), FieldValue::Float(230.0))]),
                (
                    Some("1".into()),
                    vec![
                        ("power_w".into(), FieldValue::Float(120.0)),
                        ("current_a".into(), FieldValue::Float(0.52))
                    ]
                ),
                (
                    Some("2".into()),
                    vec![
                        ("power_w".into(), FieldValue::Float(85.0)),
                        ("current_a".into(), FieldValue::Float(0.37))
                    ]
                ),
            ]
        );
        // JSON keys as tags: Shelly Gen2 `switch:0`; other shapes are `no_fields`.
        let d = sub(r#"
            topic = "{device}/events/rpc"
            measurement = "pdu_outlet"
            format = "json"
            timestamp = "params.ts"
            [[each]]
            path = "params"
            key_tag = "outlet"
            key_prefix = "switch:"
            fields = { power_w = "apower", relay_on = { path = "output", type = "bool" } }
        "#);
        let s = run(&d, "shellyplus1pm-a8032ab12345/events/rpc", br#"{"src":"shellyplus1pm-a8032ab12345","dst":"x/events","method":"NotifyStatus","params":{"ts":1700000000.25,"switch:0":{"id":0,"apower":8.9,"output":true},"input:0":{"id":0,"state":false}}}"#).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].series.tags.get("outlet"), Some("0"));
        assert_eq!(s[0].timestamp_ns, 1_700_000_000_250_000_000);
        assert_eq!(s[0].field("relay_on"), Some(&FieldValue::Bool(true)));
        let e = run(&d, "x/events/rpc", br#"{"method":"NotifyEvent","params":{"ts":1700000000.25,"events":[{"component":"input:0","event":"single_push"}]}}"#).unwrap_err();
        assert_eq!(e.reason, DecodeReason::NoFields);
        assert!(d.maps_shapes());
        // Clashes and bad tables are config errors naming each[n].
        for (extra, wants) in [
            (
                "[[each]]\npath = \"p\"\nkey_tag = \"v\"\nfields = { v = \"\" }",
                "both a tag and a field",
            ),
            ("[[each]]\npath = \"p\"\nfields = {}", "each[0].fields"),
        ] {
            let cfg: SubscriptionConfig = toml::from_str(&format!(
                "topic = \"t\"\nmeasurement = \"m\"\nformat = \"json\"\n{extra}"
            ))
            .unwrap();
            let e = Decoder::compile(0, &cfg).unwrap_err().to_string();
            assert!(e.contains(wants), "{e}");
        }
    }

    #[test]
    fn sparkplug_through_the_decoder() {
        use super::super::sparkplug::{datatype, Metric, MetricValue, Payload};
        use prost::Message;
        let d = sub("topic=\"spBv1.0/#\"\nmeasurement=\"cooling\"\nformat=\"sparkplug_b\"\nmetric_names={\"Supply Air\"=\"supply_air_c\"}");
        assert!(d.maps_shapes());
        let birth = Payload {
            timestamp: Some(1_699_999_000_000),
            metrics: vec![Metric {
                name: Some("Supply Air".into()),
                alias: Some(7),
                timestamp: Some(1_699_999_500_000),
                datatype: Some(datatype::FLOAT),
                is_historical: None,
                is_transient: None,
                is_null: None,
                value: Some(MetricValue::FloatValue(18.5)),
            }],
            seq: Some(0),
            uuid: None,
            body: None,
        };
        let s = run(&d, "spBv1.0/dc1/DBIRTH/gw/crah-1", &birth.encode_to_vec()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(&*s[0].series.measurement, SPARKPLUG_STATE_MEASUREMENT);
        assert_eq!(s[0].field("up"), Some(&FieldValue::Bool(true)));
        assert_eq!(s[0].timestamp_ns, NOW);
        assert_eq!(s[1].field("supply_air_c"), Some(&FieldValue::Float(18.5)));
        assert_eq!(s[1].timestamp_ns, 1_699_999_500_000_000_000);
        let tags: Vec<_> = s[1].series.tags.iter().collect();
        assert_eq!(
            tags,
            vec![("device", "crah-1"), ("edge_node", "gw"), ("group", "dc1")]
        );
        assert_eq!(
            run(&d, "spBv1.0/STATE/scada-1", b"{\"online\":true}")
                .unwrap_err()
                .reason,
            DecodeReason::NoFields
        );
        assert_eq!(
            run(&d, "spBv1.0/dc1/DDATA/gw/crah-1", b"\xff\xff\xff")
                .unwrap_err()
                .reason,
            DecodeReason::MalformedProtobuf
        );
        assert!(run(&d, "spBv1.0/dc1/DCMD/gw/crah-1", b"")
            .unwrap()
            .is_empty());
        for (src, key) in [
            ("topic=\"spBv1.0/#\"\nmeasurement=\"m\"\nformat=\"sparkplug_b\"\nunknown_metrics=\"drop\"", "unknown_metrics"),
            ("topic=\"a\"\nmeasurement=\"m\"\nformat=\"number\"\nmetric_names={a=\"b\"}", "metric_names"),
        ] {
            let cfg: SubscriptionConfig = toml::from_str(src).unwrap();
            let e = Decoder::compile(0, &cfg).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{e}");
        }
    }

    #[test]
    fn decimal_timestamps_are_exact() {
        let ts = |t: &str, u| decimal_timestamp(t, u);
        assert_eq!(
            ts("1700000000.25", TimestampUnit::Auto),
            Some(1_700_000_000_250_000_000)
        );
        assert_eq!(
            ts("1700000000123.5", TimestampUnit::Auto),
            Some(1_700_000_000_123_500_000)
        );
        assert_eq!(
            ts("1700000000.123456789999", TimestampUnit::S),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(ts("-1.5", TimestampUnit::S), Some(-1_500_000_000));
        assert_eq!(ts("1.5e9", TimestampUnit::S), None);
        assert_eq!(ts("99999999999999999999.5", TimestampUnit::S), None);
    }

    #[test]
    fn field_named_by_a_topic_level() {
        let d = sub(r#"
            topic = "{device}/sensor/{entity}/state"
            measurement = "environment"
            format = "number"
            field = "{entity}"
            field_names = { temperature = "temperature_c", humidity = "humidity_pct" }
        "#);
        let s = run(&d, "rack7-env/sensor/temperature/state", b"21.5").unwrap();
        assert_eq!(
            s[0].fields,
            vec![("temperature_c".into(), FieldValue::Float(21.5))]
        );
        let tags: Vec<_> = s[0].series.tags.iter().collect();
        assert_eq!(
            tags,
            vec![("device", "rack7-env")],
            "the field's level is not a tag"
        );
        let s = run(&d, "rack7-env/sensor/Wifi Signal/state", b"-60").unwrap();
        assert_eq!(
            s[0].fields,
            vec![("wifi_signal".into(), FieldValue::Float(-60.0))]
        );
        assert_eq!(
            run(&d, "rack7-env/sensor/°/state", b"1")
                .unwrap_err()
                .reason,
            DecodeReason::NoFields
        );
        for (src, wants) in [
            ("topic = \"a/{x}\"\nformat = \"number\"\nmeasurement = \"m\"\nfield = \"{y}\"", "{y}"),
            ("topic = \"a/{x}\"\nformat = \"number\"\nmeasurement = \"m\"\nfield_names = { a = \"b\" }", "field_names"),
        ] {
            let cfg: SubscriptionConfig = toml::from_str(src).unwrap();
            let e = Decoder::compile(0, &cfg).unwrap_err().to_string();
            assert!(e.contains(wants), "{e}");
        }
    }

    #[test]
    fn escaped_dots_in_field_paths() {
        let d = sub(r#"
            topic = "t/{a}"
            measurement = "m"
            format = "json"
            fields = { inlet_c = 'temp\.inlet', nested_c = "temp.inlet" }
        "#);
        let s = run(&d, "t/x", br#"{"temp.inlet": 21.5, "temp": {"inlet": 30}}"#).unwrap();
        assert_eq!(s[0].field("inlet_c"), Some(&FieldValue::Float(21.5)));
        assert_eq!(s[0].field("nested_c"), Some(&FieldValue::Float(30.0)));
    }

    /// Decodes and returns the samples (or error) plus the field values dropped.
    fn run_typed(
        d: &Decoder,
        topic: &str,
        payload: &[u8],
    ) -> (Result<Vec<Sample>, DecodeError>, Vec<FieldError>) {
        let mut caps = Vec::new();
        assert!(d.template.match_topic(topic, &mut caps), "topic must match");
        let mut notes = DecodeNotes::default();
        let r = d.decode_into(topic, &caps, payload, NOW, &mut notes);
        (r, notes.field_errors)
    }

    fn reasons(errors: &[FieldError]) -> Vec<(&str, DecodeReason)> {
        errors.iter().map(|e| (&*e.field, e.reason)).collect()
    }

    #[test]
    fn untyped_strings_never_become_string_fields() {
        // The issue's failing case: `"12,5"` must not be written as a string, or InfluxDB
        // fixes `value` as a string field and rejects every later number.
        let d =
            sub("topic=\"t/{a}\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={value=\"value\"}");
        let (r, errors) = run_typed(&d, "t/x", br#"{"value":"12,5"}"#);
        assert_eq!(r.unwrap_err().reason, DecodeReason::NoValidFields);
        assert_eq!(
            reasons(&errors),
            vec![("value", DecodeReason::TypeMismatch)]
        );
        assert!(
            errors[0].detail.contains("\"12,5\"") && errors[0].detail.contains("type = \"string\""),
            "{}",
            errors[0].detail
        );
        // A quoted number is not parsed without parse_numeric_strings either.
        let (r, errors) = run_typed(&d, "t/x", br#"{"value":"12.5"}"#);
        assert!(r.is_err());
        assert_eq!(
            reasons(&errors),
            vec![("value", DecodeReason::TypeMismatch)]
        );
        // Numbers (integers too) are floats, booleans stay booleans.
        for (payload, want) in [
            (&br#"{"value":12}"#[..], FieldValue::Float(12.0)),
            (br#"{"value":12.5}"#, FieldValue::Float(12.5)),
            (br#"{"value":true}"#, FieldValue::Bool(true)),
        ] {
            let (r, errors) = run_typed(&d, "t/x", payload);
            assert_eq!(r.unwrap()[0].field("value"), Some(&want));
            assert!(errors.is_empty());
        }
        // Null and a missing path are "no value", not an error.
        let (r, errors) = run_typed(&d, "t/x", br#"{"value":null}"#);
        assert_eq!(r.unwrap_err().reason, DecodeReason::NoFields);
        assert!(errors.is_empty());

        // With parse_numeric_strings: "12.5" is a number, "12,5" still is not.
        let d = sub("topic=\"t/{a}\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={value=\"value\", rh=\"rh\"}\nparse_numeric_strings=true");
        let (r, errors) = run_typed(&d, "t/x", br#"{"value":" 12.5 ","rh":"40"}"#);
        let s = r.unwrap();
        assert_eq!(s[0].field("value"), Some(&FieldValue::Float(12.5)));
        assert_eq!(s[0].field("rh"), Some(&FieldValue::Float(40.0)));
        assert!(errors.is_empty());
        // The bad value is dropped, the rest of the point is kept.
        let (r, errors) = run_typed(&d, "t/x", br#"{"value":"12,5","rh":41}"#);
        let s = r.unwrap();
        assert_eq!(s[0].fields, vec![("rh".into(), FieldValue::Float(41.0))]);
        assert_eq!(reasons(&errors), vec![("value", DecodeReason::NotANumber)]);
        let (_, errors) = run_typed(&d, "t/x", br#"{"value":"NaN","rh":"inf"}"#);
        assert_eq!(
            reasons(&errors),
            vec![
                ("rh", DecodeReason::NonFinite),
                ("value", DecodeReason::NonFinite)
            ]
        );
    }

    #[test]
    fn declared_types_are_enforced_per_field() {
        let d = sub(r#"
            topic = "t/{a}"
            measurement = "m"
            format = "json"
            [fields]
            f = { path = "f", type = "float" }
            i = { path = "i", type = "integer" }
            u = { path = "u", type = "unsigned" }
            b = { path = "b", type = "bool" }
            s = { path = "s", type = "string" }
            plain = "plain"
        "#);
        let (r, errors) = run_typed(
            &d,
            "t/x",
            br#"{"f":21,"i":-3,"u":18446744073709551615,"b":false,"s":"on battery","plain":1.5}"#,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let s = &r.unwrap()[0];
        assert_eq!(s.field("f"), Some(&FieldValue::Float(21.0)));
        assert_eq!(s.field("i"), Some(&FieldValue::Int(-3)));
        assert_eq!(s.field("u"), Some(&FieldValue::UInt(u64::MAX)));
        assert_eq!(s.field("b"), Some(&FieldValue::Bool(false)));
        assert_eq!(s.field("s"), Some(&FieldValue::Str("on battery".into())));
        assert_eq!(s.field("plain"), Some(&FieldValue::Float(1.5)));

        // Whole floats fit the integer types; numbers and booleans fit `string` by their text.
        let (r, errors) = run_typed(&d, "t/x", br#"{"i":3.0,"u":1e3,"s":2.5,"plain":true}"#);
        assert!(errors.is_empty(), "{errors:?}");
        let s = &r.unwrap()[0];
        assert_eq!(s.field("i"), Some(&FieldValue::Int(3)));
        assert_eq!(s.field("u"), Some(&FieldValue::UInt(1000)));
        assert_eq!(s.field("s"), Some(&FieldValue::Str("2.5".into())));

        // Everything that does not fit is dropped and reported; `plain` survives.
        let (r, errors) = run_typed(
            &d,
            "t/x",
            br#"{"f":true,"i":3.7,"u":-1,"b":1,"s":{"a":1},"plain":2}"#,
        );
        assert_eq!(
            r.unwrap()[0].fields,
            vec![("plain".into(), FieldValue::Float(2.0))]
        );
        assert_eq!(
            reasons(&errors),
            // In field-name order.
            vec![
                ("b", DecodeReason::TypeMismatch),
                ("f", DecodeReason::TypeMismatch),
                ("i", DecodeReason::NotAnInteger),
                ("s", DecodeReason::TypeMismatch),
                ("u", DecodeReason::OutOfRange),
            ]
        );
        // Strings for numeric types: only with parse_numeric_strings.
        let (r, errors) = run_typed(&d, "t/x", br#"{"f":"12.5","i":"abc","plain":1}"#);
        assert_eq!(r.unwrap()[0].fields.len(), 1);
        assert_eq!(
            reasons(&errors),
            vec![
                ("f", DecodeReason::TypeMismatch),
                ("i", DecodeReason::TypeMismatch)
            ]
        );
        assert!(
            errors[0].detail.contains("parse_numeric_strings"),
            "{}",
            errors[0].detail
        );
        // Integers beyond i64 for `integer`.
        let (_, errors) = run_typed(&d, "t/x", br#"{"i":9223372036854775808,"plain":1}"#);
        assert_eq!(reasons(&errors), vec![("i", DecodeReason::OutOfRange)]);

        let d = sub(r#"
            topic = "t/{a}"
            measurement = "m"
            format = "json"
            parse_numeric_strings = true
            fields = { i = { path = "i", type = "integer" }, u = { path = "u", type = "unsigned" }, b = { path = "b", type = "bool" } }
        "#);
        let (r, errors) = run_typed(&d, "t/x", br#"{"i":" -42 ","u":"7","b":"true"}"#);
        let s = &r.unwrap()[0];
        assert_eq!(s.field("i"), Some(&FieldValue::Int(-42)));
        assert_eq!(s.field("u"), Some(&FieldValue::UInt(7)));
        // Booleans are never parsed from strings.
        assert_eq!(reasons(&errors), vec![("b", DecodeReason::TypeMismatch)]);
        let (_, errors) = run_typed(&d, "t/x", br#"{"i":"12,5","u":"-1"}"#);
        assert_eq!(
            reasons(&errors),
            vec![
                ("i", DecodeReason::NotANumber),
                ("u", DecodeReason::OutOfRange)
            ]
        );
        let (_, errors) = run_typed(&d, "t/x", br#"{"i":"99999999999999999999","u":"2.5"}"#);
        assert_eq!(
            reasons(&errors),
            vec![
                ("i", DecodeReason::OutOfRange),
                ("u", DecodeReason::NotAnInteger)
            ]
        );
    }

    #[test]
    fn number_payload_with_a_type() {
        let typed = |ty: &str| {
            sub(&format!(
                "topic=\"t/{{a}}\"\nformat=\"number\"\nmeasurement=\"m\"\ntype=\"{ty}\""
            ))
        };
        let ok = |d: &Decoder, p: &[u8]| run(d, "t/x", p).unwrap()[0].field("value").cloned();
        let bad = |d: &Decoder, p: &[u8]| run(d, "t/x", p).unwrap_err().reason;
        let float = typed("float");
        assert_eq!(ok(&float, b"21"), Some(FieldValue::Float(21.0)));
        assert_eq!(bad(&float, b"true"), DecodeReason::TypeMismatch);
        assert_eq!(bad(&float, b"12,5"), DecodeReason::NotANumber);
        let int = typed("integer");
        assert_eq!(ok(&int, b" 42\n"), Some(FieldValue::Int(42)));
        assert_eq!(bad(&int, b"3.7"), DecodeReason::NotAnInteger);
        let uint = typed("unsigned");
        assert_eq!(ok(&uint, b"42"), Some(FieldValue::UInt(42)));
        assert_eq!(bad(&uint, b"-1"), DecodeReason::OutOfRange);
        let boolean = typed("bool");
        assert_eq!(ok(&boolean, b"false"), Some(FieldValue::Bool(false)));
        assert_eq!(bad(&boolean, b"1"), DecodeReason::TypeMismatch);
        let string = typed("string");
        assert_eq!(
            ok(&string, b"online\n"),
            Some(FieldValue::Str("online".into()))
        );
        assert_eq!(bad(&string, b"  "), DecodeReason::NoFields);
        let e = run(&int, "t/x", b"3.7").unwrap_err().to_string();
        assert!(e.contains("type = \"integer\"") && e.contains("t/x"), "{e}");
    }

    #[test]
    fn field_type_config_errors() {
        // Misspelt keys and unknown types fail parsing (with a position, see config tests).
        for src in [
            "topic=\"a\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={v={path=\"v\",typ=\"float\"}}",
            "topic=\"a\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={v={path=\"v\",type=\"double\"}}",
            "topic=\"a\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={v={type=\"float\"}}",
            "topic=\"a\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={v=1}",
            "topic=\"a\"\nformat=\"number\"\nmeasurement=\"m\"\ntype=\"int\"",
        ] {
            let e = toml::from_str::<SubscriptionConfig>(src).unwrap_err();
            assert!(e.span().is_some(), "{src}: {e}");
        }
        let e = toml::from_str::<SubscriptionConfig>(
            "topic=\"a\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={v={path=\"v\",type=\"double\"}}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("double") && e.contains("integer"), "{e}");
        // `type` belongs to `number`; json fields carry their own.
        for src in [
            "topic=\"a\"\nformat=\"json\"\nmeasurement=\"m\"\nfields={v=\"v\"}\ntype=\"float\"",
            "topic=\"a\"\nformat=\"line_protocol\"\ntype=\"float\"",
        ] {
            let cfg: SubscriptionConfig = toml::from_str(src).unwrap();
            let e = Decoder::compile(0, &cfg).unwrap_err().to_string();
            assert!(e.contains("`type`"), "{e}");
        }
    }

    #[test]
    fn max_payload_is_inherited_and_overridden() {
        let cfg: super::super::config::MqttConfig = toml::from_str(
            r#"
            host = "h"
            max_payload_size = 8
            [[subscription]]
            topic = "a/{x}"
            measurement = "m"
            format = "number"
            [[subscription]]
            topic = "b/{x}"
            measurement = "m"
            format = "number"
            max_payload_size = 2
            "#,
        )
        .unwrap();
        let d = cfg.compile().unwrap();
        assert!(run(&d[0], "a/x", b"12345678").is_ok());
        let e = run(&d[0], "a/x", b"123456789").unwrap_err();
        assert_eq!(e.reason, DecodeReason::Oversized);
        assert!(
            e.to_string().contains("9 bytes") && e.to_string().contains("a/x"),
            "{e}"
        );
        assert_eq!(
            run(&d[1], "b/x", b"123").unwrap_err().reason,
            DecodeReason::Oversized
        );
        // Standalone and without a global setting: 1 MiB.
        let one = sub("topic=\"t/{a}\"\nformat=\"line_protocol\"");
        let mut big = b"m v=1 ".to_vec();
        big.resize(DEFAULT_MAX_PAYLOAD_SIZE + 1, b' ');
        assert_eq!(
            run(&one, "t/x", &big).unwrap_err().reason,
            DecodeReason::Oversized
        );
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
            Just(sub(&BMS.replace("bms/{device}/points", "t/{device}"))),
            Just(sub("topic=\"t/{a}\"\nformat=\"json\"\nmeasurement=\"m\"\n[points]\npath=\"\"\nunknown=\"keep\"\ntimestamp=\"t\"\ntags={u=\"u\"}")),
            Just(sub("topic=\"t/{a}\"\nformat=\"json\"\nmeasurement=\"m\"\ntimestamp=\"ts\"\n[[each]]\npath=\"\"\nkey_tag=\"k\"\nfields={v=\"\",w=\"w\"}\ntimestamp=\"t\"\ntags={u=\"u\"}")),
            Just(sub("topic=\"t/{a}\"\nformat=\"number\"\nmeasurement=\"m\"\nfield=\"{a}\"\nstates=\"default\"")),
        ]
    }

    fn any_field_type() -> impl Strategy<Value = Option<FieldType>> {
        prop_oneof![
            Just(None),
            Just(Some(FieldType::Float)),
            Just(Some(FieldType::Integer)),
            Just(Some(FieldType::Unsigned)),
            Just(Some(FieldType::Bool)),
            Just(Some(FieldType::String)),
        ]
    }

    /// Strings firmware sends: numbers in every notation, decimal commas, units, words.
    fn numberish_string() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,12}",
            " ?[+-]?[0-9]{1,25}(\\.[0-9]{0,6})?([eE][+-]?[0-9]{1,3})? ?",
            "[+-]?[0-9]{1,4},[0-9]{1,4}",
            "[0-9]{1,3}(\\.[0-9])? ?(C|%|V|°C)",
            "(NaN|nan|inf|-inf|infinity|true|false|null|ON|OFF|n/a)",
        ]
    }

    fn any_json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter_map("finite", serde_json::Number::from_f64)
                .prop_map(Value::Number),
            numberish_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A json decoder with field `v` of type `ty` and an untyped field `k`.
    fn typed_decoder(ty: Option<FieldType>, parse_numeric_strings: bool) -> Decoder {
        let v = match ty {
            Some(t) => format!("{{ path = \"v\", type = \"{t}\" }}"),
            None => "\"v\"".to_string(),
        };
        sub(&format!(
            "topic=\"t/{{a}}\"\nformat=\"json\"\nmeasurement=\"m\"\n\
             parse_numeric_strings={parse_numeric_strings}\nfields={{ v = {v}, k = \"k\" }}"
        ))
    }

    fn fits(ty: Option<FieldType>, v: &FieldValue) -> bool {
        matches!(
            (ty, v),
            (None, FieldValue::Float(_) | FieldValue::Bool(_))
                | (Some(FieldType::Float), FieldValue::Float(_))
                | (Some(FieldType::Integer), FieldValue::Int(_))
                | (Some(FieldType::Unsigned), FieldValue::UInt(_))
                | (Some(FieldType::Bool), FieldValue::Bool(_))
                | (Some(FieldType::String), FieldValue::Str(_))
        )
    }

    /// Decodes `{"v": value, "k": 1}` and returns `v` (if written) and the field errors.
    fn decode_v(d: &Decoder, value: &Value) -> (Option<FieldValue>, Vec<FieldError>) {
        let payload = serde_json::json!({ "v": value, "k": 1 }).to_string();
        let (r, errors) = run_typed(d, "t/x", payload.as_bytes());
        let samples = r.expect("k always decodes, so the point is kept");
        assert_eq!(samples[0].field("k"), Some(&FieldValue::Float(1.0)));
        (samples[0].field("v").cloned(), errors)
    }

    proptest! {
        /// Whatever arrives, a written value has the declared type (untyped: float or bool,
        /// never a string), a dropped one is reported, and the rest of the point is kept.
        #[test]
        fn written_values_always_have_the_declared_type(
            ty in any_field_type(), parse in any::<bool>(), value in any_json_value(),
        ) {
            let d = typed_decoder(ty, parse);
            let (got, errors) = decode_v(&d, &value);
            match got {
                Some(v) => {
                    prop_assert!(fits(ty, &v), "{value} as {ty:?} gave {v:?}");
                    prop_assert!(errors.is_empty());
                    if let FieldValue::Float(f) = v { prop_assert!(f.is_finite()); }
                }
                None if value.is_null() => prop_assert!(errors.is_empty()),
                None => {
                    prop_assert_eq!(errors.len(), 1, "{} dropped without a report", value);
                    prop_assert_eq!(&*errors[0].field, "v");
                    prop_assert!(errors[0].detail.contains("\"v\""));
                }
            }
        }

        /// Strings reach numeric fields only as numbers, and only with parse_numeric_strings.
        #[test]
        fn strings_are_parsed_only_when_allowed(
            ty in prop_oneof![Just(None), Just(Some(FieldType::Float)), Just(Some(FieldType::Integer)), Just(Some(FieldType::Unsigned))],
            s in numberish_string(),
        ) {
            let (got, _) = decode_v(&typed_decoder(ty, false), &Value::String(s.clone()));
            prop_assert_eq!(got, None);
            let (got, errors) = decode_v(&typed_decoder(ty, true), &Value::String(s.clone()));
            match got {
                Some(v) => {
                    let f = v.as_f64().expect("numeric");
                    let parsed: f64 = s.trim().parse().expect("only numbers are parsed");
                    prop_assert!(f == parsed || matches!(v, FieldValue::Int(_) | FieldValue::UInt(_)));
                }
                None => prop_assert_eq!(errors.len(), 1),
            }
            if s.contains(',') {
                prop_assert!(errors.iter().any(|e| e.reason == DecodeReason::NotANumber));
            }
        }

        #[test]
        fn integers_round_trip(i in any::<i64>(), u in any::<u64>()) {
            for parse in [false, true] {
                let d = typed_decoder(Some(FieldType::Integer), parse);
                prop_assert_eq!(decode_v(&d, &Value::from(i)).0, Some(FieldValue::Int(i)));
                let d = typed_decoder(Some(FieldType::Unsigned), parse);
                prop_assert_eq!(decode_v(&d, &Value::from(u)).0, Some(FieldValue::UInt(u)));
            }
            let d = typed_decoder(Some(FieldType::Integer), true);
            prop_assert_eq!(decode_v(&d, &Value::String(i.to_string())).0, Some(FieldValue::Int(i)));
            let d = typed_decoder(Some(FieldType::Unsigned), true);
            prop_assert_eq!(decode_v(&d, &Value::String(format!(" {u} "))).0, Some(FieldValue::UInt(u)));
            if i < 0 {
                let (got, errors) = decode_v(&typed_decoder(Some(FieldType::Unsigned), true), &Value::from(i));
                prop_assert_eq!(got, None);
                prop_assert_eq!(errors[0].reason, DecodeReason::OutOfRange);
            }
        }

        #[test]
        fn floats_keep_their_value_and_fractions_are_not_integers(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let json = serde_json::json!({ "v": f, "k": 1 }).to_string();
            // What serde_json itself reads back from that text: sitewatch must not alter it.
            let want: f64 = serde_json::from_str::<Value>(&json).unwrap()["v"].as_f64().unwrap();
            for ty in [None, Some(FieldType::Float)] {
                let (got, _) = decode_v(&typed_decoder(ty, false), &Value::from(f));
                prop_assert_eq!(got, Some(FieldValue::Float(want)));
            }
            let (got, _) = decode_v(&typed_decoder(Some(FieldType::Float), true), &Value::String(f.to_string()));
            prop_assert_eq!(got, Some(FieldValue::Float(f)));
            if want.fract() != 0.0 {
                for ty in [FieldType::Integer, FieldType::Unsigned] {
                    let (got, errors) = decode_v(&typed_decoder(Some(ty), true), &Value::from(f));
                    prop_assert_eq!(got, None);
                    prop_assert_eq!(errors[0].reason, DecodeReason::NotAnInteger);
                }
            }
        }

        #[test]
        fn number_payloads_have_the_declared_type(ty in any_field_type(), text in numberish_string()) {
            let src = match ty {
                Some(t) => format!("topic=\"t/{{a}}\"\nformat=\"number\"\nmeasurement=\"m\"\ntype=\"{t}\""),
                None => "topic=\"t/{a}\"\nformat=\"number\"\nmeasurement=\"m\"".to_string(),
            };
            let d = sub(&src);
            if let Ok(s) = run(&d, "t/x", text.as_bytes()) {
                let v = s[0].field("value").expect("the one field");
                prop_assert!(fits(ty, v), "{text:?} as {ty:?} gave {v:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(d in any_decoder(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = run(&d, "t/x", &payload);
        }

        #[test]
        fn sparkplug_decoder_never_panics(k in 0usize..8, payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let d = sub("topic=\"spBv1.0/#\"\nmeasurement=\"m\"\nformat=\"sparkplug_b\"");
            let topics = ["spBv1.0/g/NBIRTH/e", "spBv1.0/g/DBIRTH/e/d", "spBv1.0/g/NDATA/e", "spBv1.0/g/DDATA/e/d",
                "spBv1.0/g/NDEATH/e", "spBv1.0/g/DDEATH/e/d", "spBv1.0/STATE/h", "spBv1.0/g/DCMD/e/d"];
            let _ = run(&d, topics[k], &payload);
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

    /// The same subscription decoding through the document tree (no flat fast path).
    fn tree_only(mut d: Decoder) -> Decoder {
        if let Kind::Json { flat, .. } = &mut d.kind {
            assert!(
                flat.is_some(),
                "the test subscription must take the flat path"
            );
            *flat = None;
        }
        d
    }

    /// Payload texts around flat objects: wanted and unwanted keys, duplicates, nested and
    /// odd values, top-level arrays and scalars, broken JSON.
    fn flat_payload() -> impl Strategy<Value = String> {
        let entry = || {
            let key = prop::sample::select(vec!["t", "temp", "state", "room", "temp.inlet", "x"]);
            (key, any_json_value()).prop_map(|(k, v)| format!("{k:?}:{v}"))
        };
        prop_oneof![
            4 => prop::collection::vec(entry(), 0..7)
                .prop_map(|e| format!("{{{}}}", e.join(","))),
            1 => prop::collection::vec(entry(), 0..4)
                .prop_map(|e| format!("[{{{}}}]", e.join(","))),
            1 => any_json_value().prop_map(|v| v.to_string()),
            1 => r#"[{}\[\]\\",:0-9a-z. ]{0,24}"#,
        ]
    }

    proptest! {
        /// The flat fast path gives exactly what the document tree gives: samples, field
        /// errors and decode errors.
        #[test]
        fn flat_objects_decode_as_through_the_tree(payload in flat_payload()) {
            let toml_src = r#"
                topic = "t/{sensor}"
                measurement = "m"
                format = "json"
                fields = { temp = "temp", state = { path = "state", type = "string" }, inlet = 'temp\.inlet' }
                tag_paths = { room = "room" }
                timestamp = "t"
                timestamp_unit = "ms"
            "#;
            let flat = sub(toml_src);
            let tree = tree_only(sub(toml_src));
            let (a, ea) = run_typed(&flat, "t/x", payload.as_bytes());
            let (b, eb) = run_typed(&tree, "t/x", payload.as_bytes());
            prop_assert_eq!(a, b, "{}", payload);
            prop_assert_eq!(ea, eb, "{}", payload);
        }
    }
}
