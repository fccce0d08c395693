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
}

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
                Some(if holds(critical, Severity::Critical) {
                    Severity::Critical
                } else if holds(warning, Severity::Warning) {
                    Severity::Warning
                } else {
                    Severity::Ok
                })
            }
            Condition::Equals { warning, critical } => {
                let c = critical.as_ref().map(|e| e.matches(value));
                let w = warning.as_ref().map(|e| e.matches(value));
                if c.flatten().is_none() && w.flatten().is_none() {
                    return None;
                }
                Some(if c == Some(Some(true)) {
                    Severity::Critical
                } else if w == Some(Some(true)) {
                    Severity::Warning
                } else {
                    Severity::Ok
                })
            }
        }
    }

    /// The level's threshold for event records (numeric only).
    pub(crate) fn threshold(&self, sev: Severity) -> Option<f64> {
        match self {
            Condition::Threshold {
                warning, critical, ..
            } => self::level_of(warning, critical, sev).map(|l| l.at),
            Condition::Equals { warning, critical } => match sev {
                Severity::Warning => warning.as_ref().and_then(Expected::threshold),
                Severity::Critical => critical.as_ref().and_then(Expected::threshold),
                Severity::Ok => None,
            },
        }
    }

    /// Text for `{threshold}` in a firing message.
    pub(crate) fn threshold_text(&self, sev: Severity) -> String {
        match self {
            Condition::Threshold {
                warning, critical, ..
            } => level_of(warning, critical, sev)
                .map(|l| format_number(l.at))
                .unwrap_or_default(),
            Condition::Equals { warning, critical } => match sev {
                Severity::Warning => warning.as_ref().map(ToString::to_string),
                Severity::Critical => critical.as_ref().map(ToString::to_string),
                Severity::Ok => None,
            }
            .unwrap_or_default(),
        }
    }

    /// Threshold crossed to resolve: the clear value of the lowest level, since being back
    /// past it is what ends the incident. For `equals`, the value that was matched.
    pub(crate) fn resolve_threshold(&self, last: Severity) -> (Option<f64>, String) {
        match self {
            Condition::Threshold {
                warning, critical, ..
            } => match warning.or(*critical) {
                Some(l) => (Some(l.clear), format_number(l.clear)),
                None => (None, String::new()),
            },
            Condition::Equals { .. } => (self.threshold(last), self.threshold_text(last)),
        }
    }

    /// Levels defined by this condition, lowest first.
    pub(crate) fn levels(&self) -> impl Iterator<Item = Severity> {
        let (w, c) = match self {
            Condition::Threshold {
                warning, critical, ..
            } => (warning.is_some(), critical.is_some()),
            Condition::Equals { warning, critical } => (warning.is_some(), critical.is_some()),
        };
        [(w, Severity::Warning), (c, Severity::Critical)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, s)| s)
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
    matcher: GlobMatcher,
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

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub measurement: Arc<str>,
    pub field: Arc<str>,
    pub matchers: Vec<TagMatcher>,
    pub condition: Condition,
    /// How long the condition must hold, on sample timestamps, before it fires.
    pub for_duration: Duration,
    pub message: MessageTemplate,
    pub resolved_message: MessageTemplate,
    pub origin: PathBuf,
    pub line: usize,
}

impl Rule {
    pub fn matches_tags(&self, tags: &TagSet) -> bool {
        self.matchers.iter().all(|m| m.matches(tags))
    }

    /// Same evaluation semantics (what is watched, where the levels are, how long to wait):
    /// rule state survives a reload exactly when this holds. Messages and file location may
    /// differ.
    pub fn same_condition(&self, other: &Rule) -> bool {
        self.name == other.name
            && self.measurement == other.measurement
            && self.field == other.field
            && self.matchers == other.matchers
            && self.condition == other.condition
            && self.for_duration == other.for_duration
    }

