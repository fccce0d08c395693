//! Property tests: the config parser is fed text from outside (an operator's editor, a
//! template engine, a half-written file), so no input may panic it, and every error must
//! point at a line and column inside the text.

use std::path::Path;

use proptest::prelude::*;

use super::{line_col, parse, ConfigError};

/// A config that parses, to mutate.
const VALID: &str = r#"[service]
log_level = "info"
listen = "127.0.0.1:9273"

[influx]
url = "http://127.0.0.1:8086"
database = "sitewatch"
batch_size = 5000
flush_interval = "1s"
spool_dir = "spool"
fsync = "batch"

[mqtt]
host = "127.0.0.1"
port = 1883
client_id = "sitewatch-test"

[[mqtt.subscription]]
topic = "dc/{site}/{rack}/temperature"
measurement = "environment"
format = "number"
field = "temperature_c"
max_series = 100

[[mqtt.subscription]]
topic = "zigbee2mqtt/{sensor}"
measurement = "environment"
format = "json"
fields = { temperature_c = "temperature", leak = "water_leak" }
"#;

/// Checks the one property every outcome must have: Ok, or a parse error whose position is
/// inside the text (1-based, at most one line past the last).
fn check(text: &str) -> Result<(), TestCaseError> {
    match parse(text, Path::new("fuzz.toml")) {
        Ok(_) => {}
        Err(ConfigError::Parse {
            line,
            column,
            message,
            ..
        }) => {
            let lines = text.lines().count().max(1);
            prop_assert!(line >= 1 && line <= lines + 1, "line {line} of {lines}");
            prop_assert!(column >= 1);
            prop_assert!(!message.is_empty());
        }
        Err(other) => prop_assert!(false, "parse returned a non-parse error: {other}"),
    }
    Ok(())
}

/// Keys the schema knows, so generated text gets past "unknown key" into value checking.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("url"),
        Just("database"),
        Just("api"),
        Just("token"),
        Just("batch_size"),
        Just("flush_interval"),
        Just("spool_dir"),
        Just("spool_max_bytes"),
        Just("fsync"),
        Just("host"),
        Just("port"),
        Just("topic"),
        Just("format"),
        Just("measurement"),
        Just("fields"),
        Just("tags"),
        Just("max_series"),
        Just("log_level"),
        Just("listen"),
        Just("files"),
        Just("password"),
        Just("bogus"),
    ]
    .prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9 {}:/._-]{0,20}".prop_map(|s| format!("{s:?}")),
        Just("\"10s\"".to_string()),
        Just("\"-1s\"".to_string()),
        Just("\"v2\"".to_string()),
        Just("{ env = \"X\" }".to_string()),
        Just("{ file = \"\" }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("\"\u{1F525}\u{0301}\"".to_string()),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec((key(), inner), 0..3).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (key(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop_oneof![
            Just("[service]"),
            Just("[influx]"),
            Just("[mqtt]"),
            Just("[[mqtt.subscription]]"),
            Just("[snmp]"),
            Just("[rules]"),
            Just("[notify]"),
            Just("[[influx]]"),
            Just("[influx"),
        ]
        .prop_map(str::to_string),
        1 => "[ -~]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text)?;
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn toml_shaped_text_never_panics(lines in proptest::collection::vec(line(), 0..20)) {
        check(&lines.join("\n"))?;
    }

    /// Cuts, insertions and byte flips of a valid config: typical editing accidents.
    #[test]
    fn mutated_valid_config_never_panics(at in 0usize..VALID.len(), len in 0usize..40, insert in "\\PC{0,5}") {
        let mut text = VALID.to_string();
        let mut start = at.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.replace_range(start..end, &insert);
        check(&text)?;
    }

    /// `line_col` takes any offset: past the end, and inside a multi-byte character too.
    #[test]
    fn line_col_never_panics(text in "\\PC{0,60}", offset in 0usize..200) {
        let (line, column) = line_col(&text, offset);
        prop_assert!(line >= 1 && column >= 1);
        let clamped = offset.min(text.len());
        prop_assert_eq!(line, text.as_bytes()[..clamped].iter().filter(|&&b| b == b'\n').count() + 1);
    }
}

#[test]
fn the_valid_config_parses() {
    parse(VALID, Path::new("valid.toml")).expect("the mutation seed must be valid");
}
