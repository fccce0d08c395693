//! The schema of a field's value conversions (`scale`, `offset`, `decode`, `states`), as
//! written in subscriptions and point lists; `values` compiles and applies them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::collect::registers::{DataType, Order};

/// `scale`, `divide`, `offset`, `decode` and `word_order` of a field: numbers as a gateway
/// sends them (raw registers, watt-minutes) to the unit of docs/naming.md.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericSpec {
    /// Multiplies the value, as an exact decimal (14 × 0.1 is 1.4, not 1.4000000000000001):
    /// the same code as the SNMP profiles' `scale`.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Divides after `scale` (`divide = 60000`: watt-minutes to kWh).
    #[serde(default)]
    pub divide: Option<f64>,
    /// Added after scaling (`offset = -40`).
    #[serde(default)]
    pub offset: Option<f64>,
    /// Read the value as Modbus registers, as the Modbus collector does
    /// (`crate::collect::registers`): int16, uint16, int32, uint32, float32, int64, uint64.
    #[serde(default)]
    pub decode: Option<DataType>,
    /// Which register holds the most significant word (`big`, the default, or `little`);
    /// bytes inside a register are as Modbus sends them (high byte first).
    #[serde(default)]
    pub word_order: Option<Order>,
}

impl NumericSpec {
    pub fn is_empty(&self) -> bool {
        *self == NumericSpec::default()
    }
}

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
