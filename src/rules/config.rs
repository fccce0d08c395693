//! Rule files: TOML schema, validation with `file:line` errors, and the `[rules]` table of the
//! main config that says where rule files live.
//!
//! ```toml
//! [[rule]]
//! name = "rack_inlet_temperature"
//! measurement = "environment"
//! field = "temperature"
//! match = { site = "*", rack = "*", room = "*" }
//! above = { warning = 27.0, warning_clear = 26.0, critical = 32.0, critical_clear = 31.0 }
//! for = "30s"
//! message = "{rack} in {room}: inlet {value} °C above {threshold} °C"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use toml::Spanned;

use crate::model::{FieldValue, Severity, TagSet};

use super::silence::{parse_hhmm, parse_rfc3339, DailyWindow, Silence};

// ---------------------------------------------------------------------------------------------
// Errors

/// One semantic problem in one rule, located by file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleProblem {
    pub path: PathBuf,
    pub line: usize,
    pub rule: String,
    pub problem: String,
    pub hint: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: rule '{}': {}; {}",
            self.path.display(),
            self.line,
            self.rule,
            self.problem,
            self.hint
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: cannot read rule file: {source}; check the path in [rules] files and that sitewatch may read it")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, wrong value types and unknown keys (serde errors, located by toml).
    #[error(
        "{path}:{line}:{column}: {message}; fix the rule file (see deploy/rules/ for examples)"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Every semantic problem found, one per line, so `sitewatch check` shows them all at once.
    #[error("{}", join_problems(.0))]
    Invalid(Vec<RuleProblem>),
    #[error("[rules] files pattern '{pattern}' (relative to {base}) matches no file; fix the pattern or create the rule file")]
    NoMatch { pattern: String, base: PathBuf },
    #[error("[rules] files pattern '{pattern}' is not a valid glob: {message}; use *, ** and ? wildcards, e.g. \"rules/*.toml\"")]
    BadPattern { pattern: String, message: String },
    #[error("{path}: cannot list directory while resolving [rules] files: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn join_problems(problems: &[RuleProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// Main config: where the rule files are

/// The `[rules]` table of the main config.
///
/// ```toml
/// [rules]
/// files = ["rules/*.toml"]
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Glob patterns, relative to the main config file's directory unless absolute.
    #[serde(default)]
    pub files: Vec<String>,
    /// Where alarm state is kept across restarts (JSON, written atomically every 30 s and on
    /// shutdown); relative to the main config file's directory unless absolute. Without it a
    /// restart forgets which alarms are firing.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// How often rule files are checked for changes (mtime and size) and reloaded; "0s"
    /// turns file watching off (SIGHUP still reloads). Default 5 s.
    #[serde(default, with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
    /// Samples stamped further ahead of the clock than this are not evaluated (counted in
    /// `sitewatch_rules_future_samples_total`; they are still stored): one sample from a
    /// device with a clock a year ahead must not make every later, correct sample of its
    /// series look out of order. Default 5 min.
    #[serde(default, with = "humantime_serde")]
    pub max_future_skew: Option<Duration>,
}

/// Default for [`RulesConfig::watch_interval`].
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// Default for [`RulesConfig::max_future_skew`].
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(300);

impl RulesConfig {
    /// Expands the patterns into a sorted, de-duplicated list of files. A pattern that matches
    /// nothing is an error: a typo must not silently disable every alarm.
    pub fn resolve(&self, base_dir: &Path) -> Result<Vec<PathBuf>, RulesError> {
        let mut out = Vec::new();
        for pattern in &self.files {
            let found = expand_pattern(pattern, base_dir)?;
            if found.is_empty() {
                return Err(RulesError::NoMatch {
                    pattern: pattern.clone(),
                    base: base_dir.to_path_buf(),
                });
            }
            out.extend(found);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The state file with the base directory applied, if one is configured.
    pub fn state_path(&self, base_dir: &Path) -> Option<PathBuf> {
        self.state_file.as_ref().map(|p| base_dir.join(p))
    }

    pub fn watch_every(&self) -> Option<Duration> {
        match self.watch_interval {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(DEFAULT_WATCH_INTERVAL),
        }
    }
}

fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Deepest directory level a `**` pattern descends to; guards against symlink loops.
const MAX_WALK_DEPTH: usize = 32;

fn expand_pattern(pattern: &str, base_dir: &Path) -> Result<Vec<PathBuf>, RulesError> {
    let pattern_path = Path::new(pattern);
    if !has_glob_meta(pattern) {
        let full = base_dir.join(pattern_path);
        return Ok(if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        });
    }
    // Walk only below the literal prefix of the pattern, and only as deep as it can reach. The
    // glob is matched against the path below that prefix, so glob characters in the config
    // directory's own name do not matter.
    let mut prefix = PathBuf::new();
    let mut rest = Vec::new();
    for comp in pattern_path.components() {
        let s = comp.as_os_str().to_string_lossy();
        if rest.is_empty() && !has_glob_meta(&s) {
            prefix.push(comp);
        } else {
            rest.push(s.into_owned());
        }
    }
    let root = base_dir.join(prefix);
    let max_depth = if rest.iter().any(|c| c.contains("**")) {
        MAX_WALK_DEPTH
    } else {
        rest.len()
    };
    let matcher = GlobBuilder::new(&rest.join("/"))
        .literal_separator(true)
        .build()
        .map_err(|e| RulesError::BadPattern {
            pattern: pattern.to_string(),
            message: e.kind().to_string(),
        })?
        .compile_matcher();
    let mut found = Vec::new();
    if root.is_dir() {
        walk(&root, &root, 1, max_depth, &matcher, &mut found)?;
    }
    Ok(found)
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    max_depth: usize,
    matcher: &GlobMatcher,
    found: &mut Vec<PathBuf>,
) -> Result<(), RulesError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RulesError::Walk {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| RulesError::Walk {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        // Follows symlinks on purpose: config management often links rule files in.
        if path.is_dir() {
            if depth < max_depth {
                walk(root, &path, depth + 1, max_depth, matcher, found)?;
            }
        } else if path.is_file()
            && path.strip_prefix(root).is_ok_and(|rel| {
                let rel: Vec<_> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect();
                matcher.is_match(rel.join("/"))
            })
        {
            found.push(path);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validated rules

/// One threshold level: fires when the value goes beyond `at`, clears only once it is back
/// past `clear` (hysteresis). With no explicit clear, `clear == at`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub at: f64,
    pub clear: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

/// The value an `equals` level is waiting for.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    Str(String),
    Bool(bool),
    Num(f64),
}

impl Expected {
    /// `None` when the sample's value can never be compared with this expectation (a string
    /// rule on a numeric field), so a type mix-up is counted instead of silently never firing.
    pub(crate) fn matches(&self, value: &FieldValue) -> Option<bool> {
        match (self, value) {
            (Expected::Str(e), FieldValue::Str(v)) => Some(e.as_str() == v.as_ref()),
            (Expected::Str(_), _) => None,
            (_, FieldValue::Str(_)) => None,
            (Expected::Bool(e), FieldValue::Bool(v)) => Some(e == v),
            // Dry contacts often arrive as 0/1 integers; `true` means 1.
            (Expected::Bool(e), v) => v.as_f64().map(|x| x == if *e { 1.0 } else { 0.0 }),
            (Expected::Num(e), v) => v.as_f64().map(|x| x == *e),
        }
    }

    pub(crate) fn threshold(&self) -> Option<f64> {
        match self {
            Expected::Num(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Str(s) => f.write_str(s),
            Expected::Bool(b) => write!(f, "{b}"),
            Expected::Num(n) => f.write_str(&format_number(*n)),
        }
    }
}

/// A range for `outside` / `inside`: `low` and `high` each with their own clear value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Band {
    pub low: Level,
    pub high: Level,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Threshold {
        direction: Direction,
        warning: Option<Level>,
        critical: Option<Level>,
    },
    Equals {
        warning: Option<Expected>,
        critical: Option<Expected>,
    },
    /// `outside`: fires when the value leaves the band (below `low.at` or above `high.at`) and
    /// clears once it is back inside the clear band. `inside` (`inside == true`): fires while
    /// the value is strictly within the band and clears once it is outside the clear band.
    Band {
        inside: bool,
        warning: Option<Band>,
        critical: Option<Band>,
    },
}

impl Condition {
    /// Severity the value calls for, given the severity currently firing (`active`): a level
    /// already firing holds until the value is back past its clear value. `None` when the value
    /// cannot be evaluated (wrong type, NaN).
    pub(crate) fn classify(&self, value: &FieldValue, active: Severity) -> Option<Severity> {
        match self {
            Condition::Threshold {
                direction,
                warning,
                critical,
            } => {
                let x = value.as_f64().filter(|x| !x.is_nan())?;
                let beyond = |limit: f64| match direction {
                    Direction::Above => x > limit,
                    Direction::Below => x < limit,
                };
                let holds = |level: &Option<Level>, sev: Severity| {
                    level
                        .as_ref()
                        .is_some_and(|l| beyond(l.at) || (active >= sev && beyond(l.clear)))
                };
                Some(pick(
                    holds(critical, Severity::Critical),
                    holds(warning, Severity::Warning),
                ))
            }
            Condition::Band {
                inside,
                warning,
                critical,
            } => {
                let x = value.as_f64().filter(|x| !x.is_nan())?;
                let breach = |lo: f64, hi: f64| {
                    if *inside {
                        x > lo && x < hi
                    } else {
                        x < lo || x > hi
                    }
                };
                let holds = |band: &Option<Band>, sev: Severity| {
                    band.as_ref().is_some_and(|b| {
                        breach(b.low.at, b.high.at)
                            || (active >= sev && breach(b.low.clear, b.high.clear))
                    })
                };
                Some(pick(
                    holds(critical, Severity::Critical),
                    holds(warning, Severity::Warning),
                ))
            }
            Condition::Equals { warning, critical } => {
                let c = critical.as_ref().map(|e| e.matches(value));
                let w = warning.as_ref().map(|e| e.matches(value));
                if c.flatten().is_none() && w.flatten().is_none() {
                    return None;
                }
                Some(pick(c == Some(Some(true)), w == Some(Some(true))))
            }
        }
    }

    /// The level's threshold for event records (numeric only). For a band, the edge nearer
    /// to the value, i.e. the one that was crossed.
    pub(crate) fn threshold(&self, sev: Severity, value: &FieldValue) -> Option<f64> {
        match self {
            Condition::Threshold {
                warning, critical, ..
            } => level_of(warning, critical, sev).map(|l| l.at),
            Condition::Band {
                warning, critical, ..
            } => band_of(warning, critical, sev).map(|b| nearer(b, value, |l| l.at)),
            Condition::Equals { warning, critical } => match sev {
                Severity::Warning => warning.as_ref().and_then(Expected::threshold),
                Severity::Critical => critical.as_ref().and_then(Expected::threshold),
                Severity::Ok => None,
            },
        }
    }

    /// Text for `{threshold}` in a firing message.
    pub(crate) fn threshold_text(&self, sev: Severity, value: &FieldValue) -> String {
        match self {
            Condition::Equals { warning, critical } => match sev {
                Severity::Warning => warning.as_ref().map(ToString::to_string),
                Severity::Critical => critical.as_ref().map(ToString::to_string),
                Severity::Ok => None,
            }
            .unwrap_or_default(),
            _ => self
                .threshold(sev, value)
                .map(format_number)
                .unwrap_or_default(),
        }
    }

    /// Threshold crossed to resolve: the clear value of the lowest level, since being back
    /// past it is what ends the incident. For `equals`, the value that was matched.
    pub(crate) fn resolve_threshold(
        &self,
        last: Severity,
        value: &FieldValue,
    ) -> (Option<f64>, String) {
        let t = match self {
            Condition::Threshold {
                warning, critical, ..
            } => warning.or(*critical).map(|l| l.clear),
            Condition::Band {
                warning, critical, ..
            } => warning.or(*critical).map(|b| nearer(b, value, |l| l.clear)),
            Condition::Equals { .. } => {
                return (
                    self.threshold(last, value),
                    self.threshold_text(last, value),
                )
            }
        };
        (t, t.map(format_number).unwrap_or_default())
    }

    /// Levels defined by this condition, lowest first.
    pub(crate) fn levels(&self) -> impl Iterator<Item = Severity> {
        let (w, c) = match self {
            Condition::Threshold {
                warning, critical, ..
            } => (warning.is_some(), critical.is_some()),
            Condition::Band {
                warning, critical, ..
            } => (warning.is_some(), critical.is_some()),
            Condition::Equals { warning, critical } => (warning.is_some(), critical.is_some()),
        };
        [(w, Severity::Warning), (c, Severity::Critical)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, s)| s)
    }

    /// Same kind of condition (so an override may replace it).
    pub(crate) fn same_kind(&self, other: &Condition) -> bool {
        match (self, other) {
            (
                Condition::Threshold { direction: a, .. },
                Condition::Threshold { direction: b, .. },
            ) => a == b,
            (Condition::Band { inside: a, .. }, Condition::Band { inside: b, .. }) => a == b,
            (Condition::Equals { .. }, Condition::Equals { .. }) => true,
            _ => false,
        }
    }
}

fn pick(critical: bool, warning: bool) -> Severity {
    if critical {
        Severity::Critical
    } else if warning {
        Severity::Warning
    } else {
        Severity::Ok
    }
}

fn band_of(warning: &Option<Band>, critical: &Option<Band>, sev: Severity) -> Option<Band> {
    match sev {
        Severity::Warning => *warning,
        Severity::Critical => *critical,
        Severity::Ok => None,
    }
}

/// The band edge nearer to the value (by the midpoint of the band's levels).
fn nearer(b: Band, value: &FieldValue, edge: impl Fn(&Level) -> f64) -> f64 {
    let mid = (b.low.at + b.high.at) / 2.0;
    match value.as_f64() {
        Some(x) if x > mid => edge(&b.high),
        _ => edge(&b.low),
    }
}
fn level_of(warning: &Option<Level>, critical: &Option<Level>, sev: Severity) -> Option<Level> {
    match sev {
        Severity::Warning => *warning,
        Severity::Critical => *critical,
        Severity::Ok => None,
    }
}

/// Short human form of a number for messages: at most three decimals, no trailing zeros.
pub fn format_number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Formats a sample value for a message.
pub fn format_value(v: &FieldValue) -> String {
    match v {
        FieldValue::Float(x) => format_number(*x),
        other => other.to_string(),
    }
}

/// A tag must match a glob (or, with a leading `!`, must not).
#[derive(Clone, Debug)]
pub struct TagMatcher {
    pub tag: String,
    pub pattern: String,
    pub negate: bool,
    matcher: PatternMatcher,
}

/// The pattern compiled once: most rules say `rack = "*"` (the tag is present) or name one
/// value, which need no glob engine; a new series is matched against every candidate rule.
#[derive(Clone, Debug)]
enum PatternMatcher {
    Any,
    Exact(String),
    Glob(GlobMatcher),
}

impl PatternMatcher {
    fn new(glob: &str, compiled: GlobMatcher) -> PatternMatcher {
        if glob == "*" {
            PatternMatcher::Any
        } else if !glob.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            PatternMatcher::Exact(glob.to_string())
        } else {
            PatternMatcher::Glob(compiled)
        }
    }

    fn is_match(&self, v: &str) -> bool {
        match self {
            PatternMatcher::Any => true,
            PatternMatcher::Exact(x) => x == v,
            PatternMatcher::Glob(g) => g.is_match(v),
        }
    }
}

impl PartialEq for TagMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag && self.pattern == other.pattern && self.negate == other.negate
    }
}

