//! The Prometheus remote-write 1.0 messages (`prometheus.WriteRequest` and what it holds),
//! declared with `prost`'s derive: field numbers and types as in the spec's `.proto`, so no
//! `build.rs` and no `protoc` are needed. Fields that 1.0 reserves (2 and 3 of
//! `WriteRequest`: Cortex's source, Prometheus' experimental metadata) and the exemplars and
//! histograms that later versions add are left out; a receiver ignores fields it is not sent.

/// `message WriteRequest { repeated TimeSeries timeseries = 1; reserved 2; reserved 3; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `message TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }`
///
/// Labels sorted by name (byte order), names unique, `__name__` among them; samples in
/// timestamp order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `message Label { string name = 1; string value = 2; }`
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `message Sample { double value = 1; int64 timestamp = 2; }`, timestamp in milliseconds
/// since the Unix epoch.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// The wire bytes of a tiny request, worked out by hand from the protobuf encoding rules,
    /// so a wrong tag or type in the derive is caught without a reference implementation.
    #[test]
    fn wire_format_matches_the_spec_field_numbers() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("a", "b")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
            }],
        };
        let bytes = req.encode_to_vec();
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            0x0a, 21, // WriteRequest.timeseries (1), length-delimited, 21 bytes
            0x0a, 6, // TimeSeries.labels (1), 6 bytes
            0x0a, 1, b'a', // Label.name (1) = "a"
            0x12, 1, b'b', // Label.value (2) = "b"
            0x12, 11, // TimeSeries.samples (2), 11 bytes
            0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // Sample.value (1), fixed64 1.0
            0x10, 5, // Sample.timestamp (2), varint 5
        ];
        assert_eq!(bytes, expected);
        assert_eq!(WriteRequest::decode(bytes.as_slice()).unwrap(), req);
    }
}
