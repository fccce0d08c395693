//! `message` templates: parsing `{placeholder}` text, rendering it, and the short number form
//! used in messages.

use std::fmt;

use crate::model::{FieldValue, Severity, TagSet};

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

pub(super) const SPECIAL_PLACEHOLDERS: &[&str] = &[
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

    /// Whether the text can differ between two events of the same (series, rule): it uses
    /// `{value}`, `{threshold}`, `{severity}` or `{state}`. Labels must not (receivers such
    /// as Alertmanager tell alerts apart by their labels, so a resolve must carry the same).
    pub fn varies_per_event(&self) -> bool {
        self.segments.iter().any(|s| {
            matches!(
                s,
                Segment::Placeholder(
                    Placeholder::Value
                        | Placeholder::Threshold
                        | Placeholder::Severity
                        | Placeholder::State
                )
            )
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

pub(super) const DEFAULT_MESSAGE: &str =
    "{rule}: {field} of {series} is {value} (threshold {threshold})";
pub(super) const DEFAULT_RESOLVED_MESSAGE: &str =
    "{rule} resolved: {field} of {series} is back to {value} (threshold {threshold})";
pub(super) const DEFAULT_STALE_MESSAGE: &str =
    "{rule}: no data for {field} of {series} for {threshold} (last value {value})";

#[cfg(test)]
mod tests {
    use super::*;

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
