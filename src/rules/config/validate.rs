//! Validation: raw TOML into [`Rule`]s and [`Silence`]s, every problem located by file and line.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use globset::GlobBuilder;
use toml::Spanned;

use crate::model::Severity;
use crate::rules::silence::{parse_hhmm, parse_rfc3339, DailyWindow, Silence};
use crate::text::line_col;

use super::condition::{Band, Condition, Direction, Expected, Level};
use super::error::{RuleProblem, RulesError};
use super::matcher::TagMatcher;
use super::raw::*;
use super::spec::*;
use super::template::{
    format_number, MessageTemplate, DEFAULT_MESSAGE, DEFAULT_RESOLVED_MESSAGE,
    DEFAULT_STALE_MESSAGE, SPECIAL_PLACEHOLDERS,
};
use super::{Rule, RuleFile};

/// Labels sitewatch sets on every alert itself (a rule label of that name would be ambiguous).
const RESERVED_LABELS: &[&str] = &[
    "alertname",
    "severity",
    "measurement",
    "field",
    "rule",
    "state",
];

/// Prometheus' label-name syntax, which every receiver accepts: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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
            match TagMatcher::parse(tag, pattern) {
                Ok(t) => out.push(t),
                Err((problem, fix)) => self.report(m.span(), problem, fix),
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

    let mut extras = Vec::new();
    for (key, raw_map) in [("labels", &raw.labels), ("annotations", &raw.annotations)] {
        let mut parsed: Vec<(Arc<str>, MessageTemplate)> = Vec::new();
        if let Some(map) = raw_map {
            for (name, src) in map.get_ref() {
                if !is_label_name(name) {
                    ck.report(
                        map.span(),
                        format!("{key} name {name:?} is not a valid label name"),
                        "use letters, digits and _ (not starting with a digit), e.g. runbook_url or team; receivers such as Alertmanager accept no other names",
                    );
                    continue;
                }
                if key == "labels" && RESERVED_LABELS.contains(&name.as_str()) {
                    ck.report(
                        map.span(),
                        format!("labels.{name} is set by sitewatch itself"),
                        format!(
                            "choose another name; {} are the alert's own labels",
                            RESERVED_LABELS.join(", ")
                        ),
                    );
                    continue;
                }
                match MessageTemplate::parse(src) {
                    Ok(t) if key == "labels" && t.varies_per_event() => ck.report(
                        map.span(),
                        format!("labels.{name} = {src:?} changes from one event to the next"),
                        "labels identify the alert (a resolve must carry the same ones): use only tags, {rule}, {field}, {measurement} or {series} there, and put {value} or {severity} into annotations",
                    ),
                    Ok(t) => {
                        for tag in t.tag_names() {
                            if !positive_tags.contains(&tag) {
                                ck.report(
                                    map.span(),
                                    format!("{key}.{name} uses {{{tag}}}, which is neither a built-in placeholder ({}) nor a tag required by match", SPECIAL_PLACEHOLDERS.join(", ")),
                                    format!("add {tag} = \"*\" to match so every matching series has the tag, or fix the spelling"),
                                );
                            }
                        }
                        parsed.push((name.as_str().into(), t));
                    }
                    Err(problem) => ck.report(
                        map.span(),
                        format!("{key}.{name} template: {problem}"),
                        "placeholders look like {rack} or {value}",
                    ),
                }
            }
        }
        extras.push(parsed);
    }
    let annotations = extras.pop().unwrap_or_default();
    let labels = extras.pop().unwrap_or_default();
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
        labels,
        annotations,
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
            let zone = match rd.timezone.as_deref().map(str::trim) {
                None => Ok(None),
                Some(name) => jiff::tz::TimeZone::get(name).map(Some).map_err(|e| {
                    ck.report(
                        d.span(),
                        format!("silence daily timezone = {name:?} is not a time zone this system knows ({e})"),
                        "use an IANA name such as \"Europe/Berlin\" or \"America/New_York\" (Debian package tzdata), or leave timezone out for UTC",
                    );
                }),
            };
            match (parse_hhmm(&rd.from), parse_hhmm(&rd.to), zone) {
                (_, _, Err(())) => None,
                (Some(from), Some(to), Ok(zone)) if from != to => {
                    Some(DailyWindow { from, to, zone })
                }
                _ => {
                    ck.report(
                        d.span(),
                        format!(
                            "silence daily = {{ from = {:?}, to = {:?} }} is not a window of two different HH:MM times",
                            rd.from, rd.to
                        ),
                        "write e.g. daily = { from = \"02:00\", to = \"04:30\" } (UTC unless timezone is given; may cross midnight)",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TagSet;
    use crate::rules::config::files::load_rule_files;
    use crate::rules::config::RuleSet;

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
    }

    #[test]
    fn labels_and_annotations_are_checked() {
        let base = "[[rule]]\nname = \"r\"\nmeasurement = \"m\"\nfield = \"f\"\nmatch = { rack = \"*\" }\nabove = { warning = 1.0 }\n";
        let ok = parse_rules(
            &format!("{base}labels = {{ team = \"dc-ops\", where = \"{{rack}}\" }}\nannotations = {{ runbook_url = \"https://wiki/{{rule}}\", summary = \"{{rack}}: {{value}}\" }}\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let names: Vec<&str> = ok[0].labels.iter().map(|(k, _)| &**k).collect();
        assert_eq!(names, vec!["team", "where"]);
        assert_eq!(ok[0].annotations.len(), 2);
        for (extra, expect) in [
            (
                "labels = { \"team-name\" = \"x\" }",
                "not a valid label name",
            ),
            ("labels = { severity = \"x\" }", "set by sitewatch itself"),
            (
                "labels = { level = \"{value}\" }",
                "changes from one event to the next",
            ),
            (
                "annotations = { summary = \"{room}\" }",
                "annotations.summary uses {room}",
            ),
            (
                "annotations = { summary = \"{rack\" }",
                "annotations.summary template",
            ),
        ] {
            let err = parse_rules(&format!("{base}{extra}\n"), Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{extra}: {err}");
            assert!(err.contains("t.toml:"), "located: {err}");
        }
    }
}
