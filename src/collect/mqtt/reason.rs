//! Why an MQTT payload or field value was dropped: the `reason` label of the collector's
//! error counters, shared by every decoder.

/// Why a payload or a field value was dropped; the `reason` label of
/// `sitewatch_mqtt_decode_errors_total` and `sitewatch_mqtt_field_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeReason {
    Oversized,
    InvalidUtf8,
    NotANumber,
    NonFinite,
    MalformedJson,
    MalformedLineProtocol,
    NoFields,
    BadTimestamp,
    TimestampOutOfRange,
    /// The value's kind does not fit the field's type (a string or `true` for a float, a
    /// number for a bool, an object for anything).
    TypeMismatch,
    /// A number with a fractional part for `integer` or `unsigned`.
    NotAnInteger,
    /// A whole number outside the type's range (`-1` for `unsigned`).
    OutOfRange,
    /// Every field value of the payload was dropped for its type.
    NoValidFields,
    /// Bytes that are not a Sparkplug B protobuf payload.
    MalformedProtobuf,
    /// A Sparkplug BIRTH beyond the edge nodes / devices one subscription keeps.
    TooManyDevices,
    /// A string that is not one of the field's `states`.
    UnknownState,
    /// Two points of one payload map to the same field of the same sample; the first is kept.
    DuplicatePoint,
}

impl DecodeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeReason::Oversized => "oversized",
            DecodeReason::InvalidUtf8 => "invalid_utf8",
            DecodeReason::NotANumber => "not_a_number",
            DecodeReason::NonFinite => "non_finite",
            DecodeReason::MalformedJson => "malformed_json",
            DecodeReason::MalformedLineProtocol => "malformed_line_protocol",
            DecodeReason::NoFields => "no_fields",
            DecodeReason::BadTimestamp => "bad_timestamp",
            DecodeReason::TimestampOutOfRange => "timestamp_out_of_range",
            DecodeReason::TypeMismatch => "type_mismatch",
            DecodeReason::NotAnInteger => "not_an_integer",
            DecodeReason::OutOfRange => "out_of_range",
            DecodeReason::NoValidFields => "no_valid_fields",
            DecodeReason::MalformedProtobuf => "malformed_protobuf",
            DecodeReason::TooManyDevices => "too_many_devices",
            DecodeReason::UnknownState => "unknown_state",
            DecodeReason::DuplicatePoint => "duplicate_point",
        }
    }
}

impl std::fmt::Display for DecodeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
