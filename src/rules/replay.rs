//! Rule testing on history (`sitewatch rules test`): stored samples are read back from
//! InfluxDB and fed, in time order, through a fresh [`Engine`], so a threshold, clear value or
//! `for` can be tuned against last week's data before it pages anyone.
//!
//! ```text
//! rules ──> which measurement/fields ──> InfluxQL per time window ──> Engine::observe/tick
//!                                        (chunked JSON, epoch=ns)     ──> Replayer ──> ReplayReport
//! ```
//!
//! - **Query**: `SELECT "f1"::field, "f2"::field, *::tag FROM "m" WHERE time >= A AND time < B
//!   ORDER BY time ASC` against the v1 `/query` endpoint with `chunked=true&epoch=ns`. Without
//!   `GROUP BY` InfluxDB returns one row per point, merged across series in time order, tags as
//!   columns. The same endpoint exists on InfluxDB 2.x (database = bucket through its DBRP
//!   mapping, `Authorization: Token`) and 3.x (v1 compatibility API, `Authorization: Bearer`).
//!   Only InfluxDB 1.6 is exercised by the tests here.
//! - **Bounded memory**: the range is read in windows (`window`, default 1 h). With one
//!   measurement, rows go to the engine as they stream in; with several, one window of rows is
//!   held and sorted so the engine's clock never runs backwards.
//! - **Clock**: [`Engine::tick`] runs on the samples' time every `tick` (default 1 s, as in
//!   the live stage), also across gaps in the data, so stale-sensor rules fire in the replay
//!   when they would have fired live.
//! - **Numbers**: InfluxDB's JSON does not keep the float/integer distinction (a float 30.0
//!   comes back as `30`), so every number is replayed as a float; rules compare numbers as
//!   floats anyway.
//! - **Not replayed**: silences and notification routing (the report is about what the rules
//!   decide, before any receiver), and saved alarm state (the engine starts empty at `from`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::model::{Event, EventState, FieldValue, Sample, SeriesKey, Severity, TagSet};
use crate::sink::influx::{InfluxApi, InfluxConfig, InfluxError};

use super::config::{format_value, Condition, Direction, Rule, RuleSet, STALE_SUFFIX};
use super::engine::Engine;

const NS_PER_SEC: i64 = 1_000_000_000;

/// Rows per chunk asked from InfluxDB: big enough to keep the request count low, small enough
/// that one chunk of JSON stays a few MB.
const CHUNK_SIZE: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Config(#[from] InfluxError),
    #[error("cannot reach InfluxDB at {url}: {source}; check [influx] url and that the server is running and reachable from here")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("InfluxDB at {url} answered HTTP {status} to the history query: {body}; {hint}")]
    Http {
        url: String,
        status: u16,
        body: String,
        hint: &'static str,
    },
    #[error("InfluxDB at {url} rejected the query `{query}`: {message}; {hint}")]
    Query {
        url: String,
        query: String,
        message: String,
        hint: &'static str,
    },
    #[error("InfluxDB at {url} sent an answer that is not InfluxQL JSON ({problem}) to `{query}`; is [influx] url an InfluxDB server?")]
    Response {
        url: String,
        query: String,
        problem: String,
    },
    #[error("{flag} {value:?}: {problem}; write e.g. 2026-11-01T00:00:00Z, 2026-11-01T02:00:00+02:00 or 2026-11-01")]
    BadTime {
        flag: &'static str,
        value: String,
        problem: String,
    },
    #[error("empty time range: from {from} is not before until {until}; pass an earlier --from or a later --until")]
    EmptyRange { from: String, until: String },
    #[error("--rule {name:?}: no such rule; loaded rules: {known}")]
    UnknownRule { name: String, known: String },
    #[error("no rules to test: the config has no [rules] files and no --rules FILE was given")]
    NoRules,
}

fn http_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check [influx] username/password (v1) or token (v2/v3) and that it may read the database",
        404 => "the server has no v1 /query endpoint or the database/bucket is unknown: for InfluxDB 2.x a DBRP mapping for the bucket must exist",
        _ => "check the InfluxDB server log",
    }
}

fn query_hint(message: &str) -> &'static str {
    if message.contains("database not found") {
        "check [influx] database (or bucket for v2), or create it"
    } else if message.contains("authoriz") || message.contains("authenticat") {
        "check [influx] credentials"
    } else {
        "if the message is about query syntax, this is a bug in sitewatch; please report it"
    }
}

// ---------------------------------------------------------------------------------------------
// Time arguments

pub use crate::time::{format_time, parse_time};

/// Compact duration, rounded to the second (`1h 2m 3s`); sub-second durations in ms.
pub fn format_duration_ns(ns: i64) -> String {
    let ns = ns.max(0);
    if ns < NS_PER_SEC {
        return format!("{}ms", ns / 1_000_000);
    }
    let secs = (ns + NS_PER_SEC / 2) / NS_PER_SEC;
    humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
}

// ---------------------------------------------------------------------------------------------
// Request

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub from_ns: i64,
    pub until_ns: i64,
    /// Length of one query window; smaller bounds memory on sites with many series.
    pub window: Duration,
    /// Engine clock step (see [`Engine::tick`]).
    pub tick: Duration,
}

impl ReplayOptions {
    /// The range from the CLI's `--since` or `--from`/`--until` (RFC 3339); `until` defaults to
    /// `now_ns`. Window and tick default to 1 h and 1 s.
    pub fn from_args(
        since: Option<Duration>,
        from: Option<&str>,
        until: Option<&str>,
        now_ns: i64,
    ) -> Result<ReplayOptions, ReplayError> {
        let bad = |flag: &'static str, value: &str, problem: String| ReplayError::BadTime {
            flag,
            value: value.to_string(),
            problem,
        };
        let until_ns = match until {
            Some(u) => parse_time(u).map_err(|p| bad("--until", u, p))?,
            None => now_ns,
        };
        let from_ns = match (since, from) {
            (_, Some(f)) => parse_time(f).map_err(|p| bad("--from", f, p))?,
            (Some(d), None) => {
                until_ns.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            }
            (None, None) => {
                return Err(bad(
                    "--since/--from",
                    "",
                    "say which history to replay: --since 7d, or --from TIME [--until TIME]".into(),
                ))
            }
        };
        if from_ns >= until_ns {
            return Err(ReplayError::EmptyRange {
                from: format_time(from_ns),
                until: format_time(until_ns),
            });
        }
        Ok(ReplayOptions {
            from_ns,
            until_ns,
            window: Duration::from_secs(3600),
            tick: Duration::from_secs(1),
        })
    }
}

