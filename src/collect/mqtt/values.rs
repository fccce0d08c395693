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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::config::FieldType;
use super::decode::{json_field, DecodeReason};
use crate::model::FieldValue;

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

/// What a state word stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StateValue {
    Bool(bool),
    Int(i64),
}

/// `states = "default"` or `states = { word = value, ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatesSpec {
    Default,
    Table(BTreeMap<String, StateValue>),
}

impl<'de> Deserialize<'de> for StatesSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StatesSpec, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatesSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"default\" (ON/OFF, open/closed, wet/dry, ... as true/false) or a table \
                     of words, e.g. { ON = true, OFF = false } or { auto = 0, cool = 1 }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StatesSpec, E> {
                if s == "default" {
                    Ok(StatesSpec::Default)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StatesSpec, A::Error> {
                let t = BTreeMap::<String, StateValue>::deserialize(
                    de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(StatesSpec::Table(t))
            }
        }
        deserializer.deserialize_any(V)
    }
}

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
}

impl ValueConv {
    /// `ty` and `states` of one field; the error says what does not fit together.
    pub fn compile(
        ty: Option<FieldType>,
        states: Option<&StatesSpec>,
    ) -> Result<ValueConv, String> {
        let Some(spec) = states else {
            return Ok(ValueConv { ty, states: None });
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
        })
    }

    /// A plain conversion to `ty`.
    pub fn typed(ty: Option<FieldType>) -> ValueConv {
        ValueConv { ty, states: None }
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
        json_field(v, self.ty, parse_numeric_strings)
    }

    /// A `number` payload's text as this field's value, where it is a state word.
    pub fn apply_text(&self, text: &str) -> Option<Result<FieldValue, DecodeReason>> {
        self.states.as_ref()?;
        Some(self.state(text).cloned().ok_or(DecodeReason::UnknownState))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
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

    proptest! {
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
