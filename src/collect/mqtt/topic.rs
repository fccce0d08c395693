//! Topic templates: one string in config gives both the MQTT subscription filter and the
//! tags captured from each received topic.
//!
//! `dc/{site}/{room}/+/temperature` subscribes to `dc/+/+/+/temperature` and turns
//! `dc/ams1/hall2/r14/temperature` into tags `site=ams1`, `room=hall2`. `{name...}` (last level
//! only) captures the rest of the topic, `/`-joined, like `#` matches it.

use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic template {template:?}: {problem}")]
pub struct TopicTemplateError {
    pub template: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    /// `+`
    Any,
    /// `{name}`
    Capture(Arc<str>),
    /// `#` (last level only)
    AnyRest,
    /// `{name...}` (last level only)
    CaptureRest(Arc<str>),
}

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    source: String,
    levels: Vec<Level>,
}

fn valid_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl TopicTemplate {
    pub fn parse(template: &str) -> Result<TopicTemplate, TopicTemplateError> {
        let err = |problem: String| TopicTemplateError {
            template: template.to_string(),
            problem,
        };
        if template.is_empty() {
            return Err(err(
                "is empty; give a topic such as \"sensors/{room}/temperature\"".into(),
            ));
        }
        if template.contains('\0') {
            return Err(err(
                "contains a NUL character, which MQTT forbids in topics".into(),
            ));
        }
        let parts: Vec<&str> = template.split('/').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<Arc<str>> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = if *part == "+" {
                Level::Any
            } else if *part == "#" {
                if i != last {
                    return Err(err("`#` may only be the last level".into()));
                }
                Level::AnyRest
            } else if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, rest) = match inner.strip_suffix("...") {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if !valid_capture_name(name) {
                    return Err(err(format!(
                        "capture `{{{inner}}}` needs a tag name of letters, digits and `_` \
                         (not starting with a digit)"
                    )));
                }
                if rest && i != last {
                    return Err(err(format!("`{{{inner}}}` may only be the last level")));
                }
                let name: Arc<str> = Arc::from(name);
                if names.contains(&name) {
                    return Err(err(format!("tag `{name}` is captured twice")));
                }
                names.push(name.clone());
                if rest {
                    Level::CaptureRest(name)
                } else {
                    Level::Capture(name)
                }
            } else {
                if part.contains(['+', '#']) {
                    return Err(err(format!(
                        "level {part:?} mixes a wildcard with text; `+` and `#` must stand alone"
                    )));
                }
                if part.contains(['{', '}']) {
                    return Err(err(format!(
                        "level {part:?}: a capture `{{name}}` must be a whole level"
                    )));
                }
                Level::Literal((*part).into())
            };
            levels.push(level);
        }
        Ok(TopicTemplate {
            source: template.to_string(),
            levels,
        })
    }

    /// The template as written in config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The MQTT subscription filter: captures become `+` / `#`.
    pub fn filter(&self) -> String {
        let mut out = String::with_capacity(self.source.len());
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match level {
                Level::Literal(s) => out.push_str(s),
                Level::Any | Level::Capture(_) => out.push('+'),
                Level::AnyRest | Level::CaptureRest(_) => out.push('#'),
            }
        }
        out
    }

    /// Names of the tags this template captures, in order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Capture(n) | Level::CaptureRest(n) => Some(n.as_ref()),
            _ => None,
        })
    }

    /// Matches `topic` with MQTT filter semantics and appends the captured tags to `out`.
    /// On a mismatch `out` is left as it was.
    pub fn match_topic(&self, topic: &str, out: &mut Vec<(Arc<str>, Arc<str>)>) -> bool {
        let start = out.len();
        if self.match_inner(topic, out) {
            true
        } else {
            out.truncate(start);
            false
        }
    }

    fn match_inner(&self, topic: &str, out: &mut Vec<(Arc<str>, Arc<str>)>) -> bool {
        // MQTT 3.1.1 §4.7.2: a filter starting with a wildcard does not match `$SYS/...`.
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return false;
        }
        let mut rest = Some(topic);
        for level in &self.levels {
            let part = match level {
                Level::AnyRest => return true,
                Level::CaptureRest(name) => {
                    // `a/#` also matches `a` itself: the capture is then absent, as TagSet
                    // drops empty values anyway.
                    if let Some(r) = rest.filter(|r| !r.is_empty()) {
                        out.push((name.clone(), Arc::from(r)));
                    }
                    return true;
                }
                Level::Literal(_) | Level::Any | Level::Capture(_) => {
                    let Some(r) = rest else { return false };
                    match r.find('/') {
                        Some(i) => {
                            rest = Some(&r[i + 1..]);
                            &r[..i]
                        }
                        None => {
                            rest = None;
                            r
                        }
                    }
                }
            };
            match level {
                Level::Literal(lit) if **lit != *part => return false,
                Level::Capture(name) if !part.is_empty() => {
                    out.push((name.clone(), Arc::from(part)));
                }
                _ => {}
            }
        }
        rest.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn caps(t: &TopicTemplate, topic: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        t.match_topic(topic, &mut out).then(|| {
            out.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    #[test]
    fn captures_and_filter() {
        let t = TopicTemplate::parse("dc/{site}/{room}/+/temperature").unwrap();
        assert_eq!(t.filter(), "dc/+/+/+/temperature");
        assert_eq!(
            caps(&t, "dc/ams1/hall2/r14/temperature"),
            Some(vec![
                ("site".into(), "ams1".into()),
                ("room".into(), "hall2".into())
            ])
        );
        assert_eq!(caps(&t, "dc/ams1/hall2/r14/humidity"), None);
        assert_eq!(caps(&t, "dc/ams1/hall2/temperature"), None);
        assert_eq!(caps(&t, "dc/ams1/hall2/r14/temperature/x"), None);
    }

    #[test]
    fn rest_captures() {
        let t = TopicTemplate::parse("sensors/{path...}").unwrap();
        assert_eq!(t.filter(), "sensors/#");
        assert_eq!(
            caps(&t, "sensors/a/b/c"),
            Some(vec![("path".into(), "a/b/c".into())])
        );
        assert_eq!(caps(&t, "sensors"), Some(vec![]));
        let t = TopicTemplate::parse("#").unwrap();
        assert_eq!(caps(&t, "x/y"), Some(vec![]));
        assert_eq!(caps(&t, "$SYS/x"), None);
        let t = TopicTemplate::parse("$SYS/{what...}").unwrap();
        assert!(caps(&t, "$SYS/broker/uptime").is_some());
    }

    #[test]
    fn mismatch_leaves_out_untouched() {
        let t = TopicTemplate::parse("a/{x}/b").unwrap();
        let mut out = vec![(Arc::from("k"), Arc::from("v"))];
        assert!(!t.match_topic("a/1/c", &mut out));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "",
            "a/#/b",
            "a/{x...}/b",
            "a/b+",
            "a/rack-{n}",
            "a/{1x}",
            "a/{}",
            "a/{x}/{x}",
            "a/b#",
        ] {
            assert!(
                TopicTemplate::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    /// Reference MQTT filter matcher, written independently of the template code.
    fn mqtt_filter_matches(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        for (i, fl) in f.iter().enumerate() {
            if *fl == "#" {
                return true;
            }
            match t.get(i) {
                None => return false,
                Some(tl) => {
                    if *fl != "+" && fl != tl {
                        return false;
                    }
                }
            }
        }
        f.len() == t.len()
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("".to_string()),
            Just("$s".to_string()),
        ]
    }

    fn template_level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("".to_string()),
            Just("$s".to_string()),
            Just("+".to_string()),
            Just("{c}".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn never_panics(template in ".{0,40}", topic in ".{0,60}") {
            if let Ok(t) = TopicTemplate::parse(&template) {
                let mut out = Vec::new();
                let _ = t.match_topic(&topic, &mut out);
                let _ = t.filter();
            }
        }

        #[test]
        fn agrees_with_mqtt_filter(
            tl in proptest::collection::vec(template_level(), 1..5),
            tail in prop_oneof![Just(""), Just("#"), Just("{rest...}")],
            topic in proptest::collection::vec(level(), 1..7),
        ) {
            // Number the single-level captures so names stay unique.
            let mut n = 0;
            let mut parts: Vec<String> = tl.into_iter().map(|l| {
                if l == "{c}" { n += 1; format!("{{c{n}}}") } else { l }
            }).collect();
            if !tail.is_empty() {
                parts.push(tail.to_string());
            }
            let template = parts.join("/");
            prop_assume!(!template.is_empty());
            let t = TopicTemplate::parse(&template).unwrap();
            let topic = topic.join("/");
            let mut out = Vec::new();
            let matched = t.match_topic(&topic, &mut out);
            prop_assert_eq!(matched, mqtt_filter_matches(&t.filter(), &topic),
                "template {} topic {}", template, topic);
            if matched {
                // Every captured value is a non-empty piece of the topic.
                for (_, v) in &out {
                    prop_assert!(!v.is_empty() && topic.contains(v.as_ref()));
                }
            } else {
                prop_assert!(out.is_empty());
            }
        }
    }
}