/// The rules named in `names` (all of them when `names` is empty).
pub fn select_rules(set: &RuleSet, names: &[String]) -> Result<RuleSet, ReplayError> {
    if set.is_empty() {
        return Err(ReplayError::NoRules);
    }
    if names.is_empty() {
        return Ok(set.clone());
    }
    let find = |name: &str| {
        set.get(name).ok_or_else(|| ReplayError::UnknownRule {
            name: name.to_string(),
            known: set
                .rules()
                .iter()
                .map(|r| r.name.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    };
    let mut picked: Vec<Rule> = Vec::new();
    for name in names {
        let r = find(name)?;
        if !picked.iter().any(|p| p.name == r.name) {
            picked.push((**r).clone());
        }
    }
    // A rule is replayed with what it depends on (transitively), or its `depends_on` would
    // name a rule that is not there and the set would not build.
    let mut i = 0;
    while i < picked.len() {
        if let Some(dep) = picked[i].depends_on.as_ref().map(|d| d.rule.clone()) {
            if !picked.iter().any(|p| p.name == dep) {
                picked.push((**find(&dep)?).clone());
            }
        }
        i += 1;
    }
    // Names were unique in `set`, so this cannot fail.
    Ok(RuleSet::new(picked).unwrap_or_default())
}

/// Measurement → fields the rules watch, sorted so queries (and tests) are deterministic.
pub fn watched_fields(rules: &RuleSet) -> BTreeMap<Arc<str>, Vec<Arc<str>>> {
    let mut by_m: BTreeMap<Arc<str>, BTreeSet<Arc<str>>> = BTreeMap::new();
    for r in rules.rules() {
        by_m.entry(r.measurement.clone())
            .or_default()
            .insert(r.field.clone());
    }
    by_m.into_iter()
        .map(|(m, f)| (m, f.into_iter().collect()))
        .collect()
}

/// An InfluxQL identifier in double quotes.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The history query for one measurement and window.
pub fn influxql(measurement: &str, fields: &[Arc<str>], from_ns: i64, until_ns: i64) -> String {
    let cols: Vec<String> = fields
        .iter()
        .map(|f| format!("{}::field", quote_ident(f)))
        .collect();
    format!(
        "SELECT {}, *::tag FROM {} WHERE time >= {from_ns} AND time < {until_ns} ORDER BY time ASC",
        cols.join(", "),
        quote_ident(measurement)
    )
}

// ---------------------------------------------------------------------------------------------
// InfluxQL JSON answer

/// What one JSON object of a (chunked) `/query` answer held.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedChunk {
    pub samples: Vec<Sample>,
    /// Rows without a usable timestamp or without any field value.
    pub skipped_rows: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AnswerProblem {
    /// InfluxDB said what is wrong.
    Server(String),
    Malformed(String),
}

/// Parses one JSON object of an InfluxQL answer to
/// `SELECT "f1"::field, …, *::tag FROM m …`: columns are `time`, the fields in query order,
/// then the tag keys. InfluxDB renames a tag column whose key equals a selected field to
/// `key_1`; that suffix is removed again.
pub fn parse_answer(
    text: &str,
    measurement: &Arc<str>,
    fields: &[Arc<str>],
) -> Result<ParsedChunk, AnswerProblem> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| AnswerProblem::Malformed(format!("invalid JSON: {e}")))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(AnswerProblem::Server(e.to_string()));
    }
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| AnswerProblem::Malformed("no \"results\" array".into()))?;
    let mut out = ParsedChunk::default();
    for r in results {
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            return Err(AnswerProblem::Server(e.to_string()));
        }
        let Some(series) = r.get("series") else {
            continue;
        };
        let series = series
            .as_array()
            .ok_or_else(|| AnswerProblem::Malformed("\"series\" is not an array".into()))?;
        for s in series {
            parse_series(s, measurement, fields, &mut out)?;
        }
    }
    Ok(out)
}

fn parse_series(
    s: &Value,
    measurement: &Arc<str>,
    fields: &[Arc<str>],
    out: &mut ParsedChunk,
) -> Result<(), AnswerProblem> {
    let columns: Vec<&str> = s
        .get("columns")
        .and_then(Value::as_array)
        .ok_or_else(|| AnswerProblem::Malformed("a series has no \"columns\"".into()))?
        .iter()
        .map(|c| c.as_str().unwrap_or(""))
        .collect();
    if columns.first() != Some(&"time") || columns.len() < fields.len() + 1 {
        return Err(AnswerProblem::Malformed(format!(
            "columns {columns:?} do not start with time and the {} field(s) asked for",
            fields.len()
        )));
    }
    let tag_keys: Vec<Arc<str>> = columns[fields.len() + 1..]
        .iter()
        .map(|c| Arc::from(untangle_tag_column(c, fields)))
        .collect();
    // A series-level "tags" object appears with GROUP BY; merged in should a server send it.
    let group_tags: Vec<(Arc<str>, Arc<str>)> = s
        .get("tags")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (Arc::from(k.as_str()), Arc::from(v))))
                .collect()
        })
        .unwrap_or_default();
    let Some(values) = s.get("values") else {
        return Ok(());
    };
    let rows = values
        .as_array()
        .ok_or_else(|| AnswerProblem::Malformed("\"values\" is not an array".into()))?;
    // Consecutive rows of one series share their tag set; reuse it instead of rebuilding.
    let mut last_tags: Option<(Vec<Option<&str>>, TagSet)> = None;
    for row in rows {
        let Some(row) = row.as_array() else {
            out.skipped_rows += 1;
            continue;
        };
        let Some(ts) = row.first().and_then(json_timestamp) else {
            out.skipped_rows += 1;
            continue;
        };
        let mut sample_fields = Vec::with_capacity(fields.len());
        for (i, name) in fields.iter().enumerate() {
            if let Some(v) = row.get(i + 1).and_then(json_field_value) {
                sample_fields.push((name.clone(), v));
            }
        }
        if sample_fields.is_empty() {
            out.skipped_rows += 1;
            continue;
        }
        let raw_tags: Vec<Option<&str>> = (0..tag_keys.len())
            .map(|i| row.get(fields.len() + 1 + i).and_then(Value::as_str))
            .collect();
        let tags = match &last_tags {
            Some((raw, t)) if *raw == raw_tags => t.clone(),
            _ => {
                let pairs = tag_keys
                    .iter()
                    .zip(&raw_tags)
                    .filter_map(|(k, v)| v.map(|v| (k.clone(), Arc::<str>::from(v))))
                    .chain(group_tags.iter().cloned());
                let t = TagSet::new(pairs);
                last_tags = Some((raw_tags, t.clone()));
                t
            }
        };
        out.samples.push(Sample {
            series: SeriesKey::new(measurement.clone(), tags),
            fields: sample_fields,
            timestamp_ns: ts,
        });
    }
    Ok(())
}