impl TagMatcher {
    /// A missing tag fails a positive matcher and passes a negated one.
    pub fn matches(&self, tags: &TagSet) -> bool {
        match tags.get(&self.tag) {
            Some(v) => self.matcher.is_match(v) != self.negate,
            None => self.negate,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placeholder {
    Value,
    Threshold,
    Severity,
    State,
    Rule,
    Field,
    Measurement,
    Series,
    Tag(String),
}

const SPECIAL_PLACEHOLDERS: &[&str] = &[
    "value",
    "threshold",
    "severity",
    "state",
    "rule",
    "field",
    "measurement",
    "series",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Placeholder(Placeholder),
}

/// A parsed `message` template. `{{` and `}}` are literal braces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageTemplate {
    pub source: String,
    pub segments: Vec<Segment>,
}

/// What a template is rendered with.
pub struct RenderContext<'a> {
    pub rule: &'a str,
    pub measurement: &'a str,
    pub field: &'a str,
    pub tags: &'a TagSet,
    pub series: &'a dyn fmt::Display,
    pub value: &'a FieldValue,
    pub threshold: &'a str,
    pub severity: Severity,
    pub state: &'a str,
}

impl MessageTemplate {
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err("a lone '}' (write '}}' for a literal brace)".to_string()),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!(
                                    "placeholder '{{{name}' is not closed (write '{{{{' for a literal brace)"
                                ))
                            }
                            Some(ch) => name.push(ch),
                        }
                    }
                    let name = name.trim();
                    if name.is_empty() {
                        return Err("an empty placeholder '{}'".to_string());
                    }
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    let ph = match name {
                        "value" => Placeholder::Value,
                        "threshold" => Placeholder::Threshold,
                        "severity" => Placeholder::Severity,
                        "state" => Placeholder::State,
                        "rule" => Placeholder::Rule,
                        "field" => Placeholder::Field,
                        "measurement" => Placeholder::Measurement,
                        "series" => Placeholder::Series,
                        tag => Placeholder::Tag(tag.to_string()),
                    };
                    segments.push(Segment::Placeholder(ph));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(MessageTemplate {
            source: source.to_string(),
            segments,
        })
    }

    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(Placeholder::Tag(t)) => Some(t.as_str()),
            _ => None,
        })
    }

    pub fn render(&self, ctx: &RenderContext<'_>) -> String {
        use fmt::Write;
        let mut out = String::with_capacity(self.source.len() + 32);
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Placeholder(p) => match p {
                    Placeholder::Value => out.push_str(&format_value(ctx.value)),
                    Placeholder::Threshold => out.push_str(ctx.threshold),
                    Placeholder::Severity => out.push_str(ctx.severity.as_str()),
                    Placeholder::State => out.push_str(ctx.state),
                    Placeholder::Rule => out.push_str(ctx.rule),
                    Placeholder::Field => out.push_str(ctx.field),
                    Placeholder::Measurement => out.push_str(ctx.measurement),
                    Placeholder::Series => {
                        let _ = write!(out, "{}", ctx.series);
                    }
                    // Validation guarantees the tag is required by `match`; a gap is still
                    // better than a panic if that ever changes.
                    Placeholder::Tag(t) => out.push_str(ctx.tags.get(t).unwrap_or("")),
                },
            }
        }
        out
    }
}

const DEFAULT_MESSAGE: &str = "{rule}: {field} of {series} is {value} (threshold {threshold})";
const DEFAULT_RESOLVED_MESSAGE: &str =
    "{rule} resolved: {field} of {series} is back to {value} (threshold {threshold})";
