//! The data that flows between stages: samples in, events out.
//!
//! Collectors produce [`Sample`]s; the rules engine turns them into [`Event`]s; sinks and
//! notifiers consume both. Nothing here knows about SNMP, MQTT or InfluxDB.

use std::fmt;
use std::sync::Arc;

/// Tag set of a series, sorted by key with unique keys.
///
/// Shared behind an `Arc` because every sample of a series carries the same tags and the
/// rules engine keys its state by them: cloning must be cheap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagSet(Arc<[(Arc<str>, Arc<str>)]>);

impl TagSet {
    /// Builds a tag set; when a key repeats, the last value wins. Empty values are dropped
    /// because InfluxDB rejects them and they carry no information.
    pub fn new<K, V, I>(tags: I) -> Self
    where
        K: Into<Arc<str>>,
        V: Into<Arc<str>>,
        I: IntoIterator<Item = (K, V)>,
    {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> = tags
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .collect();
        // Stable sort keeps insertion order among equal keys, so "last wins" is well defined.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match deduped.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => deduped.push(pair),
            }
        }
        TagSet(deduped.into())
    }

    pub fn empty() -> Self {
        TagSet::default()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// The pairs as shared strings, for copies that must not allocate text.
    pub fn iter_shared(&self) -> impl Iterator<Item = &(Arc<str>, Arc<str>)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A new tag set with `extra` merged in; `extra` wins on conflicts.
    pub fn merged<'a>(&self, extra: impl IntoIterator<Item = (&'a str, &'a str)>) -> TagSet {
        let own = self.0.iter().map(|(k, v)| (k.clone(), v.clone()));
        let extra = extra.into_iter().map(|(k, v)| (Arc::from(k), Arc::from(v)));
        TagSet::new(own.chain(extra))
    }
}

/// A typed field value, mirroring what InfluxDB line protocol can carry.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(Arc<str>),
}

impl FieldValue {
    /// Numeric view used by threshold rules; booleans count as 0/1 so a leak sensor can be
    /// compared with `above = 0.5` as well as matched by state.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Float(v) => Some(*v),
            FieldValue::Int(v) => Some(*v as f64),
            FieldValue::UInt(v) => Some(*v as f64),
            FieldValue::Bool(v) => Some(if *v { 1.0 } else { 0.0 }),
            FieldValue::Str(_) => None,
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Float(v) => write!(f, "{v}"),
            FieldValue::Int(v) => write!(f, "{v}"),
            FieldValue::UInt(v) => write!(f, "{v}"),
            FieldValue::Bool(v) => write!(f, "{v}"),
            FieldValue::Str(v) => f.write_str(v),
        }
    }
}

/// Identity of a series: measurement plus tags.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub measurement: Arc<str>,
    pub tags: TagSet,
}

impl SeriesKey {
    pub fn new(measurement: impl Into<Arc<str>>, tags: TagSet) -> Self {
        SeriesKey {
            measurement: measurement.into(),
            tags,
        }
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.measurement)?;
        for (k, v) in self.tags.iter() {
            write!(f, ",{k}={v}")?;
        }
        Ok(())
    }
}

/// One measurement of one series at one time, with one or more fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub series: SeriesKey,
    pub fields: Vec<(Arc<str>, FieldValue)>,
    /// Nanoseconds since the Unix epoch, taken from the source where it has a clock.
    pub timestamp_ns: i64,
}

impl Sample {
    pub fn new(series: SeriesKey, timestamp_ns: i64) -> Self {
        Sample {
            series,
            fields: Vec::new(),
            timestamp_ns,
        }
    }

    pub fn with_field(mut self, name: impl Into<Arc<str>>, value: FieldValue) -> Self {
        self.fields.push((name.into(), value));
        self
    }

    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
    }
}

/// Wall clock in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventState {
    Firing,
    Resolved,
}

impl EventState {
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Firing => "firing",
            EventState::Resolved => "resolved",
        }
    }
}