/// `rack_1` back to `rack` when `rack` is also a selected field (InfluxDB's renaming).
fn untangle_tag_column<'a>(column: &'a str, fields: &[Arc<str>]) -> &'a str {
    if let Some((base, n)) = column.rsplit_once('_') {
        if !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && fields.iter().any(|f| f.as_ref() == base)
        {
            return base;
        }
    }
    column
}

fn json_timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        // A server that ignored epoch=ns answers RFC 3339.
        Value::String(s) => parse_time(s).ok(),
        _ => None,
    }
}

fn json_field_value(v: &Value) -> Option<FieldValue> {
    match v {
        Value::Number(n) => n.as_f64().map(FieldValue::Float),
        Value::Bool(b) => Some(FieldValue::Bool(*b)),
        Value::String(s) => Some(FieldValue::Str(s.as_str().into())),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Report

/// One alert incident the rules would have raised.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incident {
    pub series: String,
    /// Highest severity reached.
    #[serde(serialize_with = "severity_text")]
    pub severity: Severity,
    /// First breaching sample (before `for` elapsed).
    pub breach_start: String,
    pub breach_start_ns: i64,
    /// First firing notification.
    pub start: String,
    pub start_ns: i64,
    /// Resolved notification; `None` while still firing at the end of the range.
    pub end: Option<String>,
    pub end_ns: Option<i64>,
    /// From `start` to `end` (or to the end of the range when still firing).
    pub duration_s: f64,
    pub still_firing: bool,
    /// Most extreme numeric value during the incident (highest for `above`, lowest for
    /// `below`); for other conditions the value that fired.
    pub peak: Option<f64>,
    pub peak_text: String,
    /// Firing notifications in this incident (1 + escalations/de-escalations).
    pub notifications: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleReport {
    pub name: String,
    pub measurement: String,
    pub field: String,
    /// `file:line` of the rule; empty for events under a name the rule set does not hold.
    pub origin: String,
    /// Samples that carried the watched field on series the rule's `match` accepts.
    pub samples: u64,
    pub series: u64,
    pub incidents: Vec<Incident>,
    pub critical: usize,
    pub warning: usize,
    pub still_firing: usize,
    pub notifications: u64,
    pub firing_s: f64,
    pub longest_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayReport {
    pub from: String,
    pub until: String,
    pub from_ns: i64,
    pub until_ns: i64,
    pub samples: u64,
    pub series: u64,
    pub queries: u64,
    pub rules: Vec<RuleReport>,
    /// Counted oddities (rows without a time or value, out-of-order rows).
    pub notes: Vec<String>,
}

fn severity_text<S: serde::Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

fn secs_to_ns(s: f64) -> i64 {
    (s * 1e9).round() as i64
}

impl ReplayReport {
    pub fn incidents(&self) -> usize {
        self.rules.iter().map(|r| r.incidents.len()).sum()
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay {} .. {}: {} samples from {} series, {} rule(s)",
            self.from,
            self.until,
            self.samples,
            self.series,
            self.rules.len()
        )?;
        for r in &self.rules {
            writeln!(f)?;
            let origin = if r.origin.is_empty() {
                String::new()
            } else {
                format!(", {}", r.origin)
            };
            writeln!(
                f,
                "rule {} ({}.{}{origin}): {} incident(s) ({} critical, {} warning), {} still firing, {} firing notification(s), {} samples from {} series",
                r.name,
                r.measurement,
                r.field,
                r.incidents.len(),
                r.critical,
                r.warning,
                r.still_firing,
                r.notifications,
                r.samples,
                r.series
            )?;
            if r.samples == 0 && !r.origin.is_empty() {
                writeln!(
                    f,
                    "  no samples: check the rule's measurement, field and match against what is stored"
                )?;
            }
            if !r.incidents.is_empty() {
                writeln!(
                    f,
                    "  firing time {} in total, longest {}",
                    format_duration_ns(secs_to_ns(r.firing_s)),
                    format_duration_ns(secs_to_ns(r.longest_s))
                )?;
            }
            for i in &r.incidents {
                let (end, dur) = match &i.end {
                    Some(e) => (e.clone(), format_duration_ns(secs_to_ns(i.duration_s))),
                    None => (
                        "still firing".to_string(),
                        format!(">= {}", format_duration_ns(secs_to_ns(i.duration_s))),
                    ),
                };
                writeln!(
                    f,
                    "  {:<8} {} -> {}  {}  peak {}  {}",
                    i.severity.as_str(),
                    i.start,
                    end,
                    dur,
                    i.peak_text,
                    i.series
                )?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        let crit: usize = self.rules.iter().map(|r| r.critical).sum();
        let warn: usize = self.rules.iter().map(|r| r.warning).sum();
        let still: usize = self.rules.iter().map(|r| r.still_firing).sum();
        let sent: u64 = self.rules.iter().map(|r| r.notifications).sum();
        writeln!(f)?;
        write!(
            f,
            "summary: {} rule(s), {} incident(s) ({crit} critical, {warn} warning), {still} still firing, {sent} firing notification(s); {} samples, {} series",
            self.rules.len(),
            self.incidents(),
            self.samples,
            self.series
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Replayer: engine + aggregation, no I/O

struct OpenIncident {
    severity: Severity,
    breach_start_ns: i64,
    start_ns: i64,
    peak: Option<f64>,
    peak_text: String,
    notifications: u32,
}

struct RuleAgg {
    report: RuleReport,
    /// Set for one-sided thresholds, the only conditions where a peak means something.
    direction: Option<Direction>,
    /// For a rule's stale (no-data) alerts, reported as `<rule>:stale`: the rule's index,
    /// whose sample counts it shares.
    base: Option<usize>,
}

/// Feeds samples through a fresh engine and aggregates the events into a [`ReplayReport`].
/// Samples must come in time order (across series) for ticks to mean what they do live.
pub struct Replayer {
    engine: Engine,
    rules: Vec<RuleAgg>,
    by_name: HashMap<Arc<str>, usize>,
    /// Per series: (rule index, whether the rule has seen the series' field yet).
    series: HashMap<SeriesKey, Vec<(usize, bool)>>,
    open: HashMap<(usize, SeriesKey), OpenIncident>,
    events: Vec<Event>,
    tick_ns: i64,
    next_tick_ns: i64,
    last_ts: i64,
    samples: u64,
    out_of_order: u64,
    skipped_rows: u64,
    queries: u64,
    from_ns: i64,
    until_ns: i64,
}

impl Replayer {
    pub fn new(rules: RuleSet, opts: &ReplayOptions) -> Replayer {
        let mut aggs = Vec::new();
        let mut by_name = HashMap::new();
        for (i, r) in rules.rules().iter().enumerate() {
            by_name.insert(r.name.clone(), i);
            let direction = match &r.condition {
                Condition::Threshold { direction, .. } if r.rate.is_none() => Some(*direction),
                _ => None,
            };
            aggs.push(RuleAgg {
                report: empty_rule_report(
                    &r.name,
                    &r.measurement,
                    &r.field,
                    format!("{}:{}", r.origin.display(), r.line),
                ),
                direction,
                base: None,
            });
        }
        let tick_ns = i64::try_from(opts.tick.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1);
        Replayer {
            engine: Engine::new(rules),
            rules: aggs,
            by_name,
            series: HashMap::new(),
            open: HashMap::new(),
            events: Vec::new(),
            tick_ns,
            next_tick_ns: opts.from_ns,
            last_ts: i64::MIN,
            samples: 0,
            out_of_order: 0,
            skipped_rows: 0,
            queries: 0,
            from_ns: opts.from_ns,
            until_ns: opts.until_ns,
        }
    }

    /// Runs the engine's clock up to `now` in `tick` steps, as the live stage would have.
    fn advance_clock(&mut self, now: i64) {
        while self.next_tick_ns <= now {
            let t = self.next_tick_ns;
            self.engine.tick(t, &mut self.events);
            self.drain_events();
            self.next_tick_ns = t.saturating_add(self.tick_ns);
        }
    }

    pub fn feed(&mut self, sample: &Sample) {
        self.samples += 1;
        if sample.timestamp_ns < self.last_ts {
            self.out_of_order += 1;
        } else {
            self.last_ts = sample.timestamp_ns;
        }
        self.advance_clock(sample.timestamp_ns);
        let engine_rules = self.engine.rules();
        let matched = self.series.entry(sample.series.clone()).or_insert_with(|| {
            engine_rules
                .rules()
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.measurement == sample.series.measurement
                        && r.matches_tags(&sample.series.tags)
                })
                .map(|(i, _)| (i, false))
                .collect()
        });
        for (idx, seen) in matched.iter_mut() {
            let field = &engine_rules.rules()[*idx].field;
            let Some(value) = sample.field(field) else {
                continue;
            };
            let agg = &mut self.rules[*idx];
            agg.report.samples += 1;
            if !*seen {
                *seen = true;
                agg.report.series += 1;
            }
            let direction = agg.direction;
            if self.open.is_empty() {
                continue;
            }
            if let Some(open) = self.open.get_mut(&(*idx, sample.series.clone())) {
                update_peak(open, direction, value);
            }
        }
        self.engine.observe(sample, &mut self.events);
        self.drain_events();
    }

    fn rule_index(&mut self, ev: &Event) -> usize {
        if let Some(&i) = self.by_name.get(&ev.rule) {
            return i;
        }
        // Stale alerts carry their own name; anything else unknown is still reported.
        let base = ev
            .rule
            .strip_suffix(STALE_SUFFIX)
            .and_then(|b| self.by_name.get(b).copied());
        let origin = base.map_or_else(String::new, |b| self.rules[b].report.origin.clone());
        let i = self.rules.len();
        self.rules.push(RuleAgg {
            report: empty_rule_report(&ev.rule, &ev.series.measurement, &ev.field, origin),
            direction: None,
            base,
        });
        self.by_name.insert(ev.rule.clone(), i);
        i
    }

    fn drain_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        for ev in &events {
            let idx = self.rule_index(ev);
            let direction = self.rules[idx].direction;
            let key = (idx, ev.series.clone());
            match ev.state {
                EventState::Firing => match self.open.get_mut(&key) {
                    Some(open) => {
                        open.severity = open.severity.max(ev.severity);
                        open.notifications += 1;
                        update_peak(open, direction, &ev.value);
                    }
                    None => {
                        let mut open = OpenIncident {
                            severity: ev.severity,
                            breach_start_ns: ev.started_ns,
                            start_ns: ev.timestamp_ns,
                            peak: None,
                            peak_text: format_value(&ev.value),
                            notifications: 1,
                        };
                        update_peak(&mut open, direction, &ev.value);
                        self.open.insert(key, open);
                    }
                },
                EventState::Resolved => {
                    if let Some(open) = self.open.remove(&key) {
                        let inc = close(open, &ev.series, Some(ev.timestamp_ns), ev.timestamp_ns);
                        self.rules[idx].report.incidents.push(inc);
                    }
                }
            }
        }
        // Keep the allocation for the next sample.
        events.clear();
        self.events = events;
    }

    /// Closes the run at `until` and builds the report.
    pub fn finish(mut self) -> ReplayReport {
        // Ticks up to (not at) the end of the range: `until` is exclusive, like the query.
        self.advance_clock(self.until_ns.saturating_sub(1));
        let open = std::mem::take(&mut self.open);
        for ((idx, series), o) in open {
            let inc = close(o, &series, None, self.until_ns);
            self.rules[idx].report.incidents.push(inc);
        }
        let mut notes = Vec::new();
        if self.skipped_rows > 0 {
            notes.push(format!(
                "{} row(s) without a timestamp or a field value were skipped",
                self.skipped_rows
            ));
        }
        if self.out_of_order > 0 {
            notes.push(format!(
                "{} sample(s) arrived out of time order; the engine ignores a sample older than the last one of its series",
                self.out_of_order
            ));
        }
        let counts: Vec<(u64, u64)> = self
            .rules
            .iter()
            .map(|a| (a.report.samples, a.report.series))
            .collect();
        let rules = self
            .rules
            .into_iter()
            .map(|mut a| {
                if let Some(b) = a.base {
                    (a.report.samples, a.report.series) = counts[b];
                }
                finish_rule(a.report)
            })
            .collect();
        ReplayReport {
            from: format_time(self.from_ns),
            until: format_time(self.until_ns),
            from_ns: self.from_ns,
            until_ns: self.until_ns,
            samples: self.samples,
            series: self.series.len() as u64,
            queries: self.queries,
            rules,
            notes,
        }
    }
}

fn empty_rule_report(name: &str, measurement: &str, field: &str, origin: String) -> RuleReport {
    RuleReport {
        name: name.to_string(),
        measurement: measurement.to_string(),
        field: field.to_string(),
        origin,
        samples: 0,
        series: 0,
        incidents: Vec::new(),
        critical: 0,
        warning: 0,
        still_firing: 0,
        notifications: 0,
        firing_s: 0.0,
        longest_s: 0.0,
    }
}

fn update_peak(open: &mut OpenIncident, direction: Option<Direction>, value: &FieldValue) {
    let Some(direction) = direction else {
        return;
    };
    let Some(x) = value.as_f64().filter(|x| x.is_finite()) else {
        return;
    };
    let better = match (open.peak, direction) {
        (None, _) => true,
        (Some(p), Direction::Above) => x > p,
        (Some(p), Direction::Below) => x < p,
    };
    if better {
        open.peak = Some(x);
        open.peak_text = format_value(&FieldValue::Float(x));
    }
}

fn close(o: OpenIncident, series: &SeriesKey, end_ns: Option<i64>, until_ns: i64) -> Incident {
    let end = end_ns.unwrap_or(until_ns);
    Incident {
        series: series.to_string(),
        severity: o.severity,
        breach_start: format_time(o.breach_start_ns),
        breach_start_ns: o.breach_start_ns,
        start: format_time(o.start_ns),
        start_ns: o.start_ns,
        end: end_ns.map(format_time),
        end_ns,
        duration_s: (end - o.start_ns).max(0) as f64 / 1e9,
        still_firing: end_ns.is_none(),
        peak: o.peak,
        peak_text: o.peak_text,
        notifications: o.notifications,
    }
}

fn finish_rule(mut r: RuleReport) -> RuleReport {
    r.incidents
        .sort_by(|a, b| (a.start_ns, &a.series).cmp(&(b.start_ns, &b.series)));
    r.critical = r
        .incidents
        .iter()
        .filter(|i| i.severity == Severity::Critical)
        .count();
    r.warning = r
        .incidents
        .iter()
        .filter(|i| i.severity == Severity::Warning)
        .count();
    r.still_firing = r.incidents.iter().filter(|i| i.still_firing).count();
    r.notifications = r.incidents.iter().map(|i| u64::from(i.notifications)).sum();
    r.firing_s = r.incidents.iter().map(|i| i.duration_s).sum();
    r.longest_s = r.incidents.iter().map(|i| i.duration_s).fold(0.0, f64::max);
    r
}

// ---------------------------------------------------------------------------------------------
// InfluxDB client

enum Auth {
    None,
    Basic { user: String, password: String },
    Header(reqwest::header::HeaderValue),
}

/// A read-only client for the v1 `/query` endpoint, configured from `[influx]`.
pub struct QueryClient {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    db: String,
    rp: Option<String>,
    auth: Auth,
}

impl QueryClient {
    pub fn new(cfg: &InfluxConfig) -> Result<QueryClient, ReplayError> {
        cfg.validate()?;
        let bad_url = |problem: String| InfluxError::Config {
            key: "url",
            problem,
            fix: "write it like \"http://127.0.0.1:8086\"",
        };
        let mut endpoint =
            reqwest::Url::parse(&cfg.url).map_err(|e| bad_url(format!("{:?}: {e}", cfg.url)))?;
        endpoint
            .path_segments_mut()
            .map_err(|()| bad_url(format!("{:?} cannot take a path", cfg.url)))?
            .pop_if_empty()
            .push("query");
        let secret = |key: &'static str, s: &crate::config::Secret| {
            s.resolve()
                .map_err(|source| InfluxError::Secret { key, source })
        };
        let header = |scheme: &str| -> Result<Auth, InfluxError> {
            let Some(token) = &cfg.token else {
                return Ok(Auth::None);
            };
            let token = secret("token", token)?;
            let mut v = reqwest::header::HeaderValue::from_str(&format!("{scheme} {token}"))
                .map_err(|_| InfluxError::Config {
                    key: "token",
                    problem: "contains characters not allowed in an HTTP header".into(),
                    fix: "check the token file for stray bytes",
                })?;
            v.set_sensitive(true);
            Ok(Auth::Header(v))
        };
        let (db, auth) = match cfg.api {
            InfluxApi::V1 => (
                cfg.database.clone().unwrap_or_default(),
                match (&cfg.username, &cfg.password) {
                    (Some(user), Some(p)) => Auth::Basic {
                        user: user.clone(),
                        password: secret("password", p)?,
                    },
                    _ => Auth::None,
                },
            ),
            // 2.x maps a v1 database name onto a bucket (DBRP); 2.1+ has a virtual mapping
            // named after every bucket.
            InfluxApi::V2 => (cfg.bucket.clone().unwrap_or_default(), header("Token")?),
            InfluxApi::V3 => (cfg.database.clone().unwrap_or_default(), header("Bearer")?),
        };
        let client = reqwest::Client::builder()
            // A big window can take a while in total; what `timeout` bounds is each wait.
            .read_timeout(cfg.timeout.max(Duration::from_secs(30)))
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!(
                "sitewatch/",
                env!("CARGO_PKG_VERSION"),
                " rules-test"
            ))
            .build()
            .map_err(InfluxError::Client)?;
        Ok(QueryClient {
            client,
            endpoint,
            db,
            rp: cfg.retention_policy.clone(),
            auth,
        })
    }

    /// The query URL without parameters or credentials, for messages.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// Runs `query` and hands each parsed chunk's samples to `sink`, in the order received.
    /// Returns the number of rows skipped as unusable.
    async fn select(
        &self,
        query: &str,
        measurement: &Arc<str>,
        fields: &[Arc<str>],
        sink: &mut dyn FnMut(Vec<Sample>),
    ) -> Result<usize, ReplayError> {
        let mut url = self.endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("db", &self.db);
            if let Some(rp) = &self.rp {
                q.append_pair("rp", rp);
            }
            q.append_pair("epoch", "ns")
                .append_pair("chunked", "true")
                .append_pair("chunk_size", &CHUNK_SIZE.to_string())
                .append_pair("q", query);
        }
        let mut req = self.client.get(url);
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Header(v) => req.header(reqwest::header::AUTHORIZATION, v.clone()),
        };
        let at = self.endpoint.to_string();
        // The request URL carries the whole query; messages name the endpoint instead.
        let mut resp = req.send().await.map_err(|e| ReplayError::Unreachable {
            url: at.clone(),
            source: e.without_url(),
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            let body = match serde_json::from_str::<Value>(&body) {
                Ok(v) => v
                    .get("error")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or(body),
                Err(_) => body,
            };
            return Err(ReplayError::Http {
                url: at,
                status,
                hint: http_hint(status),
                body: body.chars().take(300).collect(),
            });
        }
        let mut skipped = 0usize;
        let mut handle = |line: &[u8]| -> Result<(), ReplayError> {
            let text = String::from_utf8_lossy(line);
            if text.trim().is_empty() {
                return Ok(());
            }
            match parse_answer(&text, measurement, fields) {
                Ok(chunk) => {
                    skipped += chunk.skipped_rows;
                    sink(chunk.samples);
                    Ok(())
                }
                Err(AnswerProblem::Server(message)) => Err(ReplayError::Query {
                    url: at.clone(),
                    query: query.to_string(),
                    hint: query_hint(&message),
                    message,
                }),
                Err(AnswerProblem::Malformed(problem)) => Err(ReplayError::Response {
                    url: at.clone(),
                    query: query.to_string(),
                    problem,
                }),
            }
        };
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = resp.chunk().await.map_err(|e| ReplayError::Unreachable {
                url: at.clone(),
                source: e.without_url(),
            })?;
            let Some(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            // Chunked answers are one JSON object per line.
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                handle(&line)?;
            }
        }
        handle(&buf)?;
        Ok(skipped)
    }
}

