//! InfluxDB line protocol encoding, straight into a byte buffer.
//!
//! One [`Sample`] becomes exactly one line, so a batch can be split at any `\n` (retries,
//! 413 splitting and bisection all rely on that). Names and values are written byte by byte
//! into the caller's buffer: no per-field `String`.
//!
//! # Escaping policy
//!
//! The InfluxDB 1.x/2.x (Go) parser and the 3.x / `influxdb_line_protocol` (Rust) parser agree
//! on the escapes below and disagree on `\\` inside names (Go keeps both backslashes, Rust
//! keeps one), so names never contain an escaped backslash:
//!
//! | where             | escaped with `\`        | replaced                                     |
//! |-------------------|-------------------------|----------------------------------------------|
//! | measurement       | `,` and space           | a leading `#` becomes `_` (it would start a comment line) |
//! | tag key and value | `,` `=` and space       |                                              |
//! | field key         | `,` `=` and space       | `"` becomes `'` (the Go parser would open a quoted string) |
//! | string field value| `\` and `"`             |                                              |
//!
//! In all names, ASCII control characters (including `\n`, `\r`, `\t`, NUL) become a space
//! (then escaped): a newline would split the line, and the Rust parser treats a tab as a
//! separator. A backslash in a name is kept when an ordinary character follows it (both
//! parsers read `a\b` as `a\b`); a backslash that ends a name or stands before a character
//! that gets escaped, before a replaced control character, or before another backslash cannot
//! be written so both parsers read it back, and becomes `/`.
//! In string field values `\n` and `\r` become a space so one sample stays one line.
//!
//! Integers end in `i`, unsigned in `u`, booleans are `true`/`false`, floats use Rust's
//! shortest round-trip form (`1e16`, `0.1`, `-0.0`). NaN and ±Inf cannot be stored: such a
//! field is skipped and counted in `sitewatch_influx_invalid_fields_total`; a sample left
//! without fields (or with an empty measurement) produces no line. Timestamps are ns.

use std::io::Write as _;

use crate::buffer::{Encoded, Lane, RecordEncoder};
use crate::model::{FieldValue, Sample};
use crate::pipeline::Batch;

/// Which part of a line a name is written to; decides which characters get escaped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum NameKind {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl NameKind {
    fn must_escape(self, b: u8) -> bool {
        match self {
            NameKind::Measurement => b == b',' || b == b' ',
            NameKind::TagKey | NameKind::TagValue | NameKind::FieldKey => {
                b == b',' || b == b'=' || b == b' '
            }
        }
    }
}

/// The byte a name character is written as before escaping (control characters become a
/// space, a quote in a field key becomes an apostrophe).
fn substitute(kind: NameKind, b: u8) -> u8 {
    if b < 0x20 || b == 0x7f {
        b' '
    } else if kind == NameKind::FieldKey && b == b'"' {
        b'\''
    } else {
        b
    }
}