impl fmt::Display for EventState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's state change for one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub rule: Arc<str>,
    /// The rule's `labels` (team, service, ...), rendered for this series: routing and
    /// grouping keys every receiver gets. Sorted by name.
    pub labels: Labels,
    /// The rule's `annotations` (runbook_url, summary, ...), rendered for this event.
    pub annotations: Labels,
    pub series: SeriesKey,
    pub field: Arc<str>,
    /// Severity now in force; for a resolved event, the severity that was firing.
    pub severity: Severity,
    pub state: EventState,
    pub value: FieldValue,
    pub threshold: Option<f64>,
    /// When the condition began (first breaching sample), ns since the epoch.
    pub started_ns: i64,
    /// When this change happened, ns since the epoch.
    pub timestamp_ns: i64,
    pub message: String,
}

impl Event {
    /// The event as a point of `measurement` at `timestamp_ns`: tags are the series' tags,
    /// then the rule's labels, then `own` (which win a clash); fields `value` (a finite
    /// number) or `value_text` (a string value), `threshold` (when finite), `message` and
    /// `series`. The events and the open-alerts measurements both start from it.
    pub fn point(
        &self,
        measurement: impl Into<Arc<str>>,
        own: &[(&str, &str)],
        timestamp_ns: i64,
    ) -> Sample {
        let tags = self
            .series
            .tags
            .merged(self.labels.iter().map(|(k, v)| (&**k, v.as_str())))
            .merged(own.iter().copied());
        let mut s = Sample::new(SeriesKey::new(measurement, tags), timestamp_ns);
        match self.value.as_f64() {
            Some(v) if v.is_finite() => s.fields.push(("value".into(), FieldValue::Float(v))),
            Some(_) => {}
            None => s.fields.push(("value_text".into(), self.value.clone())),
        }
        if let Some(t) = self.threshold.filter(|t| t.is_finite()) {
            s.fields.push(("threshold".into(), FieldValue::Float(t)));
        }
        s.fields.push((
            "message".into(),
            FieldValue::Str(self.message.as_str().into()),
        ));
        s.fields.push((
            "series".into(),
            FieldValue::Str(self.series.to_string().into()),
        ));
        s
    }

    /// Adds the rule's annotations to `s` as string fields, except names already a field of
    /// `s` or that some points of the measurement carry with another type: `value`,
    /// `value_text`, `threshold` (absent on some points) and `reserved`.
    pub fn add_annotations(&self, s: &mut Sample, reserved: &[&str]) {
        for (k, v) in &self.annotations {
            let taken = ["value", "value_text", "threshold"].contains(&&**k)
                || reserved.contains(&&**k)
                || s.field(k).is_some();
            if !taken {
                s.fields
                    .push((k.clone(), FieldValue::Str(v.as_str().into())));
            }
        }
    }

    /// The alert this event belongs to (rule + series), as 16 hex digits: the same for its
    /// firing, re-announcements and resolve, and across restarts and upgrades. The API names
    /// alerts by it (acknowledge, silence) and PagerDuty dedups on it.
    pub fn alert_id(&self) -> String {
        alert_id(&self.rule, &self.series)
    }
}

/// See [`Event::alert_id`].
pub fn alert_id(rule: &str, series: &SeriesKey) -> String {
    format!("{:016x}", crate::text::fnv1a(&[rule, &series.to_string()]))
}

/// Rendered `labels` or `annotations` of a rule: (name, text), sorted by name.
pub type Labels = Vec<(Arc<str>, String)>;

/// A responder's acknowledgement of an open alert: who, why, when (wall clock).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Acknowledgement {
    pub by: String,
    pub comment: String,
    pub at_ns: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagset_sorts_dedups_and_drops_empty() {
        let t = TagSet::new([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        let v: Vec<_> = t.iter().collect();
        assert_eq!(v, vec![("a", "1"), ("b", "3")]);
        assert_eq!(t.get("b"), Some("3"));
        assert_eq!(t.get("c"), None);
    }

    #[test]
    fn merged_prefers_extra() {
        let t = TagSet::new([("rule", "x"), ("site", "s1")]);
        let m = t.merged([("rule", "y")]);
        assert_eq!(m.get("rule"), Some("y"));
        assert_eq!(m.get("site"), Some("s1"));
    }
}