    pub(crate) fn for_ns(&self) -> i64 {
        i64::try_from(self.for_duration.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// All loaded rules, names unique.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// Checks that names are unique across all rules (and so across files).
    pub fn new(rules: Vec<Rule>) -> Result<Self, RulesError> {
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
        if !problems.is_empty() {
            return Err(RulesError::Invalid(problems));
        }
        Ok(RuleSet {
            rules: rules.into_iter().map(Arc::new).collect(),
        })
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
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
    #[serde(default, rename = "for")]
    for_duration: Option<Spanned<String>>,
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
}

/// Parses and validates one rule file's text. `origin` is only used in messages.
pub fn parse_rules(text: &str, origin: &Path) -> Result<Vec<Rule>, RulesError> {
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
    if !problems.is_empty() {
        return Err(RulesError::Invalid(problems));
    }
    // Duplicates within the file; across files is load_rule_files' job.
    RuleSet::new(rules.clone())?;
    Ok(rules)
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

    // Tag matchers.
    let mut matchers = Vec::new();
    if let Some(m) = &raw.matchers {
        for (tag, pattern) in m.get_ref() {
            let (negate, glob) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            if tag.is_empty() || glob.is_empty() {
                ck.report(
                    m.span(),
                    format!("match {tag:?} = {pattern:?} has an empty tag name or pattern"),
                    "write e.g. match = { rack = \"r*\" } or { rack = \"!spare*\" }",
                );
                continue;
            }
            match GlobBuilder::new(glob).build() {
                Ok(g) => matchers.push(TagMatcher {
                    tag: tag.clone(),
                    pattern: pattern.clone(),
                    negate,
                    matcher: g.compile_matcher(),
                }),
                Err(e) => ck.report(
                    m.span(),
                    format!(
                        "match pattern {pattern:?} for tag '{tag}' is not a valid glob: {}",
                        e.kind()
                    ),
                    "use *, ? and {a,b} wildcards, e.g. \"r1*\"",
                ),
            }
        }
    }

    // Exactly one condition.
    let given = [
        raw.above.is_some(),
        raw.below.is_some(),
        raw.equals.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let mut condition = None;
    if given != 1 {
        ck.report(
            span.clone(),
            if given == 0 {
                "no condition".to_string()
            } else {
                "more than one of above/below/equals".to_string()
            },
            "give exactly one of above = {...}, below = {...} or equals = {...}; split into two rules if you need both",
        );
    } else if let Some(l) = &raw.above {
        condition = threshold_condition(&mut ck, l, Direction::Above);
    } else if let Some(l) = &raw.below {
        condition = threshold_condition(&mut ck, l, Direction::Below);
    } else if let Some(e) = &raw.equals {
        condition = equals_condition(&mut ck, e);
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

    let for_duration = match &raw.for_duration {
        None => Duration::ZERO,
        Some(f) => match humantime::parse_duration(f.get_ref().trim()) {
            Ok(d) => d,
            Err(e) => {
                ck.report(
                    f.span(),
                    format!("for = {:?} is not a duration: {e}", f.get_ref()),
                    "write e.g. for = \"30s\", \"5m\" or \"1h 30m\"",
                );
                Duration::ZERO
            }
        },
    };

    if !ck.problems.is_empty() {
        return Err(ck.problems);
    }
    let Some(condition) = condition else {
        return Err(ck.problems);
    };
    let resolved_message = templates.pop().unwrap_or_else(|| MessageTemplate {
        source: String::new(),
        segments: Vec::new(),
    });
    let message = templates.pop().unwrap_or_else(|| MessageTemplate {
        source: String::new(),
        segments: Vec::new(),
    });
    let (line, _) = line_col(text, span.start);
    Ok(Rule {
        name: name.into(),
        measurement: raw.measurement.get_ref().trim().into(),
        field: raw.field.get_ref().trim().into(),
        matchers,
        condition,
        for_duration,
        message,
        resolved_message,
        origin: origin.to_path_buf(),
        line,
    })
}

fn threshold_condition(
    ck: &mut Checker<'_>,
    levels: &Spanned<RawLevels>,
    direction: Direction,
) -> Option<Condition> {
    let span = levels.span();
    let l = levels.get_ref();
    let key = match direction {
        Direction::Above => "above",
        Direction::Below => "below",
    };
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
    let mut problems = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.clone(),
            source,
        })?;
        match parse_rules(&text, path) {
            Ok(mut r) => rules.append(&mut r),
            Err(RulesError::Invalid(mut p)) => problems.append(&mut p),
            Err(other) => return Err(other),
        }
    }
    if !problems.is_empty() {
        return Err(RulesError::Invalid(problems));
    }
    RuleSet::new(rules)
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
        };
        assert_eq!(cfg.resolve(&odd).unwrap(), vec![odd.join("rules/x.toml")]);
        // Absolute patterns ignore the base.
        let cfg = RulesConfig {
            files: vec![format!("{}/rules/*.toml", odd.display()).replace("[1]", "[[]1]")],
        };
        assert_eq!(
            cfg.resolve(Path::new("elsewhere")).unwrap(),
            vec![odd.join("rules/x.toml")]
        );
        let cfg = RulesConfig {
            files: vec!["rules/[".into()],
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
    fn numbers_format_short() {
        assert_eq!(format_number(27.0), "27");
        assert_eq!(format_number(273.0 * 0.1), "27.3");
        assert_eq!(format_number(12.8), "12.8");
        assert_eq!(format_number(-0.0001), "0");
        assert_eq!(format_number(0.125), "0.125");
    }

    proptest::proptest! {
        /// Rule files come from people: any text must give rules or an error, never a panic.
        #[test]
        fn parse_never_panics(text in "(\\[\\[rule\\]\\]\n|name = \"[a-z]{1,3}\"\n|measurement = \"m\"\nfield = \"f\"\n|above = \\{ warning = [0-9]{1,2}(\\.[0-9])?, warning_clear = -?[0-9]{1,2} \\}\n|match = \\{ r = \"[!*a-z\\[]{0,3}\" \\}\n|message = \"[{}a-z ]{0,8}\"\n|for = \"[0-9]{1,2}[smh]\"\n|equals = \\{ critical = (true|\"x\"|1) \\}\n|[ -~]{0,10}\n){0,12}") {
            let _ = parse_rules(&text, Path::new("p.toml"));
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