const DEFAULT_STALE_MESSAGE: &str =
    "{rule}: no data for {field} of {series} for {threshold} (last value {value})";

/// Suffix of the rule name carried by stale (no-data) events. `:` is not allowed in rule
/// names, so a stale alert never shares its identity with a user rule.
pub const STALE_SUFFIX: &str = ":stale";

/// `rate`: the rule's levels apply to the change of the value over a sliding window
/// (rising: latest minus the lowest value in the window; falling: highest minus latest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSpec {
    pub window: Duration,
    pub falling: bool,
}

impl RateSpec {
    pub(crate) fn window_ns(&self) -> i64 {
        duration_ns(self.window)
    }
}

/// `stale_after`: a series that matched the rule and stops reporting the rule's field for
/// `after` (wall clock) is its own alert, `<rule>:stale`.
#[derive(Clone, Debug)]
pub struct StaleSpec {
    pub after: Duration,
    pub severity: Severity,
    pub message: MessageTemplate,
}

impl PartialEq for StaleSpec {
    fn eq(&self, other: &Self) -> bool {
        self.after == other.after && self.severity == other.severity
    }
}

/// `flapping`: more than `changes` notified state changes within `window` (sample time)
/// mark the series as flapping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlapSpec {
    pub changes: u32,
    pub window: Duration,
}

/// `[[rule.override]]`: other levels for the series its `match` selects.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub matchers: Vec<TagMatcher>,
    pub condition: Condition,
    pub rate: Option<RateSpec>,
    pub line: usize,
}

/// `depends_on`: while a series of `rule` whose `match_tags` equal this series' is firing,
/// this rule does not start new alerts for the series.
#[derive(Clone, Debug, PartialEq)]
pub struct Dependency {
    pub rule: Arc<str>,
    pub match_tags: Vec<String>,
}

pub(crate) fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub measurement: Arc<str>,
    pub field: Arc<str>,
    pub matchers: Vec<TagMatcher>,
    pub condition: Condition,
    /// When set, `condition` applies to the change over the window, not to the value.
    pub rate: Option<RateSpec>,
    /// How long the condition must hold, on sample timestamps, before it fires.
    pub for_duration: Duration,
    /// How long the condition must stay clear, on sample timestamps, before it resolves.
    pub keep_firing_for: Duration,
    pub stale: Option<StaleSpec>,
    pub flapping: Option<FlapSpec>,
    pub overrides: Vec<Override>,
    pub depends_on: Option<Dependency>,
    pub message: MessageTemplate,
    pub resolved_message: MessageTemplate,
    pub origin: PathBuf,
    pub line: usize,
}

impl Rule {
    pub fn matches_tags(&self, tags: &TagSet) -> bool {
        self.matchers.iter().all(|m| m.matches(tags))
    }

    /// Which definition applies to a series: 0 the rule's own, `i + 1` override `i` (the
    /// first whose `match` accepts the tags).
    pub fn variant_for(&self, tags: &TagSet) -> usize {
        self.overrides
            .iter()
            .position(|o| o.matchers.iter().all(|m| m.matches(tags)))
            .map_or(0, |i| i + 1)
    }

    /// Condition and rate of a variant from [`Rule::variant_for`].
    pub fn variant(&self, v: usize) -> (&Condition, Option<RateSpec>) {
        match v.checked_sub(1).and_then(|i| self.overrides.get(i)) {
            Some(o) => (&o.condition, o.rate),
            None => (&self.condition, self.rate),
        }
    }

    /// Everything that decides evaluation (not messages or file location), as text. Rule
    /// state survives a reload or restart exactly when the name and this are unchanged.
    pub fn signature(&self) -> String {
        let matchers = |ms: &[TagMatcher]| {
            ms.iter()
                .map(|m| format!("{}={}", m.tag, m.pattern))
                .collect::<Vec<_>>()
                .join(",")
        };
        let overrides: Vec<String> = self
            .overrides
            .iter()
            .map(|o| format!("[{}]{:?}{:?}", matchers(&o.matchers), o.condition, o.rate))
            .collect();
        format!(
            "{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.measurement,
            self.field,
            matchers(&self.matchers),
            self.condition,
            self.rate,
            self.for_duration,
            self.keep_firing_for,
            self.stale.as_ref().map(|s| (s.after, s.severity)),
            self.flapping,
            overrides,
            self.depends_on,
            ""
        )
    }

    /// Same evaluation semantics (what is watched, where the levels are, how long to wait):
    /// rule state survives a reload exactly when this holds. Messages and file location may
    /// differ.
    pub fn same_condition(&self, other: &Rule) -> bool {
        self.name == other.name && self.signature() == other.signature()
    }

    pub(crate) fn for_ns(&self) -> i64 {
        duration_ns(self.for_duration)
    }

    pub(crate) fn keep_ns(&self) -> i64 {
        duration_ns(self.keep_firing_for)
    }

    /// Rule name of this rule's stale (no-data) alerts.
    pub fn stale_name(&self) -> Arc<str> {
        format!("{}{STALE_SUFFIX}", self.name).into()
    }
}

/// All loaded rules (names unique) and silences.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    silences: Vec<Arc<Silence>>,
    /// Measurement → positions in `rules`, ascending: the candidates for a new series.
    by_measurement: HashMap<Arc<str>, Vec<usize>>,
}

impl RuleSet {
    /// Checks that names are unique across all rules (and so across files) and that every
    /// `depends_on` names an existing other rule.
    pub fn new(rules: Vec<Rule>) -> Result<Self, RulesError> {
        RuleSet::with_silences(rules, Vec::new())
    }

