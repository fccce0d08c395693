//! The declared type of an MQTT field (`type = "integer"`), shared by the subscription
//! schema, the value conversions and point lists.

use std::fmt;

use serde::Deserialize;

/// Declared type of a field (like Telegraf json_v2's `type`). InfluxDB fixes a field's type at
/// its first write and rejects later points of another type, so a value that does not fit is
/// dropped from the point (and counted) instead of being written as something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// 64-bit float; JSON integers become floats too.
    Float,
    /// Signed 64-bit integer; `3.0` fits, `3.7` does not.
    Integer,
    /// Unsigned 64-bit integer (written as a signed integer to InfluxDB 1.x); `-1` does not fit.
    Unsigned,
    /// JSON `true`/`false` only.
    Bool,
    /// Strings as they are; numbers and booleans by their JSON text.
    String,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Unsigned => "unsigned",
            FieldType::Bool => "bool",
            FieldType::String => "string",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
