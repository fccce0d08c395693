//! How one JSON value becomes a field value: the declared [`FieldType`] and, for devices that
//! report states as words, a table of states (`ON`/`OFF`, `open`/`closed`, `wet`/`dry`).
//!
//! ```toml
//! fields = { relay = { path = "POWER", states = "default" } }             # ON -> true, OFF -> false
//! fields = { mode = { path = "mode", states = { auto = 0, cool = 1, heat = 2 } } }  # integer
//! ```
//!
//! `states = "default"` is [`DEFAULT_STATES`]; a table maps each word to `true`/`false` or to
//! an integer (all entries of one kind). Words are matched without regard to case and
//! surrounding spaces. A word not in the table is dropped from the point and counted
//! (`reason="unknown_state"`), never stored as a string; a JSON boolean or number still goes
//! through the field's type as usual.

use std::sync::Arc;

use serde_json::Value;

use super::field_type::FieldType;
use super::json_value::{float_to_i64, float_to_u64, json_field};
use super::reason::DecodeReason;
pub use super::value_spec::{NumericSpec, StateValue, StatesSpec};
use crate::collect::registers::{self, DataType, Layout, Order, Raw};
use crate::collect::scale::Scale;
use crate::model::FieldValue;

/// A compiled [`NumericSpec`].
#[derive(Debug, Clone, PartialEq)]
struct Numeric {
    /// `scale`, `divide` and `offset` in one decimal step.
    scale: Scale,
    decode: Option<(DataType, Layout)>,
}

/// The `states = "default"` table: the word for "on / open / wet / active / detected" is
/// `true`. Name fields so that true is the alarm-worthy reading (`door_open`, `leak`).
pub const DEFAULT_STATES: &[(&str, bool)] = &[
    ("on", true),
    ("off", false),
    ("true", true),
    ("false", false),
    ("yes", true),
    ("no", false),
    ("open", true),
    ("closed", false),
    ("wet", true),
    ("dry", false),
    ("active", true),
    ("inactive", false),
    ("detected", true),
    ("clear", false),
];

/// A compiled states table: lower-cased word -> value.
#[derive(Debug, PartialEq)]
struct States {
    words: Vec<(Box<str>, FieldValue)>,
}

/// The conversion of one field's JSON value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueConv {
    ty: Option<FieldType>,
    states: Option<Arc<States>>,
    numeric: Option<Arc<Numeric>>,
}

impl ValueConv {
    /// `ty` and `states` of one field; the error says what does not fit together.
    pub fn compile(
        ty: Option<FieldType>,
        states: Option<&StatesSpec>,
    ) -> Result<ValueConv, String> {
        let Some(spec) = states else {
            return Ok(ValueConv {
                ty,
                states: None,
                numeric: None,
            });
        };
        let mut words: Vec<(Box<str>, FieldValue)> = Vec::new();
        let mut add = |word: &str, v: FieldValue| -> Result<(), String> {
            let key = word.trim().to_lowercase();
            if key.is_empty() {
                return Err("states: a state word must not be empty".into());
            }
            match words.iter().find(|(k, _)| **k == *key) {
                Some((_, old)) if *old != v => Err(format!(
                    "states: {word:?} is listed twice with different values (words are matched \
                     without regard to case)"
                )),
                Some(_) => Ok(()),
                None => {
                    words.push((key.into_boxed_str(), v));
                    Ok(())
                }
            }
        };
        match spec {
            StatesSpec::Default => {
                for (w, b) in DEFAULT_STATES {
                    add(w, FieldValue::Bool(*b))?;
                }
            }
            StatesSpec::Table(t) => {
                if t.is_empty() {
                    return Err("states: the table is empty; list the words, e.g. \
                                { ON = true, OFF = false }, or use states = \"default\""
                        .into());
                }
                for (w, v) in t {
                    add(
                        w,
                        match v {
                            StateValue::Bool(b) => FieldValue::Bool(*b),
                            StateValue::Int(i) => FieldValue::Int(*i),
                        },
                    )?;
                }
            }
        }
        let bools = words.iter().all(|(_, v)| matches!(v, FieldValue::Bool(_)));
        let ints = words.iter().all(|(_, v)| matches!(v, FieldValue::Int(_)));
        let ty = match (bools, ints, ty) {
            (true, _, None | Some(FieldType::Bool)) => FieldType::Bool,
            (_, true, None | Some(FieldType::Integer)) => FieldType::Integer,
            (false, false, _) => {
                return Err(
                    "states: all words must map to booleans or all to integers (a \
                            field has one type)"
                        .into(),
                )
            }
            (_, _, Some(t)) => {
                return Err(format!(
                    "states: the words map to {} but the field has type = \"{t}\"; remove \
                     `type` or make them agree",
                    if bools { "booleans" } else { "integers" }
                ))
            }
        };
        Ok(ValueConv {
            ty: Some(ty),
            states: Some(Arc::new(States { words })),
            numeric: None,
        })
    }