/// Writes a name (measurement, tag key/value, field key) following the module's policy.
/// Works on bytes: every byte this touches is ASCII, so UTF-8 sequences pass through intact.
pub(crate) fn write_name(out: &mut Vec<u8>, kind: NameKind, name: &str) {
    let bytes = name.as_bytes();
    for (i, &raw) in bytes.iter().enumerate() {
        let mut b = substitute(kind, raw);
        if i == 0 && kind == NameKind::Measurement && b == b'#' {
            b = b'_';
        }
        if b == b'\\' {
            let ambiguous = match bytes.get(i + 1) {
                None => true,
                Some(&next_raw) => {
                    next_raw == b'\\'
                        || next_raw < 0x20
                        || next_raw == 0x7f
                        || kind.must_escape(substitute(kind, next_raw))
                }
            };
            out.push(if ambiguous { b'/' } else { b'\\' });
            continue;
        }
        if kind.must_escape(b) {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Writes a string field value including its quotes.
pub(crate) fn write_string_value(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for &b in value.as_bytes() {
        match b {
            b'\\' | b'"' => {
                out.push(b'\\');
                out.push(b);
            }
            b'\n' | b'\r' => out.push(b' '),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// How values the target cannot take are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Write unsigned integers as signed (`5i` instead of `5u`). InfluxDB 1.x OSS rejects the
    /// `u` suffix ("invalid number", checked against influxd 1.6); a value above `i64::MAX`
    /// is then skipped and counted rather than silently changed.
    pub uint_as_int: bool,
}

/// Why a field could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Invalid {
    NotFinite,
    UintOverflow,
}

/// Writes `value` as a line protocol field value; on error nothing is written.
fn write_field_value(
    out: &mut Vec<u8>,
    value: &FieldValue,
    opts: EncodeOptions,
) -> Result<(), Invalid> {
    // Writing into a Vec<u8> cannot fail, so the io::Result is discarded.
    match value {
        FieldValue::Float(v) => {
            if !v.is_finite() {
                return Err(Invalid::NotFinite);
            }
            // Debug is the shortest round-trip form and switches to exponent notation for
            // very large/small values, which both parsers accept (`1e16`, `1e-7`).
            let _ = write!(out, "{v:?}");
        }
        FieldValue::Int(v) => {
            let _ = write!(out, "{v}i");
        }
        FieldValue::UInt(v) if opts.uint_as_int => {
            let v = i64::try_from(*v).map_err(|_| Invalid::UintOverflow)?;
            let _ = write!(out, "{v}i");
        }
        FieldValue::UInt(v) => {
            let _ = write!(out, "{v}u");
        }
        FieldValue::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
        FieldValue::Str(s) => write_string_value(out, s),
    }
    Ok(())
}

/// Appends one line (with trailing `\n`) for `sample`. Returns false and appends nothing
/// when the sample has no encodable field or an empty measurement name.
pub fn encode_sample(out: &mut Vec<u8>, sample: &Sample) -> bool {
    encode_line(
        out,
        sample,
        &sample.series.measurement,
        EncodeOptions::default(),
    )
}

/// Like [`encode_sample`], but writes the line to `measurement` instead of the sample's own
/// (the writer sends everything from the events channel to the configured events
/// measurement), with `opts` for the target server.
pub fn encode_line(
    out: &mut Vec<u8>,
    sample: &Sample,
    measurement: &str,
    opts: EncodeOptions,
) -> bool {
    if measurement.is_empty() {
        return false;
    }
    let start = out.len();
    write_name(out, NameKind::Measurement, measurement);
    for (k, v) in sample.series.tags.iter() {
        // TagSet already drops empty keys and values.
        out.push(b',');
        write_name(out, NameKind::TagKey, k);
        out.push(b'=');
        write_name(out, NameKind::TagValue, v);
    }
    out.push(b' ');
    let mut any = false;
    for (name, value) in &sample.fields {
        if name.is_empty() {
            metrics::counter!("sitewatch_influx_invalid_fields_total", "reason" => "empty_name")
                .increment(1);
            continue;
        }
        let field_start = out.len();
        if any {
            out.push(b',');
        }
        write_name(out, NameKind::FieldKey, name);
        out.push(b'=');
        match write_field_value(out, value, opts) {
            Ok(()) => any = true,
            Err(why) => {
                out.truncate(field_start);
                let reason = match why {
                    Invalid::NotFinite => "not_finite",
                    Invalid::UintOverflow => "uint_overflow",
                };
                metrics::counter!("sitewatch_influx_invalid_fields_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(
                    series = %sample.series,
                    field = %name,
                    reason,
                    "skipping a field the server cannot store"
                );
            }
        }
    }
    if !any {
        out.truncate(start);
        return false;
    }
    let _ = writeln!(out, " {}", sample.timestamp_ns);
    true
}

/// The InfluxDB sink's records for the shared buffer and spool: one line per sample, events
/// to the events measurement.
pub(crate) struct LineEncoder {
    events_measurement: String,
    options: EncodeOptions,
}

impl LineEncoder {
    pub(crate) fn new(events_measurement: &str, options: EncodeOptions) -> LineEncoder {
        LineEncoder {
            events_measurement: events_measurement.to_string(),
            options,
        }
    }
}

impl RecordEncoder for LineEncoder {
    fn encode(&self, lane: Lane, batch: &Batch) -> Encoded {
        let mut out = Encoded {
            buf: Vec::with_capacity(batch.samples.len() * 96),
            ends: Vec::with_capacity(batch.samples.len()),
            unencodable: 0,
        };
        for sample in &batch.samples {
            let measurement: &str = match lane {
                Lane::Events => &self.events_measurement,
                Lane::Series => &sample.series.measurement,
            };
            if encode_line(&mut out.buf, sample, measurement, self.options) {
                out.ends.push(out.buf.len());
            } else {
                out.unencodable += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SeriesKey, TagSet};
    use influxdb_line_protocol as ilp;
    use proptest::prelude::*;

    fn sample(m: &str, tags: &[(&str, &str)], fields: Vec<(&str, FieldValue)>, ts: i64) -> Sample {
        let mut s = Sample::new(SeriesKey::new(m, TagSet::new(tags.iter().copied())), ts);
        for (k, v) in fields {
            s.fields.push((k.into(), v));
        }
        s
    }

    fn line(s: &Sample) -> String {
        let mut out = Vec::new();
        assert!(encode_sample(&mut out, s));
        String::from_utf8(out).unwrap()
    }

    fn name(kind: NameKind, s: &str) -> String {
        let mut out = Vec::new();
        write_name(&mut out, kind, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_line_with_every_type() {
        let s = sample(
            "ups",
            &[("site", "dc1"), ("dev", "ups1")],
            vec![
                ("f", FieldValue::Float(1.5)),
                ("i", FieldValue::Int(-3)),
                ("u", FieldValue::UInt(u64::MAX)),
                ("b", FieldValue::Bool(true)),
                ("c", FieldValue::Bool(false)),
                ("s", FieldValue::Str("ok".into())),
            ],
            1_700_000_000_123_456_789,
        );
        assert_eq!(
            line(&s),
            "ups,dev=ups1,site=dc1 f=1.5,i=-3i,u=18446744073709551615u,b=true,c=false,s=\"ok\" \
             1700000000123456789\n"
        );
    }

    #[test]
    fn measurement_escapes_comma_space_not_equals() {
        assert_eq!(name(NameKind::Measurement, "a,b c=d"), r"a\,b\ c=d");
    }

    #[test]
    fn measurement_leading_hash_is_replaced() {
        assert_eq!(name(NameKind::Measurement, "#x#"), "_x#");
        assert_eq!(name(NameKind::TagValue, "#x"), "#x");
    }

    #[test]
    fn tag_key_and_value_escape_comma_equals_space() {
        assert_eq!(name(NameKind::TagKey, "a,b=c d"), r"a\,b\=c\ d");
        assert_eq!(name(NameKind::TagValue, "a,b=c d"), r"a\,b\=c\ d");
    }

    #[test]
    fn field_key_escapes_and_replaces_quote() {
        assert_eq!(name(NameKind::FieldKey, "a,b=c d"), r"a\,b\=c\ d");
        assert_eq!(name(NameKind::FieldKey, "say\"hi\""), "say'hi'");
    }

    #[test]
    fn control_characters_in_names_become_escaped_spaces() {
        assert_eq!(name(NameKind::TagValue, "a\nb\r\tc\0"), r"a\ b\ \ c\ ");
        assert_eq!(name(NameKind::Measurement, "x\ny"), r"x\ y");
    }

    #[test]
    fn backslash_policy_in_names() {
        // Followed by an ordinary character: kept.
        assert_eq!(name(NameKind::TagValue, r"DOM\user"), r"DOM\user");
        // At the end, before a special, before a control char, before another backslash.
        assert_eq!(name(NameKind::TagValue, r"a\"), "a/");
        assert_eq!(name(NameKind::TagValue, r"a\,b"), r"a/\,b");
        assert_eq!(name(NameKind::TagValue, "a\\\nb"), r"a/\ b");
        assert_eq!(name(NameKind::TagValue, r"a\\b"), r"a/\b");
        // `=` is ordinary in a measurement, so the backslash before it stays.
        assert_eq!(name(NameKind::Measurement, r"a\=b"), r"a\=b");
    }

    #[test]
    fn string_values_escape_backslash_quote_and_flatten_newlines() {
        let mut out = Vec::new();
        write_string_value(&mut out, "a\\b\"c\r\nd\te");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\\b\\\"c  d\te\"");
    }

    #[test]
    fn unicode_passes_through() {
        let s = sample(
            "température",
            &[("salle", "Zürich ☃")],
            vec![("°C", FieldValue::Str("ünïcødé".into()))],
            1,
        );
        assert_eq!(line(&s), "température,salle=Zürich\\ ☃ °C=\"ünïcødé\" 1\n");
    }

    #[test]
    fn floats_are_shortest_round_trip() {
        for (v, text) in [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (1e16, "1e16"),
            (1.5e-7, "1.5e-7"),
            (f64::MAX, "1.7976931348623157e308"),
        ] {
            let s = sample("m", &[], vec![("v", FieldValue::Float(v))], 0);
            assert_eq!(line(&s), format!("m v={text} 0\n"));
        }
    }

    #[test]
    fn non_finite_fields_are_skipped_and_empty_samples_write_nothing() {
        let s = sample(
            "m",
            &[],
            vec![
                ("a", FieldValue::Float(f64::NAN)),
                ("b", FieldValue::Float(2.0)),
                ("c", FieldValue::Float(f64::INFINITY)),
            ],
            5,
        );
        assert_eq!(line(&s), "m b=2.0 5\n");

        let mut out = b"keep\n".to_vec();
        let only_bad = sample(
            "m",
            &[("t", "v")],
            vec![
                ("a", FieldValue::Float(f64::NEG_INFINITY)),
                ("", FieldValue::Int(1)),
            ],
            5,
        );
        assert!(!encode_sample(&mut out, &only_bad));
        let no_fields = sample("m", &[], vec![], 5);
        assert!(!encode_sample(&mut out, &no_fields));
        let no_name = sample("", &[], vec![("a", FieldValue::Int(1))], 5);
        assert!(!encode_sample(&mut out, &no_name));
        assert_eq!(out, b"keep\n");
    }

    #[test]
    fn encode_line_overrides_measurement() {
        let s = sample("ups", &[], vec![("a", FieldValue::Int(1))], 5);
        let mut out = Vec::new();
        assert!(encode_line(
            &mut out,
            &s,
            "my events",
            EncodeOptions::default()
        ));
        assert_eq!(out, b"my\\ events a=1i 5\n");
    }

    #[test]
    fn unsigned_as_signed_for_v1_and_overflow_skipped() {
        let opts = EncodeOptions { uint_as_int: true };
        let s = sample(
            "m",
            &[],
            vec![
                ("a", FieldValue::UInt(7)),
                ("b", FieldValue::UInt(u64::MAX)),
            ],
            5,
        );
        let mut out = Vec::new();
        assert!(encode_line(&mut out, &s, "m", opts));
        assert_eq!(out, b"m a=7i 5\n");
    }

    /// Reference model of the naming policy, written per character (the encoder works on
    /// bytes) so the two implementations check each other.
    fn expected_name(kind: NameKind, s: &str) -> String {
        let chars: Vec<char> = s.chars().collect();
        let sub = |c: char| -> char {
            if c.is_ascii_control() {
                ' '
            } else if kind == NameKind::FieldKey && c == '"' {
                '\''
            } else {
                c
            }
        };
        let special = |c: char| match kind {
            NameKind::Measurement => c == ',' || c == ' ',
            _ => c == ',' || c == '=' || c == ' ',
        };
        let mut out = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let mut c = sub(c);
            if i == 0 && kind == NameKind::Measurement && c == '#' {
                c = '_';
            }
            if c == '\\' {
                let ok = match chars.get(i + 1) {
                    None => false,
                    Some(&n) => n != '\\' && !n.is_ascii_control() && !special(sub(n)),
                };
                out.push(if ok { '\\' } else { '/' });
            } else {
                out.push(c);
            }
        }
        out
    }

    fn expected_string(s: &str) -> String {
        s.replace(['\n', '\r'], " ")
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        // Weighted towards the characters that need care, plus some non-ASCII.
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('a', 'z'),
                3 => proptest::sample::select(vec![
                    ',', '=', ' ', '\\', '"', '\n', '\r', '\t', '\0', '#', '\'', 'é', '☃',
                ]),
                1 => any::<char>(),
            ],
            1..10,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn value_strategy() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<f64>().prop_map(FieldValue::Float),
            any::<i64>().prop_map(FieldValue::Int),
            any::<u64>().prop_map(FieldValue::UInt),
            any::<bool>().prop_map(FieldValue::Bool),
            ".{0,20}".prop_map(|s| FieldValue::Str(s.into())),
            name_strategy().prop_map(|s| FieldValue::Str(s.into())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trips_through_the_reference_parser(
            measurement in name_strategy(),
            tags in proptest::collection::vec((name_strategy(), name_strategy()), 0..4),
            fields in proptest::collection::vec((name_strategy(), value_strategy()), 1..5),
            ts in any::<i64>(),
        ) {
            let mut s = Sample::new(
                SeriesKey::new(measurement.as_str(), TagSet::new(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))),
                ts,
            );
            for (k, v) in &fields {
                s.fields.push((k.as_str().into(), v.clone()));
            }
            let mut out = Vec::new();
            let wrote = encode_sample(&mut out, &s);
            let finite: Vec<_> = s.fields.iter()
                .filter(|(_, v)| !matches!(v, FieldValue::Float(f) if !f.is_finite()))
                .collect();
            prop_assert_eq!(wrote, !finite.is_empty());
            if !wrote {
                prop_assert!(out.is_empty());
                return Ok(());
            }
            let text = std::str::from_utf8(&out).unwrap();
            prop_assert!(text.ends_with('\n'));
            prop_assert_eq!(text.matches('\n').count(), 1, "one sample, one line: {:?}", text);

            let parsed: Vec<_> = ilp::parse_lines(text).collect();
            prop_assert_eq!(parsed.len(), 1);
            let line = parsed.into_iter().next().unwrap();
            let line = match line {
                Ok(l) => l,
                Err(e) => return Err(TestCaseError::fail(format!("{e} for {text:?}"))),
            };
            prop_assert_eq!(line.series.measurement.as_str(), expected_name(NameKind::Measurement, &measurement));
            let got_tags: Vec<(String, String)> = line.series.tag_set.iter().flatten()
                .map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let want_tags: Vec<(String, String)> = s.series.tags.iter()
                .map(|(k, v)| (expected_name(NameKind::TagKey, k), expected_name(NameKind::TagValue, v)))
                .collect();
            prop_assert_eq!(got_tags, want_tags);
            prop_assert_eq!(line.field_set.len(), finite.len());
            for ((gk, gv), (wk, wv)) in line.field_set.iter().zip(finite) {
                prop_assert_eq!(gk.as_str(), expected_name(NameKind::FieldKey, wk));
                match (gv, wv) {
                    (ilp::FieldValue::F64(g), FieldValue::Float(w)) => prop_assert_eq!(g.to_bits(), w.to_bits()),
                    (ilp::FieldValue::I64(g), FieldValue::Int(w)) => prop_assert_eq!(g, w),
                    (ilp::FieldValue::U64(g), FieldValue::UInt(w)) => prop_assert_eq!(g, w),
                    (ilp::FieldValue::Boolean(g), FieldValue::Bool(w)) => prop_assert_eq!(g, w),
                    (ilp::FieldValue::String(g), FieldValue::Str(w)) => prop_assert_eq!(g.as_str(), expected_string(w)),
                    (g, w) => return Err(TestCaseError::fail(format!("type changed: {g:?} vs {w:?}"))),
                }
            }
            prop_assert_eq!(line.timestamp, Some(ts));
        }
    }
}