/// Replays `[from, until)` of the history the rules watch through a fresh engine.
pub async fn replay(
    influx: &InfluxConfig,
    rules: RuleSet,
    opts: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    if rules.is_empty() {
        return Err(ReplayError::NoRules);
    }
    let client = QueryClient::new(influx)?;
    let watched = watched_fields(&rules);
    let mut rp = Replayer::new(rules, opts);
    let window_ns = i64::try_from(opts.window.as_nanos())
        .unwrap_or(i64::MAX)
        .max(NS_PER_SEC);
    let mut start = opts.from_ns;
    while start < opts.until_ns {
        let end = start.saturating_add(window_ns).min(opts.until_ns);
        if let [(m, fields)] = watched.iter().collect::<Vec<_>>()[..] {
            // Rows arrive in time order: straight to the engine, nothing held.
            let q = influxql(m, fields, start, end);
            rp.queries += 1;
            let skipped = client
                .select(&q, m, fields, &mut |samples| {
                    for s in &samples {
                        rp.feed(s);
                    }
                })
                .await?;
            rp.skipped_rows += skipped as u64;
        } else {
            let mut held: Vec<Sample> = Vec::new();
            for (m, fields) in &watched {
                let q = influxql(m, fields, start, end);
                rp.queries += 1;
                let skipped = client
                    .select(&q, m, fields, &mut |mut samples| held.append(&mut samples))
                    .await?;
                rp.skipped_rows += skipped as u64;
            }
            // Stable: rows of one measurement keep the server's order at equal times.
            held.sort_by_key(|s| s.timestamp_ns);
            for s in &held {
                rp.feed(s);
            }
        }
        tracing::debug!(
            from = %format_time(start),
            until = %format_time(end),
            samples = rp.samples,
            "replayed window"
        );
        start = end;
    }
    Ok(rp.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::config::parse_rules;
    use std::path::Path;

    const S: i64 = NS_PER_SEC;

    fn ruleset(text: &str) -> RuleSet {
        RuleSet::new(parse_rules(text, Path::new("r.toml")).unwrap()).unwrap()
    }

    const RULES: &str = r#"
[[rule]]
name = "hot"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { warning = 27.0, warning_clear = 26.0, critical = 32.0, critical_clear = 31.0 }
for = "10s"

[[rule]]
name = "ups"
measurement = "ups"
field = "source"
equals = { critical = "battery" }

[[rule]]
name = "typo"
measurement = "envv"
field = "t"
below = { warning = 10.0 }
"#;

    fn opts(from: i64, until: i64) -> ReplayOptions {
        ReplayOptions {
            from_ns: from,
            until_ns: until,
            window: Duration::from_secs(3600),
            tick: Duration::from_secs(1),
        }
    }

    fn env(rack: &str, ts: i64, t: f64) -> Sample {
        Sample::new(SeriesKey::new("env", TagSet::new([("rack", rack)])), ts * S)
            .with_field("t", FieldValue::Float(t))
    }

    #[test]
    fn aggregates_incidents_peaks_and_still_firing() {
        let mut rp = Replayer::new(ruleset(RULES), &opts(0, 1000 * S));
        // r1: warning at 20 s (breach from 10 s), critical at 40 s, back to warning at 60 s,
        // resolved at 100 s.
        let r1 = [
            (0, 20.0),
            (10, 28.0),
            (20, 29.0),
            (30, 33.0),
            (40, 34.5),
            (50, 33.0),
            (60, 30.0),
            (100, 25.0),
        ];
        // r2: breaches only for 5 s (filtered by `for`), then fires at 300 s and never clears.
        let r2 = [
            (0, 20.0),
            (200, 28.0),
            (205, 20.0),
            (290, 28.0),
            (300, 28.5),
        ];
        let mut all: Vec<Sample> = r1
            .iter()
            .map(|&(t, v)| env("r1", t, v))
            .chain(r2.iter().map(|&(t, v)| env("r2", t, v)))
            .collect();
        all.push(
            Sample::new(SeriesKey::new("ups", TagSet::empty()), 500 * S)
                .with_field("source", FieldValue::Str("battery".into())),
        );
        all.push(
            Sample::new(SeriesKey::new("ups", TagSet::empty()), 560 * S)
                .with_field("source", FieldValue::Str("normal".into())),
        );
        // A series the rule's match rejects (no rack tag) is not counted for it.
        all.push(
            Sample::new(SeriesKey::new("env", TagSet::empty()), 10 * S)
                .with_field("t", FieldValue::Float(99.0)),
        );
        all.sort_by_key(|s| s.timestamp_ns);
        for s in &all {
            rp.feed(s);
        }
        let rep = rp.finish();
        assert_eq!(rep.samples, all.len() as u64);
        assert_eq!(rep.series, 4);
        let hot = &rep.rules[0];
        assert_eq!(
            (hot.samples, hot.series, hot.incidents.len()),
            (13, 2, 2),
            "{hot:#?}"
        );
        assert_eq!((hot.critical, hot.warning, hot.still_firing), (1, 1, 1));
        // r1: warning, critical, warning; r2: warning.
        assert_eq!(hot.notifications, 4);
        let a = &hot.incidents[0];
        assert_eq!(a.series, "env,rack=r1");
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(
            (a.breach_start_ns, a.start_ns, a.end_ns),
            (10 * S, 20 * S, Some(100 * S))
        );
        assert_eq!(a.duration_s, 80.0);
        assert_eq!(a.peak, Some(34.5));
        assert_eq!(a.notifications, 3);
        let b = &hot.incidents[1];
        assert_eq!(b.series, "env,rack=r2");
        assert_eq!(
            (b.start_ns, b.end_ns, b.still_firing),
            (300 * S, None, true)
        );
        assert_eq!(b.duration_s, 700.0);
        assert_eq!(b.peak, Some(28.5));
        assert_eq!(hot.firing_s, 780.0);
        assert_eq!(hot.longest_s, 700.0);

        let ups = &rep.rules[1];
        assert_eq!(ups.incidents.len(), 1);
        assert_eq!(ups.incidents[0].peak, None);
        assert_eq!(ups.incidents[0].peak_text, "battery");
        assert_eq!(ups.incidents[0].duration_s, 60.0);
        let typo = &rep.rules[2];
        assert_eq!((typo.samples, typo.incidents.len()), (0, 0));

        let text = rep.to_string();
        for want in [
            "replay 1970-01-01T00:00:00Z .. 1970-01-01T00:16:40Z: 16 samples from 4 series, 3 rule(s)",
            "rule hot (env.t, r.toml:2): 2 incident(s) (1 critical, 1 warning), 1 still firing, 4 firing notification(s), 13 samples from 2 series",
            "  firing time 13m in total, longest 11m 40s",
            "  critical 1970-01-01T00:00:20Z -> 1970-01-01T00:01:40Z  1m 20s  peak 34.5  env,rack=r1",
            "  warning  1970-01-01T00:05:00Z -> still firing  >= 11m 40s  peak 28.5  env,rack=r2",
            "  critical 1970-01-01T00:08:20Z -> 1970-01-01T00:09:20Z  1m  peak battery  ups",
            "rule typo (envv.t, r.toml:16): 0 incident(s)",
            "  no samples: check the rule's measurement",
            "summary: 3 rule(s), 3 incident(s) (2 critical, 1 warning), 1 still firing, 5 firing notification(s); 16 samples, 4 series",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let json = serde_json::to_value(&rep).unwrap();
        assert_eq!(json["rules"][0]["incidents"][0]["severity"], "critical");
        assert_eq!(json["rules"][0]["incidents"][1]["end"], Value::Null);
    }

    #[test]
    fn stale_rules_fire_on_the_replayed_clock() {
        let text = r#"
[[rule]]
name = "silent"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { critical = 50.0 }
stale_after = "5m"
"#;
        let mut rp = Replayer::new(ruleset(text), &opts(0, 3600 * S));
        // Every 10 s for 10 min, then nothing for 20 min, then again.
        for t in (0..600).step_by(10).chain((1800..2400).step_by(10)) {
            rp.feed(&env("r1", t, 20.0));
        }
        let rep = rp.finish();
        assert!(rep.rules[0].incidents.is_empty());
        let r = &rep.rules[1];
        assert_eq!(r.name, "silent:stale");
        assert_eq!(
            (r.origin.as_str(), r.samples, r.series),
            ("r.toml:2", 120, 1)
        );
        assert_eq!(r.incidents.len(), 2, "{r:#?}");
        // Last sample at 590 s: stale 5 min later on the replayed clock, until data is back.
        let i = &r.incidents[0];
        assert_eq!((i.start_ns, i.end_ns), (890 * S, Some(1800 * S)), "{i:#?}");
        // Silent again from 2390 s to the end of the range.
        let i = &r.incidents[1];
        assert_eq!((i.start_ns, i.end_ns), (2690 * S, None), "{i:#?}");
        assert_eq!(i.duration_s, 910.0);
    }

    #[test]
    fn out_of_order_samples_are_noted() {
        let mut rp = Replayer::new(ruleset(RULES), &opts(0, 100 * S));
        rp.feed(&env("r1", 10, 20.0));
        rp.feed(&env("r1", 5, 40.0));
        let rep = rp.finish();
        assert!(rep.notes[0].contains("1 sample(s) arrived out of time order"));
        assert_eq!(rep.incidents(), 0);
    }

    /// Issue 12: `--rule X` where X has `depends_on` replays X with what it depends on.
    #[test]
    fn a_selected_rule_brings_what_it_depends_on() {
        let set = ruleset(
            "[[rule]]\nname = \"down\"\nmeasurement = \"snmp_poll\"\nfield = \"up\"\nequals = { critical = false }\n\
             [[rule]]\nname = \"hot\"\nmeasurement = \"env\"\nfield = \"t\"\nabove = { critical = 30.0 }\n\
             depends_on = { rule = \"down\", match_tags = [\"device\"] }\n",
        );
        let picked = select_rules(&set, &["hot".into()]).unwrap();
        let names: Vec<&str> = picked.rules().iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["hot", "down"]);
    }

    #[test]
    fn selects_rules_and_builds_queries() {
        let set = ruleset(RULES);
        let one = select_rules(&set, &["ups".into(), "ups".into()]).unwrap();
        assert_eq!(one.len(), 1);
        let e = select_rules(&set, &["nope".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"nope\"") && e.contains("hot, ups, typo"),
            "{e}"
        );
        assert!(matches!(
            select_rules(&RuleSet::default(), &[]),
            Err(ReplayError::NoRules)
        ));
        let got: Vec<(String, Vec<String>)> = watched_fields(&set)
            .iter()
            .map(|(m, f)| (m.to_string(), f.iter().map(|x| x.to_string()).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("env".into(), vec!["t".into()]),
                ("envv".into(), vec!["t".into()]),
                ("ups".into(), vec!["source".into()])
            ]
        );
        assert_eq!(
            influxql("we\"ird", &["a b".into(), "c\\".into()], 5, 9),
            r#"SELECT "a b"::field, "c\\"::field, *::tag FROM "we\"ird" WHERE time >= 5 AND time < 9 ORDER BY time ASC"#
        );
    }

    #[test]
    fn parses_influxdb_answers() {
        // Shape captured from influxd 1.6: tags as columns, null where a series lacks a tag,
        // the tag copy of a same-named field renamed with _1.
        let m: Arc<str> = "env".into();
        let fields: Vec<Arc<str>> = vec!["temperature".into(), "rack".into()];
        let text = r#"{"results":[{"statement_id":0,"series":[{"name":"env","columns":["time","temperature","rack","rack_1","room","site"],"values":[[500000000,25,null,"c","z","y"],[1000000000,20,null,"a",null,"x"],[2000000000,null,null,"b",null,null],["bad",1,null,"a",null,null],[3000000000,true,"x","a",null,null]],"partial":true}],"partial":true}]}"#;
        let got = parse_answer(text, &m, &fields).unwrap();
        assert_eq!(got.skipped_rows, 2);
        assert_eq!(got.samples.len(), 3);
        assert_eq!(
            got.samples[0].series.to_string(),
            "env,rack=c,room=z,site=y"
        );
        assert_eq!(got.samples[0].timestamp_ns, 500_000_000);
        assert_eq!(
            got.samples[0].fields,
            vec![("temperature".into(), FieldValue::Float(25.0))]
        );
        assert_eq!(got.samples[1].series.to_string(), "env,rack=a,site=x");
        assert_eq!(
            got.samples[2].fields,
            vec![
                ("temperature".into(), FieldValue::Bool(true)),
                ("rack".into(), FieldValue::Str("x".into()))
            ]
        );
        assert_eq!(
            parse_answer(r#"{"results":[{"statement_id":0}]}"#, &m, &fields).unwrap(),
            ParsedChunk::default()
        );
        assert_eq!(
            parse_answer(
                r#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#,
                &m,
                &fields
            ),
            Err(AnswerProblem::Server("database not found: x".into()))
        );
        assert_eq!(
            parse_answer(r#"{"error":"field type conflict"}"#, &m, &fields),
            Err(AnswerProblem::Server("field type conflict".into()))
        );
        for bad in [
            "",
            "[]",
            "{\"results\":3}",
            r#"{"results":[{"series":[{"columns":["t"]}]}]}"#,
            r#"{"results":[{"series":[{"columns":["time","temperature","rack"],"values":7}]}]}"#,
        ] {
            assert!(
                matches!(
                    parse_answer(bad, &m, &fields),
                    Err(AnswerProblem::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_and_formats_times() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2026-11-23T16:14:09Z", 1_795_450_449 * S),
            ("2026-11-23T18:14:09+02:00", 1_795_450_449 * S),
            ("2026-11-23 16:14:09.25z", 1_795_450_449 * S + 250_000_000),
            ("2026-11-23", 1_795_392_000 * S),
            ("2024-02-29T00:00:00-00:30", 1_709_166_600 * S),
        ];
        for (text, ns) in cases {
            assert_eq!(parse_time(text), Ok(ns), "{text}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-11-23T16:14:09",
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "26-11-23",
            "2026-11-23T24:00:00Z",
            "2026-11-23T16:14Z",
            "2026-11-23T16:14:09.Z",
            "2026-11-23T16:14:09+0200",
            "1969-12-31T23:59:59Z",
            "2262-04-12T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time(1_795_450_449 * S), "2026-11-23T16:14:09Z");
        assert_eq!(
            format_time(1_795_450_449 * S + 250_000_000),
            "2026-11-23T16:14:09.250Z"
        );
        assert_eq!(format_duration_ns(3723 * S + 400_000_000), "1h 2m 3s");
        assert_eq!(format_duration_ns(250_000_000), "250ms");
    }

    #[test]
    fn options_from_cli_arguments() {
        let now = 1_000_000 * S;
        let o = ReplayOptions::from_args(Some(Duration::from_secs(3600)), None, None, now).unwrap();
        assert_eq!((o.from_ns, o.until_ns), (now - 3600 * S, now));
        let o = ReplayOptions::from_args(
            None,
            Some("1970-01-01T00:00:10Z"),
            Some("1970-01-01T00:00:20Z"),
            now,
        )
        .unwrap();
        assert_eq!((o.from_ns, o.until_ns), (10 * S, 20 * S));
        let e = ReplayOptions::from_args(None, None, None, now).unwrap_err();
        assert!(e.to_string().contains("--since 7d"), "{e}");
        let e = ReplayOptions::from_args(None, Some("1970-01-02"), Some("1970-01-01"), now)
            .unwrap_err();
        assert!(matches!(e, ReplayError::EmptyRange { .. }), "{e}");
        let e = ReplayOptions::from_args(None, Some("monday"), None, now).unwrap_err();
        assert!(e.to_string().starts_with("--from \"monday\""), "{e}");
    }

    proptest::proptest! {
        /// Answers come from a server (or whatever listens on that URL): never a panic.
        #[test]
        fn answer_parser_never_panics(text in "\\PC{0,300}") {
            let fields: Vec<Arc<str>> = vec!["t".into()];
            let _ = parse_answer(&text, &"m".into(), &fields);
        }

        /// Structurally plausible answers with arbitrary cells: never a panic, and every
        /// sample has at least one field.
        #[test]
        fn structured_answers_never_panic(
            cols in proptest::collection::vec("(time|t|u|rack|t_1|[a-z_0-9]{0,4})", 0..6),
            rows in proptest::collection::vec(
                proptest::collection::vec(
                    "(null|true|-?[0-9]{1,20}|-?[0-9]\\.[0-9]e[+-]?[0-9]{1,3}|\"[a-z]{0,3}\"|\\[\\]|\\{\\})", 0..7),
                0..5),
        ) {
            let fields: Vec<Arc<str>> = vec!["t".into(), "u".into()];
            let cols: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
            let rows: Vec<String> = rows.iter().map(|r| format!("[{}]", r.join(","))).collect();
            let text = format!(
                "{{\"results\":[{{\"statement_id\":0,\"series\":[{{\"name\":\"m\",\"columns\":[{}],\"values\":[{}]}}]}}]}}",
                cols.join(","),
                rows.join(",")
            );
            if let Ok(chunk) = parse_answer(&text, &"m".into(), &fields) {
                for s in &chunk.samples {
                    proptest::prop_assert!(!s.fields.is_empty());
                }
            }
        }

        #[test]
        fn time_parser_never_panics(s in "[0-9TZ:+\\-. ]{0,40}") {
            let _ = parse_time(&s);
        }

        #[test]
        fn times_round_trip(secs in 0i64..9_223_372_035, ms in 0i64..1000) {
            let ns = secs * S + ms * 1_000_000;
            proptest::prop_assert_eq!(parse_time(&format_time(ns)), Ok(ns));
        }
    }
}
