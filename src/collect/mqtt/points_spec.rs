//! The schema of `[mqtt.subscription.points]` (point lists mapped by point name);
//! `points` compiles and applies it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::field_type::FieldType;
use super::value_spec::{NumericSpec, StatesSpec};

/// What happens to points whose name is not in `known`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownPoints {
    /// Counted (`sitewatch_mqtt_unknown_points_total`) and dropped.
    #[default]
    Drop,
    /// Stored under the point's own name, sanitised to snake_case (`CRAH-1 supply air` →
    /// `crah_1_supply_air`).
    Keep,
}

/// `[mqtt.subscription.points]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsConfig {
    /// Path of the array or object that holds the points; `""` is the payload itself.
    pub path: String,
    /// Path, inside a point, of its name. Default: `name` for array elements, the entry key
    /// for the entries of an object.
    #[serde(default)]
    pub name: Option<String>,
    /// Path, inside a point, of its value. Default: `value`, or the point itself where it is
    /// a plain number, boolean or string.
    #[serde(default)]
    pub value: Option<String>,
    /// Tag name -> path inside a point (`unit = "unit"`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Path, inside a point, of its timestamp; without it (or where a point has none) the
    /// subscription's `timestamp`, read from the payload, else receive time.
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub unknown: UnknownPoints,
    /// Write the point's (mapped or sanitised) name into this tag instead of using it as the
    /// field name; the value is then the field `field`. One series per point.
    #[serde(default)]
    pub name_tag: Option<String>,
    /// With `name_tag`: the field name of every point's value (default `value`).
    #[serde(default)]
    pub field: Option<String>,
    /// Type of the points' values (see field types); a `known` entry can set its own.
    #[serde(default, rename = "type")]
    pub field_type: Option<FieldType>,
    /// States (`ON`/`OFF`) of the points' values; a `known` entry can set its own.
    #[serde(default)]
    pub states: Option<StatesSpec>,
    /// Point name as the device sends it -> field name (or tag value with `name_tag`).
    #[serde(default)]
    pub known: BTreeMap<String, KnownPoint>,
}

/// One `known` entry: `"name" = "field"` or `"name" = { field = "...", type = "...", ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownPoint {
    pub field: String,
    pub field_type: Option<FieldType>,
    pub states: Option<StatesSpec>,
    /// Tags of this point's sample, e.g. `{ device = "crah-1" }` when one gateway reports
    /// several units.
    pub tags: BTreeMap<String, String>,
    /// `scale`, `divide`, `offset`, `decode`, `word_order` of this point's value.
    pub numeric: NumericSpec,
}

impl<'de> Deserialize<'de> for KnownPoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KnownPoint, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            field: String,
            #[serde(default, rename = "type")]
            field_type: Option<FieldType>,
            #[serde(default)]
            states: Option<StatesSpec>,
            #[serde(default)]
            tags: BTreeMap<String, String>,
            #[serde(default)]
            scale: Option<f64>,
            #[serde(default)]
            divide: Option<f64>,
            #[serde(default)]
            offset: Option<f64>,
            #[serde(default)]
            decode: Option<crate::collect::registers::DataType>,
            #[serde(default)]
            word_order: Option<crate::collect::registers::Order>,
        }
        struct KnownVisitor;
        impl<'de> Visitor<'de> for KnownVisitor {
            type Value = KnownPoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a field name such as \"supply_air_c\", or a table such as \
                     { field = \"supply_air_c\", type = \"float\" }",
                )
            }
            fn visit_str<E: de::Error>(self, field: &str) -> Result<KnownPoint, E> {
                Ok(KnownPoint {
                    field: field.to_string(),
                    field_type: None,
                    states: None,
                    tags: BTreeMap::new(),
                    numeric: NumericSpec::default(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KnownPoint, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(KnownPoint {
                    field: t.field,
                    field_type: t.field_type,
                    states: t.states,
                    tags: t.tags,
                    numeric: NumericSpec {
                        scale: t.scale,
                        divide: t.divide,
                        offset: t.offset,
                        decode: t.decode,
                        word_order: t.word_order,
                    },
                })
            }
        }
        deserializer.deserialize_any(KnownVisitor)
    }
}