    /// Adds `scale`/`divide`/`offset`/`decode` to a conversion without states.
    pub fn with_numeric(mut self, spec: &NumericSpec) -> Result<ValueConv, String> {
        if spec.is_empty() {
            return Ok(self);
        }
        if self.states.is_some() {
            return Err(
                "states and scale/offset/decode do not go together (a state is not a \
                        number)"
                    .into(),
            );
        }
        if matches!(self.ty, Some(FieldType::Bool | FieldType::String)) {
            return Err(format!(
                "scale/offset/decode give numbers; type = \"{}\" does not take them",
                self.ty.map(|t| t.as_str()).unwrap_or_default()
            ));
        }
        if spec.word_order.is_some() && spec.decode.is_none() {
            return Err(
                "word_order applies with decode = \"int32\", \"uint32\" or \"float32\"".into(),
            );
        }
        let factor = spec.scale.unwrap_or(1.0);
        let offset = spec.offset.unwrap_or(0.0);
        if !offset.is_finite() {
            return Err("offset must be a finite number".into());
        }
        // One decimal scale, the collectors' shared one: 14 × 0.1 − 40 is exactly −38.6.
        let mut scale = Scale::with_offset(factor, offset)
            .ok_or_else(|| format!("scale = {factor}: must be a finite number other than 0"))?;
        if let Some(d) = spec.divide {
            if !d.is_finite() || d == 0.0 {
                return Err(format!(
                    "divide = {d}: must be a finite number other than 0"
                ));
            }
            scale = scale.divided_by(d);
        }
        self.numeric = Some(Arc::new(Numeric {
            scale,
            decode: spec.decode.map(|d| {
                (
                    d,
                    Layout {
                        word_order: spec.word_order.unwrap_or_default(),
                        byte_order: Order::Big,
                    },
                )
            }),
        }));
        Ok(self)
    }

    /// A plain conversion to `ty`.
    pub fn typed(ty: Option<FieldType>) -> ValueConv {
        ValueConv {
            ty,
            states: None,
            numeric: None,
        }
    }

    pub fn field_type(&self) -> Option<FieldType> {
        self.ty
    }

    /// The value of a state word, if this conversion has states and knows it.
    pub fn state(&self, word: &str) -> Option<&FieldValue> {
        let states = self.states.as_ref()?;
        let key = word.trim().to_lowercase();
        states
            .words
            .iter()
            .find(|(k, _)| **k == *key)
            .map(|(_, v)| v)
    }