    pub fn with_silences(rules: Vec<Rule>, silences: Vec<Silence>) -> Result<Self, RulesError> {
        let mut seen: HashMap<Arc<str>, (PathBuf, usize)> = HashMap::new();
        let mut problems = Vec::new();
        for r in &rules {
            if let Some((path, line)) = seen.get(&r.name) {
                problems.push(RuleProblem {
                    path: r.origin.clone(),
                    line: r.line,
                    rule: r.name.to_string(),
                    problem: format!("the name is already used at {}:{}", path.display(), line),
                    hint: "rule names must be unique across all rule files; rename one".into(),
                });
            } else {
                seen.insert(r.name.clone(), (r.origin.clone(), r.line));
            }
        }
        for r in &rules {
            let Some(dep) = &r.depends_on else { continue };
            let problem = if dep.rule == r.name {
                Some("depends_on names the rule itself".to_string())
            } else if !seen.contains_key(&dep.rule) {
                Some(format!(
                    "depends_on names rule '{}', which does not exist",
                    dep.rule
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                problems.push(RuleProblem {
                    path: r.origin.clone(),
                    line: r.line,
                    rule: r.name.to_string(),
                    problem,
                    hint: "name another rule of any loaded rule file, e.g. depends_on = { rule = \"snmp_device_down\", match_tags = [\"site\"] }".into(),
                });
            }
        }
        if !problems.is_empty() {
            return Err(RulesError::Invalid(problems));
        }
        let mut by_measurement: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            by_measurement
                .entry(r.measurement.clone())
                .or_default()
                .push(i);
        }
        Ok(RuleSet {
            rules: rules.into_iter().map(Arc::new).collect(),
            silences: silences.into_iter().map(Arc::new).collect(),
            by_measurement,
        })
    }

    /// Positions (in [`RuleSet::rules`], ascending) of the rules on `measurement`.
    pub fn for_measurement(&self, measurement: &str) -> &[usize] {
        self.by_measurement
            .get(measurement)
            .map_or(&[], Vec::as_slice)
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    pub fn silences(&self) -> &[Arc<Silence>] {
        &self.silences
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| r.name.as_ref() == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TOML schema

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    silence: Vec<Spanned<RawSilence>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    measurement: Spanned<String>,
    field: Spanned<String>,
    #[serde(default, rename = "match")]
    matchers: Option<Spanned<BTreeMap<String, String>>>,
    above: Option<Spanned<RawLevels>>,
    below: Option<Spanned<RawLevels>>,
    equals: Option<Spanned<RawEquals>>,
    outside: Option<Spanned<RawBands>>,
    inside: Option<Spanned<RawBands>>,
    rate: Option<Spanned<RawRate>>,
    #[serde(default, rename = "for")]
    for_duration: Option<Spanned<String>>,
    keep_firing_for: Option<Spanned<String>>,
    stale_after: Option<Spanned<String>>,
    stale_severity: Option<Spanned<String>>,
    stale_message: Option<Spanned<String>>,
    flapping: Option<Spanned<RawFlap>>,
    #[serde(default, rename = "override")]
    overrides: Vec<Spanned<RawOverride>>,
    depends_on: Option<Spanned<RawDepends>>,
    message: Option<Spanned<String>>,
    resolved_message: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevels {
    warning: Option<f64>,
    warning_clear: Option<f64>,
    critical: Option<f64>,
    critical_clear: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEquals {
    warning: Option<toml::Value>,
    critical: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBands {
    warning: Option<[f64; 2]>,
    warning_clear: Option<[f64; 2]>,
    critical: Option<[f64; 2]>,
    critical_clear: Option<[f64; 2]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    window: String,
    #[serde(default)]
    falling: bool,
    warning: Option<f64>,
    warning_clear: Option<f64>,
    critical: Option<f64>,
    critical_clear: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlap {
    changes: u32,
    window: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    #[serde(rename = "match")]
    matchers: Spanned<BTreeMap<String, String>>,
    above: Option<Spanned<RawLevels>>,
    below: Option<Spanned<RawLevels>>,
    equals: Option<Spanned<RawEquals>>,
    outside: Option<Spanned<RawBands>>,
    inside: Option<Spanned<RawBands>>,
    rate: Option<Spanned<RawRate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDepends {
    rule: String,
    #[serde(default)]
    match_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilence {
    comment: Option<String>,
    rule: Option<String>,
    #[serde(default, rename = "match")]
    matchers: Option<Spanned<BTreeMap<String, String>>>,
    start: Option<Spanned<String>>,
    end: Option<Spanned<String>>,
    daily: Option<Spanned<RawDaily>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaily {
    from: String,
    to: String,
}

/// The condition keys of a rule or an override.
struct RawConditions<'a> {
    above: &'a Option<Spanned<RawLevels>>,
    below: &'a Option<Spanned<RawLevels>>,
    equals: &'a Option<Spanned<RawEquals>>,
    outside: &'a Option<Spanned<RawBands>>,
    inside: &'a Option<Spanned<RawBands>>,
    rate: &'a Option<Spanned<RawRate>>,
}

/// Collects problems for one rule with line numbers from spans.
struct Checker<'a> {
    text: &'a str,
    origin: &'a Path,
    rule: String,
    problems: Vec<RuleProblem>,
}

impl Checker<'_> {
    fn report(&mut self, span: Range<usize>, problem: impl Into<String>, hint: impl Into<String>) {
        let (line, _) = line_col(self.text, span.start);
        self.problems.push(RuleProblem {
            path: self.origin.to_path_buf(),
            line,
            rule: self.rule.clone(),
            problem: problem.into(),
            hint: hint.into(),
        });
    }

    fn duration(&mut self, key: &str, raw: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(raw.get_ref().trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.report(
                    raw.span(),
                    format!("{key} = {:?} is not a duration: {e}", raw.get_ref()),
                    format!("write e.g. {key} = \"30s\", \"5m\" or \"1h 30m\""),
                );
                None
            }
        }
    }

    fn matchers(&mut self, m: &Spanned<BTreeMap<String, String>>) -> Vec<TagMatcher> {
        let mut out = Vec::new();
        for (tag, pattern) in m.get_ref() {
            let (negate, glob) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            if tag.is_empty() || glob.is_empty() {
                self.report(
                    m.span(),
                    format!("match {tag:?} = {pattern:?} has an empty tag name or pattern"),
                    "write e.g. match = { rack = \"r*\" } or { rack = \"!spare*\" }",
                );
                continue;
            }
            match GlobBuilder::new(glob).build() {
                Ok(g) => out.push(TagMatcher {
                    tag: tag.clone(),
                    pattern: pattern.clone(),
                    negate,
                    matcher: PatternMatcher::new(glob, g.compile_matcher()),
                }),
                Err(e) => self.report(
                    m.span(),
                    format!(
                        "match pattern {pattern:?} for tag '{tag}' is not a valid glob: {}",
                        e.kind()
                    ),
                    "use *, ? and {a,b} wildcards, e.g. \"r1*\"",
                ),
            }
        }
        out
    }

    /// Exactly one condition; `None` after reporting when there is none, several, or a bad one.
    fn condition(
        &mut self,
        c: &RawConditions<'_>,
        span: Range<usize>,
    ) -> Option<(Condition, Option<RateSpec>)> {
        let given = [
            c.above.is_some(),
            c.below.is_some(),
            c.equals.is_some(),
            c.outside.is_some(),
            c.inside.is_some(),
            c.rate.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            self.report(
                span,
                if given == 0 {
                    "no condition".to_string()
                } else {
                    "more than one of above/below/equals/outside/inside/rate".to_string()
                },
                "give exactly one of above = {...}, below = {...}, equals = {...}, outside = {...}, inside = {...} or rate = {...}; split into two rules if you need both",
            );
            return None;
        }
        if let Some(l) = c.above {
            threshold_condition(self, l.span(), l.get_ref(), "above", Direction::Above)
                .map(|c| (c, None))
        } else if let Some(l) = c.below {
            threshold_condition(self, l.span(), l.get_ref(), "below", Direction::Below)
                .map(|c| (c, None))
        } else if let Some(e) = c.equals {
            equals_condition(self, e).map(|c| (c, None))
        } else if let Some(b) = c.outside {
            band_condition(self, b, false).map(|c| (c, None))
        } else if let Some(b) = c.inside {
            band_condition(self, b, true).map(|c| (c, None))
        } else if let Some(r) = c.rate {
            let raw = r.get_ref();
            let window = match humantime::parse_duration(raw.window.trim()) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    self.report(
                        r.span(),
                        "rate.window is zero",
                        "give the window the change is measured over, e.g. window = \"10m\"",
                    );
                    None
                }
                Err(e) => {
                    self.report(
                        r.span(),
                        format!("rate.window = {:?} is not a duration: {e}", raw.window),
                        "write e.g. window = \"10m\"",
                    );
                    None
                }
            };
            let levels = RawLevels {
                warning: raw.warning,
                warning_clear: raw.warning_clear,
                critical: raw.critical,
                critical_clear: raw.critical_clear,
            };
            let cond = threshold_condition(self, r.span(), &levels, "rate", Direction::Above)?;
            let window = window?;
            Some((
                cond,
                Some(RateSpec {
                    window,
                    falling: raw.falling,
                }),
            ))
        } else {
            None
        }
    }
}

/// One parsed rule file.
#[derive(Clone, Debug, Default)]
pub struct RuleFile {
    pub rules: Vec<Rule>,
    pub silences: Vec<Silence>,
}

/// Parses and validates one rule file's text. `origin` is only used in messages.
pub fn parse_rules(text: &str, origin: &Path) -> Result<Vec<Rule>, RulesError> {
    parse_rule_file(text, origin).map(|f| f.rules)
}

/// Parses and validates one rule file's rules and silences.
pub fn parse_rule_file(text: &str, origin: &Path) -> Result<RuleFile, RulesError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        RulesError::Parse {
            path: origin.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    let mut rules = Vec::with_capacity(raw.rule.len());
    let mut problems = Vec::new();
    for spanned in raw.rule {
        let span = spanned.span();
        let raw = spanned.into_inner();
        match validate_rule(raw, span, text, origin) {
            Ok(rule) => rules.push(rule),
            Err(mut p) => problems.append(&mut p),
        }
    }
    let mut silences = Vec::with_capacity(raw.silence.len());
    for (i, spanned) in raw.silence.into_iter().enumerate() {
        let span = spanned.span();
        match validate_silence(spanned.into_inner(), i + 1, span, text, origin) {
            Ok(s) => silences.push(s),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if !problems.is_empty() {
        return Err(RulesError::Invalid(problems));
    }
    // Duplicates within the file; across files is load_rule_files' job. Dependencies may
    // point into another file, so they are checked there too.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in &rules {
        if let Some(line) = seen.insert(&r.name, r.line) {
            problems.push(RuleProblem {
                path: origin.to_path_buf(),
                line: r.line,
                rule: r.name.to_string(),
                problem: format!("the name is already used at {}:{}", origin.display(), line),
                hint: "rule names must be unique across all rule files; rename one".into(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(RulesError::Invalid(problems));
    }
    Ok(RuleFile { rules, silences })
}

fn validate_rule(
    raw: RawRule,
    span: Range<usize>,
    text: &str,
    origin: &Path,
) -> Result<Rule, Vec<RuleProblem>> {
    let mut ck = Checker {
        text,
        origin,
        rule: raw.name.get_ref().clone(),
        problems: Vec::new(),
    };
    let name = raw.name.get_ref().trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        ck.report(
            raw.name.span(),
            "the name must be non-empty and use only letters, digits, '_', '-' and '.'",
            "it becomes an alert name and a metric label; e.g. name = \"rack_inlet_temperature\"",
        );
    }
    for (what, v) in [("measurement", &raw.measurement), ("field", &raw.field)] {
        if v.get_ref().trim().is_empty() {
            ck.report(
                v.span(),
                format!("{what} is empty"),
                format!("set {what} to the name the collector produces"),
            );
        }
    }

    let matchers = match &raw.matchers {
        Some(m) => ck.matchers(m),
        None => Vec::new(),
    };

    let condition = ck.condition(
        &RawConditions {
            above: &raw.above,
            below: &raw.below,
            equals: &raw.equals,
            outside: &raw.outside,
            inside: &raw.inside,
            rate: &raw.rate,
        },
        span.clone(),
    );

    let mut overrides = Vec::new();
    for o in &raw.overrides {
        let ospan = o.span();
        let ro = o.get_ref();
        let om = ck.matchers(&ro.matchers);
        if ro.matchers.get_ref().is_empty() {
            ck.report(
                ospan.clone(),
                "override has an empty match",
                "an override applies to the series its match selects, e.g. match = { room = \"battery-room\" }",
            );
        }
        let oc = ck.condition(
            &RawConditions {
                above: &ro.above,
                below: &ro.below,
                equals: &ro.equals,
                outside: &ro.outside,
                inside: &ro.inside,
                rate: &ro.rate,
            },
            ospan.clone(),
        );
        if let (Some((base, base_rate)), Some((oc, orate))) = (&condition, oc) {
            if !base.same_kind(&oc) || base_rate.is_some() != orate.is_some() {
                ck.report(
                    ospan.clone(),
                    "override uses a different kind of condition than the rule",
                    "an override replaces the levels only: use the same key as the rule (above, below, equals, outside, inside or rate)",
                );
            } else if orate.is_some_and(|r| base_rate.is_some_and(|b| b.falling != r.falling)) {
                ck.report(
                    ospan.clone(),
                    "override changes rate.falling",
                    "write a separate rule for the other direction",
                );
            } else {
                let (line, _) = line_col(text, ospan.start);
                overrides.push(Override {
                    matchers: om,
                    condition: oc,
                    rate: orate,
                    line,
                });
            }
        }
    }

    // Messages.
    let positive_tags: Vec<&str> = matchers
        .iter()
        .filter(|m| !m.negate)
        .map(|m| m.tag.as_str())
        .collect();
    let mut templates = Vec::new();
    for (key, raw_tpl, default) in [
        ("message", &raw.message, DEFAULT_MESSAGE),
        (
            "resolved_message",
            &raw.resolved_message,
            DEFAULT_RESOLVED_MESSAGE,
        ),
        ("stale_message", &raw.stale_message, DEFAULT_STALE_MESSAGE),
    ] {
        let (src, tspan) = match raw_tpl {
            Some(s) => (s.get_ref().as_str(), s.span()),
            None => (default, span.clone()),
        };
        match MessageTemplate::parse(src) {
            Ok(t) => {
                for tag in t.tag_names() {
                    if !positive_tags.contains(&tag) {
                        ck.report(
                            tspan.clone(),
                            format!("{key} uses {{{tag}}}, which is neither a built-in placeholder ({}) nor a tag required by match", SPECIAL_PLACEHOLDERS.join(", ")),
                            format!("add {tag} = \"*\" to match so every matching series has the tag, or fix the spelling"),
                        );
                    }
                }
                templates.push(t);
            }
            Err(problem) => {
                ck.report(
                    tspan,
                    format!("{key} template: {problem}"),
                    "placeholders look like {rack} or {value}",
                );
                templates.push(MessageTemplate {
                    source: String::new(),
                    segments: Vec::new(),
                });
            }
        }
    }

    let for_duration = raw
        .for_duration
        .as_ref()
        .and_then(|f| ck.duration("for", f))
        .unwrap_or(Duration::ZERO);
    let keep_firing_for = raw
        .keep_firing_for
        .as_ref()
        .and_then(|f| ck.duration("keep_firing_for", f))
        .unwrap_or(Duration::ZERO);

    let stale_severity = match &raw.stale_severity {
        None => Severity::Warning,
        Some(s) => match s.get_ref().trim() {
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            other => {
                ck.report(
                    s.span(),
                    format!("stale_severity = {other:?} is not a severity"),
                    "write stale_severity = \"warning\" or \"critical\"",
                );
                Severity::Warning
            }
        },
    };
    if raw.stale_after.is_none() && (raw.stale_severity.is_some() || raw.stale_message.is_some()) {
        let s = raw
            .stale_severity
            .as_ref()
            .map(Spanned::span)
            .or(raw.stale_message.as_ref().map(Spanned::span))
            .unwrap_or(span.clone());
        ck.report(
            s,
            "stale_severity/stale_message is set but stale_after is not",
            "set stale_after = \"5m\" (how long without data before the no-data alert)",
        );
    }
    let stale_after = match &raw.stale_after {
        Some(s) => match ck.duration("stale_after", s) {
            Some(d) if d.is_zero() => {
                ck.report(
                    s.span(),
                    "stale_after is zero",
                    "give the silence that means a dead sensor, e.g. stale_after = \"5m\" (a few poll intervals)",
                );
                None
            }
            d => d,
        },
        None => None,
    };

    let flapping = match &raw.flapping {
        None => None,
        Some(f) => {
            let rf = f.get_ref();
            let window = match humantime::parse_duration(rf.window.trim()) {
                Ok(d) if !d.is_zero() => Some(d),
                _ => {
                    ck.report(
                        f.span(),
                        format!(
                            "flapping.window = {:?} is not a non-zero duration",
                            rf.window
                        ),
                        "write e.g. flapping = { changes = 6, window = \"10m\" }",
                    );
                    None
                }
            };
            if rf.changes == 0 {
                ck.report(
                    f.span(),
                    "flapping.changes is 0",
                    "give the number of state changes within the window that still counts as normal, e.g. changes = 6",
                );
            }
            window.map(|window| FlapSpec {
                changes: rf.changes,
                window,
            })
        }
    };

    let depends_on = raw.depends_on.as_ref().map(|d| {
        let rd = d.get_ref();
        if rd.rule.trim().is_empty() || rd.match_tags.iter().any(|t| t.trim().is_empty()) {
            ck.report(
                d.span(),
                "depends_on has an empty rule name or tag",
                "write e.g. depends_on = { rule = \"snmp_device_down\", match_tags = [\"site\"] }",
            );
        }
        Dependency {
            rule: rd.rule.trim().into(),
            match_tags: rd.match_tags.iter().map(|t| t.trim().to_string()).collect(),
        }
    });

    if !ck.problems.is_empty() {
        return Err(ck.problems);
    }
    let Some((condition, rate)) = condition else {
        return Err(ck.problems);
    };
    let empty = || MessageTemplate {
        source: String::new(),
        segments: Vec::new(),
    };
    let stale_message = templates.pop().unwrap_or_else(empty);
    let resolved_message = templates.pop().unwrap_or_else(empty);
    let message = templates.pop().unwrap_or_else(empty);
    let (line, _) = line_col(text, span.start);
    Ok(Rule {
        name: name.into(),
        measurement: raw.measurement.get_ref().trim().into(),
        field: raw.field.get_ref().trim().into(),
        matchers,
        condition,
        rate,
        for_duration,
        keep_firing_for,
        stale: stale_after.map(|after| StaleSpec {
            after,
            severity: stale_severity,
            message: stale_message,
        }),
        flapping,
        overrides,
        depends_on,
        message,
        resolved_message,
        origin: origin.to_path_buf(),
        line,
    })
}

fn validate_silence(
    raw: RawSilence,
    index: usize,
    span: Range<usize>,
    text: &str,
    origin: &Path,
) -> Result<Silence, Vec<RuleProblem>> {
    let label = match &raw.comment {
        Some(c) => format!("silence {index} ({c})"),
        None => format!("silence {index}"),
    };
    let mut ck = Checker {
        text,
        origin,
        rule: label,
        problems: Vec::new(),
    };
    let matchers = match &raw.matchers {
        Some(m) => ck.matchers(m),
        None => Vec::new(),
    };
    let rule = match &raw.rule {
        Some(r) => match GlobBuilder::new(r.trim()).build() {
            Ok(g) if !r.trim().is_empty() => Some((r.trim().to_string(), g.compile_matcher())),
            _ => {
                ck.report(
                    span.clone(),
                    format!("silence rule = {r:?} is not a valid rule name glob"),
                    "write e.g. rule = \"ups_*\"",
                );
                None
            }
        },
        None => None,
    };
    if raw.rule.is_none() && matchers.is_empty() {
        ck.report(
            span.clone(),
            "silence has neither rule nor match",
            "a silence must say what it mutes, e.g. match = { site = \"dc1\", ups = \"ups-2\" } and/or rule = \"ups_*\"",
        );
    }
    let mut time = |key: &str, v: &Option<Spanned<String>>| -> Option<i64> {
        let v = v.as_ref()?;
        match parse_rfc3339(v.get_ref().trim()) {
            Some(ns) => Some(ns),
            None => {
                ck.report(
                    v.span(),
                    format!("silence {key} = {:?} is not an RFC 3339 time", v.get_ref()),
                    "write e.g. \"2026-11-24T08:00:00Z\" or \"2026-11-24T09:00:00+01:00\"",
                );
                None
            }
        }
    };
    let start_ns = time("start", &raw.start);
    let end_ns = time("end", &raw.end);
    if let (Some(s), Some(e)) = (start_ns, end_ns) {
        if e <= s {
            ck.report(
                span.clone(),
                "silence end is not after start",
                "end is when notifications resume; it must be later than start",
            );
        }
    }
    let daily = match &raw.daily {
        None => None,
        Some(d) => {
            let rd = d.get_ref();
            match (parse_hhmm(&rd.from), parse_hhmm(&rd.to)) {
                (Some(from), Some(to)) if from != to => Some(DailyWindow { from, to }),
                _ => {
                    ck.report(
                        d.span(),
                        format!(
                            "silence daily = {{ from = {:?}, to = {:?} }} is not a window of two different HH:MM times",
                            rd.from, rd.to
                        ),
                        "write e.g. daily = { from = \"02:00\", to = \"04:30\" } (UTC; may cross midnight)",
                    );
                    None
                }
            }
        }
    };
    if raw.start.is_none() && raw.end.is_none() && raw.daily.is_none() {
        ck.report(
            span.clone(),
            "silence has no time window",
            "give start and end (RFC 3339) and/or daily = { from = \"02:00\", to = \"04:00\" }",
        );
    }
    if !ck.problems.is_empty() {
        return Err(ck.problems);
    }
    let (line, _) = line_col(text, span.start);
    Ok(Silence {
        comment: raw.comment.unwrap_or_default(),
        rule,
        matchers,
        start_ns,
        end_ns,
        daily,
        origin: origin.to_path_buf(),
        line,
    })
}

fn threshold_condition(
    ck: &mut Checker<'_>,
    span: Range<usize>,
    l: &RawLevels,
    key: &str,
    direction: Direction,
) -> Option<Condition> {
    let before = ck.problems.len();
    for (name, v) in [
        ("warning", l.warning),
        ("warning_clear", l.warning_clear),
        ("critical", l.critical),
        ("critical_clear", l.critical_clear),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            ck.report(
                span.clone(),
                format!("{key}.{name} is not a finite number"),
                "use a plain number such as 27.0",
            );
        }
    }
    if l.warning.is_none() && l.critical.is_none() {
        ck.report(
            span.clone(),
            format!("{key} has no level"),
            format!("set {key} = {{ warning = ... }} and/or critical = ..."),
        );
    }
    let mut level = |name: &str, at: Option<f64>, clear: Option<f64>| -> Option<Level> {
        match (at, clear) {
            (None, Some(_)) => {
                ck.report(
                    span.clone(),
                    format!("{key}.{name}_clear is set but {key}.{name} is not"),
                    format!("set {name} too, or remove {name}_clear"),
                );
                None
            }
            (None, None) => None,
            (Some(at), clear) => {
                let clear = clear.unwrap_or(at);
                let wrong_side = match direction {
                    Direction::Above => clear > at,
                    Direction::Below => clear < at,
                };
                if wrong_side {
                    let (side, cmp) = match direction {
                        Direction::Above => ("below", "<="),
                        Direction::Below => ("above", ">="),
                    };
                    ck.report(
                        span.clone(),
                        format!(
                            "{key}.{name}_clear = {} is on the wrong side of {name} = {}",
                            format_number(clear),
                            format_number(at)
                        ),
                        format!("the clear value is where the alarm ends, so it must be {side} the level ({name}_clear {cmp} {name})"),
                    );
                }
                Some(Level { at, clear })
            }
        }
    };
    let warning = level("warning", l.warning, l.warning_clear);
    let critical = level("critical", l.critical, l.critical_clear);
    if let (Some(w), Some(c)) = (warning, critical) {
        let misordered = match direction {
            Direction::Above => w.at >= c.at,
            Direction::Below => w.at <= c.at,
        };
        if misordered {
            let word = match direction {
                Direction::Above => "lower",
                Direction::Below => "higher",
            };
            ck.report(
                span.clone(),
                format!(
                    "{key}.warning = {} is not reached before critical = {}",
                    format_number(w.at),
                    format_number(c.at)
                ),
                format!("for '{key}' the warning level must be {word} than the critical level"),
            );
        }
    }
    if ck.problems.len() > before {
        return None;
    }
    Some(Condition::Threshold {
        direction,
        warning,
        critical,
    })
}

fn band_condition(ck: &mut Checker<'_>, b: &Spanned<RawBands>, inside: bool) -> Option<Condition> {
    let span = b.span();
    let raw = b.get_ref();
    let key = if inside { "inside" } else { "outside" };
    let before = ck.problems.len();
    let mut band = |name: &str, at: Option<[f64; 2]>, clear: Option<[f64; 2]>| -> Option<Band> {
        let at = match (at, clear) {
            (None, Some(_)) => {
                ck.report(
                    span.clone(),
                    format!("{key}.{name}_clear is set but {key}.{name} is not"),
                    format!("set {name} too, or remove {name}_clear"),
                );
                return None;
            }
            (None, None) => return None,
            (Some(at), _) => at,
        };
        let clear = clear.unwrap_or(at);
        if at.iter().chain(clear.iter()).any(|v| !v.is_finite()) {
            ck.report(
                span.clone(),
                format!("{key}.{name} has a value that is not a finite number"),
                "use plain numbers such as [18.0, 27.0]",
            );
            return None;
        }
        if at[0] >= at[1] || clear[0] >= clear[1] {
            ck.report(
                span.clone(),
                format!("{key}.{name} is not [low, high] with low < high"),
                format!("write e.g. {name} = [18.0, 27.0]"),
            );
            return None;
        }
        // outside: the clear band lies within the level band (back well inside ends it);
        // inside: the clear band encloses the level band (well out of it ends it).
        let ok = if inside {
            clear[0] <= at[0] && clear[1] >= at[1]
        } else {
            clear[0] >= at[0] && clear[1] <= at[1]
        };
        if !ok {
            ck.report(
                span.clone(),
                format!(
                    "{key}.{name}_clear = [{}, {}] is on the wrong side of {name} = [{}, {}]",
                    format_number(clear[0]),
                    format_number(clear[1]),
                    format_number(at[0]),
                    format_number(at[1])
                ),
                if inside {
                    format!("for 'inside' the clear band must enclose the level band ({name}_clear[0] <= {name}[0], {name}_clear[1] >= {name}[1])")
                } else {
                    format!("for 'outside' the clear band must lie within the level band ({name}_clear[0] >= {name}[0], {name}_clear[1] <= {name}[1])")
                },
            );
            return None;
        }
        Some(Band {
            low: Level {
                at: at[0],
                clear: clear[0],
            },
            high: Level {
                at: at[1],
                clear: clear[1],
            },
        })
    };
    let warning = band("warning", raw.warning, raw.warning_clear);
    let critical = band("critical", raw.critical, raw.critical_clear);
    if raw.warning.is_none() && raw.critical.is_none() {
        ck.report(
            span.clone(),
            format!("{key} has no level"),
            format!("set {key} = {{ warning = [low, high] }} and/or critical = [low, high]"),
        );
    }
    if let (Some(w), Some(c)) = (warning, critical) {
        let nested = if inside {
            c.low.at >= w.low.at && c.high.at <= w.high.at
        } else {
            c.low.at <= w.low.at && c.high.at >= w.high.at
        };
        if !nested {
            ck.report(
                span.clone(),
                format!("{key}.critical band is not reached only after the warning band"),
                if inside {
                    "for 'inside' the critical band must lie within the warning band".to_string()
                } else {
                    "for 'outside' the critical band must enclose the warning band, e.g. warning = [18, 27], critical = [15, 32]".to_string()
                },
            );
        }
    }
    if ck.problems.len() > before {
        return None;
    }
    Some(Condition::Band {
        inside,
        warning,
        critical,
    })
}

fn equals_condition(ck: &mut Checker<'_>, eq: &Spanned<RawEquals>) -> Option<Condition> {
    let span = eq.span();
    let before = ck.problems.len();
    let mut convert = |name: &str, v: &Option<toml::Value>| -> Option<Expected> {
        let v = v.as_ref()?;
        let e = match v {
            toml::Value::String(s) => Expected::Str(s.clone()),
            toml::Value::Boolean(b) => Expected::Bool(*b),
            toml::Value::Integer(i) => Expected::Num(*i as f64),
            toml::Value::Float(f) if f.is_finite() => Expected::Num(*f),
            other => {
                ck.report(
                    span.clone(),
                    format!(
                        "equals.{name} is a {}, not a string, boolean or number",
                        other.type_str()
                    ),
                    "write e.g. equals = { critical = \"battery\" } or { critical = true }",
                );
                return None;
            }
        };
        Some(e)
    };
    let eq_ref = eq.get_ref();
    let warning = convert("warning", &eq_ref.warning);
    let critical = convert("critical", &eq_ref.critical);
    if eq_ref.warning.is_none() && eq_ref.critical.is_none() {
        ck.report(
            span.clone(),
            "equals has no level",
            "write e.g. equals = { critical = true } or { warning = \"bypass\", critical = \"battery\" }",
        );
    }
    if warning.is_some() && warning == critical {
        ck.report(
            span,
            "equals.warning and equals.critical are the same value",
            "a value can only mean one severity; remove one of them",
        );
    }
    if ck.problems.len() > before {
        return None;
    }
    Some(Condition::Equals { warning, critical })
}

/// Reads, parses and validates every file; all problems of all files are reported together.
pub fn load_rule_files(paths: &[PathBuf]) -> Result<RuleSet, RulesError> {
    let mut rules = Vec::new();
    let mut silences = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.clone(),
            source,
        })?;
        match parse_rule_file(&text, path) {
            Ok(mut f) => {
                rules.append(&mut f.rules);
                silences.append(&mut f.silences);
            }
            Err(RulesError::Invalid(mut p)) => problems.append(&mut p),
            Err(other) => return Err(other),
        }
    }
    if !problems.is_empty() {
        return Err(RulesError::Invalid(problems));
    }
    RuleSet::with_silences(rules, silences)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Rule>, RulesError> {
        parse_rules(text, Path::new("rules/test.toml"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(r) => panic!("expected an error, got {} rules", r.len()),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = r#"
[[rule]]
name = "rack_inlet_temperature"
measurement = "environment"
field = "temperature"
match = { site = "*", rack = "*", room = "*" }
above = { warning = 27, warning_clear = 26.0, critical = 32.0, critical_clear = 31.0 }
for = "30s"
message = "{rack} in {room}: inlet {value} °C above {threshold} °C"

[[rule]]
name = "ups_on_battery"
measurement = "ups"
field = "output_source"
equals = { warning = "bypass", critical = "battery" }
"#;

    #[test]
    fn parses_a_good_file() {
        let rules = parse(GOOD).unwrap();
        assert_eq!(rules.len(), 2);
        let r = &rules[0];
        assert_eq!(&*r.name, "rack_inlet_temperature");
        assert_eq!(r.line, 2);
        assert_eq!(r.for_duration, Duration::from_secs(30));
        assert_eq!(
            r.condition,
            Condition::Threshold {
                direction: Direction::Above,
                warning: Some(Level {
                    at: 27.0,
                    clear: 26.0
                }),
                critical: Some(Level {
                    at: 32.0,
                    clear: 31.0
                }),
            }
        );
        assert_eq!(r.matchers.len(), 3);
        let u = &rules[1];
        assert_eq!(u.line, 11);
        assert_eq!(u.for_duration, Duration::ZERO);
        assert_eq!(
            u.condition,
            Condition::Equals {
                warning: Some(Expected::Str("bypass".into())),
                critical: Some(Expected::Str("battery".into())),
            }
        );
    }

    #[test]
    fn semantic_errors_name_file_line_rule_and_fix() {
        // (rule body after the name line, expected fragments)
        let cases: &[(&str, &[&str])] = &[
            (
                "above = { warning = 27.0, warning_clear = 28.0 }",
                &["rules/test.toml:6: rule 'r'", "wrong side", "must be below"],
            ),
            (
                "below = { warning = 20.0, warning_clear = 19.0 }",
                &["wrong side", "must be above"],
            ),
            ("above = { warning_clear = 1.0 }", &["no level"]),
            (
                "above = { critical = 30.0, critical_clear = 29.0, warning_clear = 1.0 }",
                &["warning_clear is set but above.warning is not"],
            ),
            (
                "above = { warning = 32.0, critical = 27.0 }",
                &["must be lower than the critical"],
            ),
            (
                "below = { warning = 10.0, critical = 20.0 }",
                &["must be higher than the critical"],
            ),
            ("", &[":2: rule 'r': no condition"]),
            (
                "above = { warning = 1.0 }\nbelow = { warning = 0.0 }",
                &["more than one of above/below/equals"],
            ),
            ("equals = { }", &["equals has no level"]),
            (
                "equals = { warning = \"a\", critical = \"a\" }",
                &["the same value"],
            ),
            ("equals = { critical = [1, 2] }", &["array"]),
            (
                "above = { warning = 1.0 }\nmessage = \"{rack} hot\"",
                &[":7: rule 'r'", "{rack}", "add rack = \"*\" to match"],
            ),
            (
                "above = { warning = 1.0 }\nmatch = { rack = \"!spare\" }\nmessage = \"{rack} hot\"",
                &["{rack}"],
            ),
            (
                "above = { warning = 1.0 }\nmessage = \"{value hot\"",
                &["not closed"],
            ),
            ("above = { warning = 1.0 }\nmessage = \"a } b\"", &["lone"]),
            (
                "above = { warning = 1.0 }\nmatch = { rack = \"[\" }",
                &["not a valid glob"],
            ),
            ("above = { warning = nan }", &["not a finite number"]),
        ];
        for (body, fragments) in cases {
            let text =
                format!("\n[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\n{body}\n");
            let e = err(&text);
            for f in *fragments {
                assert!(e.contains(f), "body {body:?}: error {e:?} lacks {f:?}");
            }
        }
    }

    #[test]
    fn templates_with_known_placeholders_and_match_tags_load() {
        let text = r#"
[[rule]]
name = "r"
measurement = "m"
field = "f"
match = { rack = "r*" }
above = { warning = 1.0 }
message = "{{literal}} {rack} {value} {threshold} {severity} {state} {rule} {field} {measurement} {series}"
"#;
        let r = parse(text).unwrap();
        assert_eq!(r[0].message.tag_names().collect::<Vec<_>>(), vec!["rack"]);
    }

    #[test]
    fn syntax_and_schema_errors_have_file_and_line() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\nabove = { warning = 1.0 }\nabove_x = 3\n",
                &["rules/test.toml:6:", "above_x"],
            ),
            ("[[rule]]\nname = \"r\"\nmeasurement = \n", &["rules/test.toml:3:"]),
            (
                "[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\nabove = { warning = 1.0, waring_clear = 0.5 }\n",
                &["rules/test.toml:5:", "waring_clear"],
            ),
            (
                "[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\nabove = { warning = 1.0 }\nfor = \"5 fortnights\"\n",
                &["rules/test.toml:6: rule 'r'", "not a duration", "30s"],
            ),
            ("[[rules]]\nname = \"r\"\n", &["rules/test.toml:1:", "rules"]),
            ("[[rule]]\nmeasurement = \"m\"\n", &["rules/test.toml:1:", "name"]),
        ];
        for (text, fragments) in cases {
            let e = err(text);
            for f in *fragments {
                assert!(e.contains(f), "text {text:?}: error {e:?} lacks {f:?}");
            }
        }
    }

    #[test]
    fn duplicate_names_across_files_are_rejected_with_both_places() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        let rule = "[[rule]]\nname = \"dup\"\nmeasurement = \"m\"\nfield = \"f\"\nabove = { warning = 1.0 }\n";
        std::fs::write(&a, rule).unwrap();
        std::fs::write(&b, format!("\n\n{rule}")).unwrap();
        let e = load_rule_files(&[a.clone(), b.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{}:3: rule 'dup'", b.display())), "{e}");
        assert!(e.contains(&format!("{}:1", a.display())), "{e}");
        // Within one file too.
        let e = err(&format!("{rule}{rule}"));
        assert!(e.contains("rules/test.toml:6: rule 'dup'"), "{e}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = load_rule_files(&[PathBuf::from("does/not/exist.toml")]).unwrap_err();
        assert!(matches!(e, RulesError::Read { .. }), "{e}");
        assert!(e.to_string().contains("does/not/exist.toml"));
    }

    #[test]
    fn rules_config_resolves_globs_and_rejects_empty_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("rules/site2")).unwrap();
        for f in [
            "rules/a.toml",
            "rules/b.toml",
            "rules/notes.txt",
            "rules/site2/c.toml",
        ] {
            std::fs::write(base.join(f), "").unwrap();
        }
        let cfg: RulesConfig = toml::from_str("files = [\"rules/*.toml\"]").unwrap();
        assert_eq!(
            cfg.resolve(base).unwrap(),
            vec![base.join("rules/a.toml"), base.join("rules/b.toml")]
        );
        let cfg = RulesConfig {
            files: vec!["rules/**/*.toml".into(), "rules/a.toml".into()],
            ..Default::default()
        };
        assert_eq!(
            cfg.resolve(base).unwrap(),
            vec![
                base.join("rules/a.toml"),
                base.join("rules/b.toml"),
                base.join("rules/site2/c.toml")
            ]
        );
        for pattern in ["rules/*.yaml", "missing.toml", "nodir/*.toml"] {
            let cfg = RulesConfig {
                files: vec![pattern.into()],
                ..Default::default()
            };
            let e = cfg.resolve(base).unwrap_err();
            assert!(matches!(e, RulesError::NoMatch { .. }), "{pattern}: {e}");
            assert!(e.to_string().contains(pattern));
        }
        assert!(toml::from_str::<RulesConfig>("file = []").is_err());

        // Glob characters in the config directory's own name are taken literally.
        let odd = base.join("cfg[1]");
        std::fs::create_dir_all(odd.join("rules")).unwrap();
        std::fs::write(odd.join("rules/x.toml"), "").unwrap();
        let cfg = RulesConfig {
            files: vec!["rules/*.toml".into()],
            ..Default::default()
        };
        assert_eq!(cfg.resolve(&odd).unwrap(), vec![odd.join("rules/x.toml")]);
        // Absolute patterns ignore the base.
        let cfg = RulesConfig {
            files: vec![format!("{}/rules/*.toml", odd.display()).replace("[1]", "[[]1]")],
            ..Default::default()
        };
        assert_eq!(
            cfg.resolve(Path::new("elsewhere")).unwrap(),
            vec![odd.join("rules/x.toml")]
        );
        let cfg = RulesConfig {
            files: vec!["rules/[".into()],
            ..Default::default()
        };
        assert!(matches!(
            cfg.resolve(base),
            Err(RulesError::BadPattern { .. })
        ));
    }

    #[test]
    fn expected_values_compare_by_type() {
        let t = Expected::Bool(true);
        assert_eq!(t.matches(&FieldValue::Bool(true)), Some(true));
        assert_eq!(t.matches(&FieldValue::Int(1)), Some(true));
        assert_eq!(t.matches(&FieldValue::UInt(0)), Some(false));
        assert_eq!(t.matches(&FieldValue::Str("true".into())), None);
        let s = Expected::Str("battery".into());
        assert_eq!(s.matches(&FieldValue::Str("battery".into())), Some(true));
        assert_eq!(s.matches(&FieldValue::Float(5.0)), None);
        assert_eq!(Expected::Num(5.0).matches(&FieldValue::Int(5)), Some(true));
    }

    #[test]
    fn parses_every_feature() {
        let text = r#"
[[rule]]
name = "inlet"
measurement = "environment"
field = "temperature"
match = { rack = "*" }
outside = { warning = [18, 27], warning_clear = [19.0, 26.0], critical = [15.0, 32.0] }
for = "20s"
keep_firing_for = "2m"
stale_after = "5m"
stale_severity = "critical"
stale_message = "{rack}: no reading for {threshold}"
flapping = { changes = 6, window = "10m" }
depends_on = { rule = "device_down", match_tags = ["site"] }

[[rule.override]]
match = { room = "battery-room" }
outside = { warning = [18.0, 25.0], critical = [15.0, 30.0] }

[[rule]]
name = "inlet_rise"
measurement = "environment"
field = "temperature"
rate = { window = "10m", warning = 2.0, critical = 4.0 }

[[rule]]
name = "device_down"
measurement = "snmp_poll"
field = "up"
equals = { critical = false }

[[silence]]
comment = "maintenance"
rule = "inlet*"
match = { site = "dc1" }
daily = { from = "02:00", to = "03:00" }
"#;
        let f = parse_rule_file(text, Path::new("rules/test.toml")).unwrap();
        assert_eq!((f.rules.len(), f.silences.len()), (3, 1));
        let r = &f.rules[0];
        assert_eq!(r.keep_firing_for, Duration::from_secs(120));
        let stale = r.stale.as_ref().unwrap();
        assert_eq!(
            (stale.after, stale.severity),
            (Duration::from_secs(300), Severity::Critical)
        );
        assert_eq!(
            r.flapping,
            Some(FlapSpec {
                changes: 6,
                window: Duration::from_secs(600)
            })
        );
        assert_eq!(
            r.depends_on.as_ref().unwrap().match_tags,
            vec!["site".to_string()]
        );
        assert_eq!(r.overrides.len(), 1);
        assert_eq!(r.overrides[0].line, 16);
        let band = |lo: f64, lc: f64, hi: f64, hc: f64| Band {
            low: Level { at: lo, clear: lc },
            high: Level { at: hi, clear: hc },
        };
        assert_eq!(
            r.condition,
            Condition::Band {
                inside: false,
                warning: Some(band(18.0, 19.0, 27.0, 26.0)),
                critical: Some(band(15.0, 15.0, 32.0, 32.0)),
            }
        );
        let tags = TagSet::new([("rack", "a1"), ("room", "battery-room")]);
        assert_eq!(r.variant_for(&tags), 1);
        assert_eq!(r.variant_for(&TagSet::new([("rack", "a1")])), 0);
        assert_eq!(
            f.rules[1].rate,
            Some(RateSpec {
                window: Duration::from_secs(600),
                falling: false
            })
        );
        assert_eq!(&*f.rules[0].stale_name(), "inlet:stale");
        // Loading checks the dependency across the set.
        RuleSet::with_silences(f.rules, f.silences).unwrap();
    }

    #[test]
    fn new_feature_errors_name_file_line_and_fix() {
        // (rule body after the field line, expected fragments)
        let cases: &[(&str, &[&str])] = &[
            ("outside = { warning = [27.0, 18.0] }", &["rules/test.toml:6: rule 'r'", "low < high"]),
            ("outside = { warning = [18.0, 27.0], warning_clear = [17.0, 26.0] }", &["wrong side", "lie within"]),
            ("inside = { warning = [18.0, 27.0], warning_clear = [19.0, 26.0] }", &["wrong side", "enclose"]),
            ("outside = { warning = [18.0, 27.0], critical = [20.0, 32.0] }", &["critical band", "enclose the warning band"]),
            ("outside = { warning_clear = [1.0, 2.0] }", &["warning_clear is set but outside.warning is not"]),
            ("outside = { }", &["outside has no level"]),
            ("rate = { window = \"0s\", warning = 1.0 }", &["rate.window is zero"]),
            ("rate = { window = \"soon\", warning = 1.0 }", &["not a duration"]),
            ("rate = { window = \"1m\" }", &["rate has no level"]),
            ("above = { warning = 1.0 }\nrate = { window = \"1m\", warning = 1.0 }", &["more than one of"]),
            ("above = { warning = 1.0 }\nkeep_firing_for = \"later\"", &[":7:", "keep_firing_for", "not a duration"]),
            ("above = { warning = 1.0 }\nstale_after = \"0s\"", &["stale_after is zero"]),
            ("above = { warning = 1.0 }\nstale_after = \"5m\"\nstale_severity = \"page\"", &[":8:", "not a severity"]),
            ("above = { warning = 1.0 }\nstale_severity = \"critical\"", &["stale_after is not"]),
            ("above = { warning = 1.0 }\nstale_after = \"1m\"\nstale_message = \"{rack} silent\"", &["stale_message uses {rack}"]),
            ("above = { warning = 1.0 }\nflapping = { changes = 0, window = \"1m\" }", &["flapping.changes is 0"]),
            ("above = { warning = 1.0 }\nflapping = { changes = 3, window = \"x\" }", &["flapping.window"]),
            ("above = { warning = 1.0 }\ndepends_on = { rule = \"\" }", &["depends_on has an empty rule"]),
            ("above = { warning = 1.0 }\n[[rule.override]]\nmatch = { room = \"b\" }\nbelow = { warning = 1.0 }", &[":7: rule 'r'", "different kind"]),
            ("above = { warning = 1.0 }\n[[rule.override]]\nmatch = {}\nabove = { warning = 2.0 }", &["empty match"]),
            ("above = { warning = 1.0 }\n[[rule.override]]\nmatch = { room = \"b\" }", &[":7:", "no condition"]),
            ("rate = { window = \"1m\", warning = 1.0 }\n[[rule.override]]\nmatch = { room = \"b\" }\nrate = { window = \"1m\", warning = 2.0, falling = true }", &["changes rate.falling"]),
        ];
        for (body, fragments) in cases {
            let text =
                format!("\n[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\n{body}\n");
            let e = err(&text);
            for f in *fragments {
                assert!(e.contains(f), "body {body:?}: error {e:?} lacks {f:?}");
            }
        }
        // Dependencies are checked across files, when the set is built.
        let r = parse("[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\nabove = { warning = 1.0 }\ndepends_on = { rule = \"nope\" }\n").unwrap();
        let e = RuleSet::new(r).unwrap_err().to_string();
        assert!(
            e.contains("rules/test.toml:1: rule 'r'") && e.contains("'nope', which does not exist"),
            "{e}"
        );
        let r = parse("[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\nabove = { warning = 1.0 }\ndepends_on = { rule = \"r\" }\n").unwrap();
        assert!(RuleSet::new(r).unwrap_err().to_string().contains("itself"));
    }

    #[test]
    fn signature_tracks_evaluation_not_messages() {
        let base = "[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\nabove = { warning = 1.0 }\n";
        let sig = |extra: &str| parse(&format!("{base}{extra}")).unwrap()[0].signature();
        let plain = sig("");
        assert_eq!(
            plain,
            sig("message = \"x {value}\"\nresolved_message = \"y\"")
        );
        assert_eq!(
            sig("stale_after = \"1m\""),
            sig("stale_after = \"1m\"\nstale_message = \"silent {series}\"")
        );
        for extra in [
            "keep_firing_for = \"1m\"",
            "stale_after = \"1m\"",
            "flapping = { changes = 2, window = \"1m\" }",
            "[[rule.override]]\nmatch = { a = \"b\" }\nabove = { warning = 2.0 }",
        ] {
            assert_ne!(plain, sig(extra), "{extra}");
        }
    }

    #[test]
    fn numbers_format_short() {
        assert_eq!(format_number(27.0), "27");
        assert_eq!(format_number(273.0 * 0.1), "27.3");
        assert_eq!(format_number(12.8), "12.8");
        assert_eq!(format_number(-0.0001), "0");
        assert_eq!(format_number(0.125), "0.125");
        assert_eq!(format_number(29.999999), "30");
        assert_eq!(format_number(-3.00049), "-3");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
    }

    proptest::proptest! {
        /// The fast paths (`*`, a plain value) decide exactly as the glob engine would.
        #[test]
        fn pattern_fast_paths_agree_with_globs(
            pattern in "([a-z0-9_.-]{0,6}|\\*|[a-z]{1,3}\\*|\\*[a-z]{1,2}|[a-z]\\?[a-z])",
            value in "[a-z0-9_.*-]{1,8}",
        ) {
            let glob = GlobBuilder::new(&pattern).build();
            proptest::prop_assume!(glob.is_ok() && !pattern.is_empty());
            let compiled = glob.unwrap().compile_matcher();
            let fast = PatternMatcher::new(&pattern, compiled.clone());
            proptest::prop_assert_eq!(fast.is_match(&value), compiled.is_match(&value), "{} on {}", pattern, value);
        }
    }

    proptest::proptest! {
        /// Rule files come from people: any text must give rules or an error, never a panic.
        #[test]
        fn parse_never_panics(text in "(\\[\\[rule\\]\\]\n|name = \"[a-z]{1,3}\"\n|measurement = \"m\"\nfield = \"f\"\n|above = \\{ warning = [0-9]{1,2}(\\.[0-9])?, warning_clear = -?[0-9]{1,2} \\}\n|match = \\{ r = \"[!*a-z\\[]{0,3}\" \\}\n|message = \"[{}a-z ]{0,8}\"\n|for = \"[0-9]{1,2}[smh]\"\n|equals = \\{ critical = (true|\"x\"|1) \\}\n|[ -~]{0,10}\n){0,12}") {
            let _ = parse_rules(&text, Path::new("p.toml"));
        }

        /// The newer keys, mixed at random with each other and with junk.
        #[test]
        fn parse_new_keys_never_panics(text in "(\\[\\[rule\\]\\]\nname = \"[a-z]{1,3}\"\nmeasurement = \"m\"\nfield = \"f\"\n|outside = \\{ warning = \\[-?[0-9]{1,2}, -?[0-9]{1,2}\\] \\}\n|inside = \\{ critical = \\[[0-9], [0-9]{2}\\], critical_clear = \\[[0-9], [0-9]\\] \\}\n|rate = \\{ window = \"[0-9]{1,2}[smh]?\", warning = [0-9] \\}\n|keep_firing_for = \"[0-9a-z ]{0,4}\"\n|stale_after = \"[0-9]{0,2}[sm]\"\n|stale_severity = \"[a-z]{0,8}\"\n|flapping = \\{ changes = [0-9], window = \"[0-9]m\" \\}\n|depends_on = \\{ rule = \"[a-z]{0,3}\" \\}\n|\\[\\[rule.override\\]\\]\nmatch = \\{ r = \"[a-z*]{0,2}\" \\}\n|\\[\\[silence\\]\\]\n|start = \"20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:00:00[Z+-]?\"\n|daily = \\{ from = \"[0-9:]{0,5}\", to = \"[0-9:]{0,5}\" \\}\n|[ -~]{0,10}\n){0,14}") {
            if let Ok(f) = parse_rule_file(&text, Path::new("p.toml")) {
                let _ = RuleSet::with_silences(f.rules, f.silences);
            }
        }

        #[test]
        fn template_parse_never_panics(s in "[{}a-z ]{0,16}") {
            if let Ok(t) = MessageTemplate::parse(&s) {
                let tags = TagSet::empty();
                let ctx = RenderContext {
                    rule: "r", measurement: "m", field: "f", tags: &tags, series: &"s",
                    value: &FieldValue::Float(1.0), threshold: "2", severity: Severity::Warning,
                    state: "firing",
                };
                let _ = t.render(&ctx);
            }
        }
    }
}
