//! JSON paths of `json` subscriptions: `a.b.0.c`.
//!
//! Keys are separated by dots; where the value is an array a segment that is a number is an
//! index (`readings.0.value`). A key that contains a dot is written with the dot escaped,
//! `temp\.inlet` (in TOML: `"temp\\.inlet"`, or the literal string `'temp\.inlet'`), and a
//! backslash as `\\`. Any other backslash is an error, so a future escape cannot change what
//! an existing path means. The empty path `""` is the value itself.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    key: Box<str>,
    /// The key read as an array index, where it is a number.
    index: Option<usize>,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    source: Box<str>,
    segments: Vec<Segment>,
}

impl JsonPath {
    /// Parses `path`; the error says what is wrong and how to write it.
    pub fn parse(path: &str) -> Result<JsonPath, String> {
        let mut segments = Vec::new();
        if path.is_empty() {
            return Ok(JsonPath {
                source: "".into(),
                segments,
            });
        }
        let mut key = String::new();
        // Whether the current segment had an escape: `\0` style segments are not indexes.
        let mut escaped = false;
        let mut chars = path.chars();
        let mut finish = |key: &mut String, escaped: bool| -> Result<(), String> {
            if key.is_empty() {
                return Err(format!(
                    "path {path:?} has an empty segment; write keys separated by single dots, \
                     e.g. \"sensor.temperature\" or \"readings.0.value\" (a key with a dot in \
                     it is written with the dot escaped: \"temp\\\\.inlet\" in TOML)"
                ));
            }
            let index = if escaped {
                None
            } else {
                key.parse::<usize>().ok()
            };
            segments.push(Segment {
                key: std::mem::take(key).into_boxed_str(),
                index,
            });
            Ok(())
        };
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    finish(&mut key, escaped)?;
                    escaped = false;
                }
                '\\' => match chars.next() {
                    Some(e @ ('.' | '\\')) => {
                        key.push(e);
                        escaped = true;
                    }
                    other => {
                        return Err(format!(
                            "path {path:?}: `\\` must be followed by `.` (a dot in a key) or \
                             `\\` (a backslash in a key), not {}",
                            match other {
                                Some(c) => format!("{c:?}"),
                                None => "the end of the path".to_string(),
                            }
                        ))
                    }
                },
                c => key.push(c),
            }
        }
        finish(&mut key, escaped)?;
        Ok(JsonPath {
            source: path.into(),
            segments,
        })
    }

    /// The path as written in config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The value at this path, if there is one.
    pub fn get<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for seg in &self.segments {
            v = match v {
                Value::Object(map) => map.get(seg.key.as_ref())?,
                Value::Array(items) => items.get(seg.index?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The key, when the path is one key (`temperature`, `temp\.inlet`): such paths can be
    /// read from a flat object without a document tree (`flat_json`).
    pub(crate) fn single_key(&self) -> Option<&str> {
        match &self.segments[..] {
            [only] => Some(&only.key),
            _ => None,
        }
    }

    /// The first segment that is a number, i.e. may pick an array element by position
    /// (`points.0.value`), as the path up to and including it.
    pub fn positional_prefix(&self) -> Option<String> {
        let n = self.segments.iter().position(|s| s.index.is_some())?;
        Some(
            self.segments[..=n]
                .iter()
                .map(|s| s.key.replace('\\', "\\\\").replace('.', "\\."))
                .collect::<Vec<_>>()
                .join("."),
        )
    }

    /// The keys, unescaped (for tests and messages).
    #[cfg(test)]
    fn keys(&self) -> Vec<&str> {
        self.segments.iter().map(|s| &*s.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn plain_indexed_and_escaped_paths() {
        let doc = json!({
            "a": {"b": [10, {"c": 2}]},
            "temp.inlet": 21.5,
            "temp": {"inlet": 99},
            "back\\slash": 1,
            "switch:1": {"apower": 5},
            "0": "zero-key"
        });
        let get = |p: &str| JsonPath::parse(p).unwrap().get(&doc).cloned();
        assert_eq!(get("a.b.0"), Some(json!(10)));
        assert_eq!(get("a.b.1.c"), Some(json!(2)));
        assert_eq!(get("a.b.2"), None);
        // The escaped dot reads the key with the dot, not the nested value.
        assert_eq!(get("temp\\.inlet"), Some(json!(21.5)));
        assert_eq!(get("temp.inlet"), Some(json!(99)));
        assert_eq!(get("back\\\\slash"), Some(json!(1)));
        assert_eq!(get("switch:1.apower"), Some(json!(5)));
        // A number is an object key on objects.
        assert_eq!(get("0"), Some(json!("zero-key")));
        assert_eq!(get(""), Some(doc.clone()));
        assert_eq!(
            JsonPath::parse("temp\\.inlet.x").unwrap().keys(),
            vec!["temp.inlet", "x"]
        );
    }

    #[test]
    fn bad_paths_say_how_to_write_them() {
        for (bad, wants) in [
            ("a..b", "empty segment"),
            (".a", "empty segment"),
            ("a.", "empty segment"),
            ("a\\b", "`\\` must be followed"),
            ("a\\", "the end of the path"),
        ] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert!(
                e.contains(wants) && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn positional_paths_are_found() {
        let p = |s: &str| JsonPath::parse(s).unwrap().positional_prefix();
        assert_eq!(p("points.0.value"), Some("points.0".to_string()));
        assert_eq!(p("a\\.b.3"), Some("a\\.b.3".to_string()));
        assert_eq!(p("sensor.temperature"), None);
        assert_eq!(p(""), None);
    }

    /// Keys of every kind of character, dots and backslashes included.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z]{1,4}", "[a-z.\\\\:]{1,6}", ".{1,6}", "[0-9]{1,3}"]
    }

    fn escape(k: &str) -> String {
        k.replace('\\', "\\\\").replace('.', "\\.")
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            if let Ok(p) = JsonPath::parse(&s) {
                let _ = p.get(&json!({"a": [1, {"b": 2}]}));
                let _ = p.positional_prefix();
            }
        }

        /// Escaping any keys and joining them with dots reads exactly those keys back.
        #[test]
        fn escaped_keys_round_trip(keys in proptest::collection::vec(key(), 1..4)) {
            let path = keys.iter().map(|k| escape(k)).collect::<Vec<_>>().join(".");
            let p = JsonPath::parse(&path).unwrap();
            prop_assert_eq!(p.keys(), keys.iter().map(String::as_str).collect::<Vec<_>>());
            // A document nesting the keys is read at the innermost value.
            let mut doc = json!(42);
            for k in keys.iter().rev() {
                doc = Value::Object([(k.clone(), doc)].into_iter().collect());
            }
            prop_assert_eq!(p.get(&doc), Some(&json!(42)));
        }
    }
}