    /// The known words, for messages.
    pub fn state_words(&self) -> Option<String> {
        let states = self.states.as_ref()?;
        Some(
            states
                .words
                .iter()
                .map(|(k, _)| &**k)
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// `v` as this field's value: `Ok(None)` for `null`, `Err` when it does not fit.
    pub fn apply(
        &self,
        v: &Value,
        parse_numeric_strings: bool,
    ) -> Result<Option<FieldValue>, DecodeReason> {
        if let (Some(_), Value::String(s)) = (&self.states, v) {
            return match self.state(s) {
                Some(value) => Ok(Some(value.clone())),
                None => Err(DecodeReason::UnknownState),
            };
        }
        // A table that lists `true`/`false` maps JSON booleans too (an inverted contact:
        // `states = { "true" = false, "false" = true }`).
        if let (Some(_), Value::Bool(b)) = (&self.states, v) {
            if let Some(value) = self.state(if *b { "true" } else { "false" }) {
                return Ok(Some(value.clone()));
            }
        }
        if let Some(n) = &self.numeric {
            return self.apply_numeric(n, v, parse_numeric_strings);
        }
        json_field(v, self.ty, parse_numeric_strings)
    }

    fn apply_numeric(
        &self,
        n: &Numeric,
        v: &Value,
        parse_numeric_strings: bool,
    ) -> Result<Option<FieldValue>, DecodeReason> {
        let x = match (v, n.decode) {
            (Value::Null, _) => return Ok(None),
            (_, Some((ty, layout))) => {
                let words: Vec<u16> = match v {
                    Value::Number(num) => {
                        let raw = num.as_u64().ok_or(DecodeReason::OutOfRange)?;
                        words_of(ty, raw, layout).ok_or(DecodeReason::OutOfRange)?
                    }
                    Value::Array(items) => items
                        .iter()
                        .map(|w| {
                            w.as_u64()
                                .and_then(|w| u16::try_from(w).ok())
                                .ok_or(DecodeReason::OutOfRange)
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(DecodeReason::TypeMismatch),
                };
                match registers::decode(ty, layout, &words, None) {
                    Some(Raw::Float(f)) if !f.is_finite() => return Err(DecodeReason::NonFinite),
                    Some(r) => r.as_f64(),
                    // Not as many words as the type takes.
                    None => return Err(DecodeReason::OutOfRange),
                }
            }
            (_, None) => match json_field(v, Some(FieldType::Float), parse_numeric_strings)? {
                Some(FieldValue::Float(f)) => f,
                _ => return Err(DecodeReason::TypeMismatch),
            },
        };
        let x = n.scale.apply(x);
        if !x.is_finite() {
            return Err(DecodeReason::NonFinite);
        }
        Ok(Some(match self.ty {
            Some(FieldType::Integer) => FieldValue::Int(float_to_i64(x)?),
            Some(FieldType::Unsigned) => FieldValue::UInt(float_to_u64(x)?),
            _ => FieldValue::Float(x),
        }))
    }

    /// A `number` payload's text as this field's value, where it is a state word.
    pub fn apply_text(&self, text: &str) -> Option<Result<FieldValue, DecodeReason>> {
        self.states.as_ref()?;
        Some(self.state(text).cloned().ok_or(DecodeReason::UnknownState))
    }
}

/// The registers of a whole number a gateway sent as one value (`65538` for the two words
/// `1, 2` of a 32-bit register pair), split as the unsigned type of the same width, in
/// `layout`'s order; `None` if it does not fit.
fn words_of(ty: DataType, raw: u64, layout: Layout) -> Option<Vec<u16>> {
    let unsigned = match ty.words() {
        1 => DataType::Uint16,
        2 => DataType::Uint32,
        _ => DataType::Uint64,
    };
    registers::encode(unsigned, layout, Raw::Int(i128::from(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::json;

    fn conv(ty: Option<FieldType>, src: &str) -> Result<ValueConv, String> {
        #[derive(Deserialize)]
        struct T {
            states: StatesSpec,
        }
        let t: T = toml::from_str(&format!("states = {src}")).map_err(|e| e.to_string())?;
        ValueConv::compile(ty, Some(&t.states))
    }

    #[test]
    fn default_states() {
        let c = conv(None, "\"default\"").unwrap();
        for (word, want) in [
            ("ON", true),
            ("off", false),
            (" Open ", true),
            ("closed", false),
            ("wet", true),
            ("DRY", false),
        ] {
            assert_eq!(
                c.apply(&json!(word), false),
                Ok(Some(FieldValue::Bool(want))),
                "{word}"
            );
        }
        assert_eq!(
            c.apply(&json!("AJAR"), false),
            Err(DecodeReason::UnknownState)
        );
        // JSON booleans still pass; numbers do not fit a bool.
        assert_eq!(
            c.apply(&json!(true), false),
            Ok(Some(FieldValue::Bool(true)))
        );
        assert_eq!(c.apply(&json!(1), false), Err(DecodeReason::TypeMismatch));
        assert_eq!(c.field_type(), Some(FieldType::Bool));
        assert_eq!(c.apply_text("ON\n"), Some(Ok(FieldValue::Bool(true))));
        assert_eq!(ValueConv::typed(None).apply_text("ON"), None);
    }

    #[test]
    fn integer_tables_and_errors() {
        let c = conv(None, "{ auto = 0, Cool = 1, heat = 2 }").unwrap();
        assert_eq!(c.apply(&json!("COOL"), false), Ok(Some(FieldValue::Int(1))));
        assert_eq!(c.apply(&json!(2), false), Ok(Some(FieldValue::Int(2))));
        assert_eq!(c.field_type(), Some(FieldType::Integer));
        for (ty, src, wants) in [
            (None, "{ on = true, off = 0 }", "all words"),
            (Some(FieldType::Float), "{ on = true }", "type = \"float\""),
            (None, "{ On = true, ON = false }", "listed twice"),
            (None, "{}", "empty"),
            (None, "\"defaults\"", "default"),
            (None, "{ on = \"yes\" }", "did not match"),
        ] {
            let e = conv(ty, src).unwrap_err();
            assert!(e.contains(wants), "{src}: {e}");
        }
    }

    fn numeric(ty: Option<FieldType>, src: &str) -> Result<ValueConv, String> {
        let spec: NumericSpec = toml::from_str(src).map_err(|e| e.to_string())?;
        ValueConv::typed(ty).with_numeric(&spec)
    }

    #[test]
    fn scale_offset_and_registers() {
        let c = numeric(None, "scale = 0.1").unwrap();
        // Exact decimal: 14 × 0.1 is 1.4 (as SNMP profiles write it).
        assert_eq!(c.apply(&json!(14), false), Ok(Some(FieldValue::Float(1.4))));
        let c = numeric(None, "divide = 60000").unwrap();
        assert_eq!(
            c.apply(&json!(600000), false),
            Ok(Some(FieldValue::Float(10.0)))
        );
        let c = numeric(None, "scale = 0.1\noffset = -40").unwrap();
        assert_eq!(
            c.apply(&json!(650), false),
            Ok(Some(FieldValue::Float(25.0)))
        );
        let c = numeric(None, "decode = \"int16\"\nscale = 0.1").unwrap();
        assert_eq!(
            c.apply(&json!(65535), false),
            Ok(Some(FieldValue::Float(-0.1)))
        );
        assert_eq!(c.apply(&json!(65536), false), Err(DecodeReason::OutOfRange));
        assert_eq!(c.apply(&json!("x"), false), Err(DecodeReason::TypeMismatch));
        let c = numeric(
            Some(FieldType::Integer),
            "decode = \"int32\"\nword_order = \"little\"",
        )
        .unwrap();
        assert_eq!(
            c.apply(&json!([0xFFFE, 0xFFFF]), false),
            Ok(Some(FieldValue::Int(-2)))
        );
        assert_eq!(c.apply(&json!([1]), false), Err(DecodeReason::OutOfRange));
        let c = numeric(None, "decode = \"float32\"").unwrap();
        assert_eq!(
            c.apply(&json!([0x4148, 0]), false),
            Ok(Some(FieldValue::Float(12.5)))
        );
        assert_eq!(c.apply(&json!(null), false), Ok(None));
        for (ty, src, wants) in [
            (None, "scale = 0", "scale"),
            (None, "divide = 0", "divide"),
            (Some(FieldType::Bool), "scale = 2", "type = \"bool\""),
            (None, "word_order = \"big\"", "word_order"),
        ] {
            let e = numeric(ty, src).unwrap_err();
            assert!(e.contains(wants), "{src}: {e}");
        }
        let e = conv(None, "\"default\"")
            .unwrap()
            .with_numeric(&NumericSpec {
                scale: Some(2.0),
                ..NumericSpec::default()
            })
            .unwrap_err();
        assert!(e.contains("states"), "{e}");
        // Booleans through a table with true/false: an inverted contact.
        let c = conv(None, "{ \"true\" = false, \"false\" = true }").unwrap();
        assert_eq!(
            c.apply(&json!(false), false),
            Ok(Some(FieldValue::Bool(true)))
        );
    }

    proptest! {
        /// Scaled values are finite, and register values never panic.
        #[test]
        fn numeric_never_panics(v in any::<i64>(), words in proptest::collection::vec(any::<u16>(), 0..3), s in -1e6f64..1e6) {
            if let Ok(c) = numeric(None, &format!("scale = {s:e}\ndecode = \"float32\"")) {
                if let Ok(Some(FieldValue::Float(f))) = c.apply(&json!(words), false) {
                    prop_assert!(f.is_finite());
                }
                let _ = c.apply(&json!(v), false);
            }
        }

        /// A state field only ever writes a value of its table (or a JSON value of its type).
        #[test]
        fn only_table_values_are_written(word in ".{0,10}", n in any::<i64>()) {
            let c = conv(None, "{ a = 1, b = 2 }").unwrap();
            match c.apply(&json!(word), true) {
                Ok(Some(FieldValue::Int(v))) => prop_assert!(v == 1 || v == 2),
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err(r) => prop_assert_eq!(r, DecodeReason::UnknownState),
            }
            prop_assert_eq!(c.apply(&json!(n), false), Ok(Some(FieldValue::Int(n))));
        }
    }
}
