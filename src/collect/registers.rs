//! Register words → typed value, shared by the Modbus collector and MQTT fields that carry raw
//! registers from a Modbus-to-MQTT gateway: data types, word and byte order (decimal scaling
//! is the collectors' shared [`crate::collect::scale::Scale`]).
//!
//! A Modbus register is a 16-bit word sent high byte first. Values wider than one register
//! span consecutive registers, and vendors disagree on the order: the map says it with
//! `word_order` (which register holds the most significant word) and `byte_order` (whether
//! the two bytes inside each register are swapped). For a 32-bit value with bytes `A B C D`
//! (A most significant):
//!
//! | word_order | byte_order | registers hold | name often used |
//! |---|---|---|---|
//! | big | big | `AB` `CD` | ABCD (Modbus standard, most devices) |
//! | little | big | `CD` `AB` | CDAB ("word swapped") |
//! | big | little | `BA` `DC` | BADC ("byte swapped") |
//! | little | little | `DC` `BA` | DCBA |

use serde::Deserialize;

/// What a point's registers (or bit) hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Int16,
    Uint16,
    Int32,
    Uint32,
    Float32,
    Int64,
    Uint64,
    /// A coil, a discrete input, or one bit (`bit = 0..15`) of a register.
    Bool,
}

impl DataType {
    /// Registers the value occupies (a bool in a register uses that one register).
    pub fn words(self) -> u16 {
        match self {
            DataType::Int16 | DataType::Uint16 | DataType::Bool => 1,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 2,
            DataType::Int64 | DataType::Uint64 => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Int16 => "int16",
            DataType::Uint16 => "uint16",
            DataType::Int32 => "int32",
            DataType::Uint32 => "uint32",
            DataType::Float32 => "float32",
            DataType::Int64 => "int64",
            DataType::Uint64 => "uint64",
            DataType::Bool => "bool",
        }
    }

    pub const ALL: [DataType; 8] = [
        DataType::Int16,
        DataType::Uint16,
        DataType::Int32,
        DataType::Uint32,
        DataType::Float32,
        DataType::Int64,
        DataType::Uint64,
        DataType::Bool,
    ];
}

/// `big` (most significant first, the Modbus default) or `little`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Big,
    Little,
}

/// How a point's words are laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Layout {
    pub word_order: Order,
    pub byte_order: Order,
}

impl Layout {
    pub const ALL: [Layout; 4] = [
        Layout {
            word_order: Order::Big,
            byte_order: Order::Big,
        },
        Layout {
            word_order: Order::Little,
            byte_order: Order::Big,
        },
        Layout {
            word_order: Order::Big,
            byte_order: Order::Little,
        },
        Layout {
            word_order: Order::Little,
            byte_order: Order::Little,
        },
    ];
}

/// A decoded value before scaling: integers are exact (an `i128` holds every int64 and
/// uint64), floats as read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Raw {
    Int(i128),
    Float(f64),
    Bool(bool),
}

/// The value's bytes, most significant first, from its registers in wire order.
fn bytes_msb_first(words: &[u16], layout: Layout) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 2);
    let ordered: Box<dyn Iterator<Item = &u16>> = match layout.word_order {
        Order::Big => Box::new(words.iter()),
        Order::Little => Box::new(words.iter().rev()),
    };
    for w in ordered {
        let [hi, lo] = w.to_be_bytes();
        match layout.byte_order {
            Order::Big => out.extend_from_slice(&[hi, lo]),
            Order::Little => out.extend_from_slice(&[lo, hi]),
        }
    }
    out
}

/// The registers (wire order) that hold `bytes` (most significant first).
fn words_from_bytes(bytes: &[u8], layout: Layout) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| match layout.byte_order {
            Order::Big => u16::from_be_bytes([c[0], c[1]]),
            Order::Little => u16::from_be_bytes([c[1], c[0]]),
        })
        .collect();
    if layout.word_order == Order::Little {
        words.reverse();
    }
    words
}

/// Decodes a register value. `words` must be exactly `ty.words()` long (else `None`); `bit`
/// selects one bit of a single register for `Bool` (bit 0 = least significant).
pub fn decode(ty: DataType, layout: Layout, words: &[u16], bit: Option<u8>) -> Option<Raw> {
    if words.len() != usize::from(ty.words()) {
        return None;
    }
    let b = bytes_msb_first(words, layout);
    Some(match ty {
        DataType::Bool => {
            let w = u16::from_be_bytes([b[0], b[1]]);
            match bit {
                Some(bit) if bit < 16 => Raw::Bool(w >> bit & 1 == 1),
                Some(_) => return None,
                None => Raw::Bool(w != 0),
            }
        }
        DataType::Int16 => Raw::Int(i16::from_be_bytes([b[0], b[1]]).into()),
        DataType::Uint16 => Raw::Int(u16::from_be_bytes([b[0], b[1]]).into()),
        DataType::Int32 => Raw::Int(i32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
        DataType::Uint32 => Raw::Int(u32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
        DataType::Float32 => Raw::Float(f32_to_f64(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::Int64 => Raw::Int(i64::from_be_bytes(b[..8].try_into().ok()?).into()),
        DataType::Uint64 => Raw::Int(u64::from_be_bytes(b[..8].try_into().ok()?).into()),
    })
}

/// The registers a device would hold for `raw` (the inverse of [`decode`]); for tests,
/// simulators and the integration harness. `None` when `raw` does not fit `ty`.
pub fn encode(ty: DataType, layout: Layout, raw: Raw) -> Option<Vec<u16>> {
    let bytes: Vec<u8> = match (ty, raw) {
        (DataType::Bool, Raw::Bool(v)) => u16::from(v).to_be_bytes().to_vec(),
        (DataType::Int16, Raw::Int(v)) => i16::try_from(v).ok()?.to_be_bytes().to_vec(),
        (DataType::Uint16, Raw::Int(v)) => u16::try_from(v).ok()?.to_be_bytes().to_vec(),
        (DataType::Int32, Raw::Int(v)) => i32::try_from(v).ok()?.to_be_bytes().to_vec(),
        (DataType::Uint32, Raw::Int(v)) => u32::try_from(v).ok()?.to_be_bytes().to_vec(),
        (DataType::Int64, Raw::Int(v)) => i64::try_from(v).ok()?.to_be_bytes().to_vec(),
        (DataType::Uint64, Raw::Int(v)) => u64::try_from(v).ok()?.to_be_bytes().to_vec(),
        (DataType::Float32, Raw::Float(v)) => (v as f32).to_be_bytes().to_vec(),
        _ => return None,
    };
    Some(words_from_bytes(&bytes, layout))
}

/// A float32 as the decimal it was written as: 230.1f32 becomes 230.1, not
/// 230.10000610351562 (the shortest digits that read back as the same f32).
pub fn f32_to_f64(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    v.to_string().parse().unwrap_or(f64::from(v))
}

impl Raw {
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Int(v) => v as f64,
            Raw::Float(v) => v,
            Raw::Bool(v) => f64::from(u8::from(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ABCD: Layout = Layout {
        word_order: Order::Big,
        byte_order: Order::Big,
    };
    const CDAB: Layout = Layout {
        word_order: Order::Little,
        byte_order: Order::Big,
    };
    const BADC: Layout = Layout {
        word_order: Order::Big,
        byte_order: Order::Little,
    };
    const DCBA: Layout = Layout {
        word_order: Order::Little,
        byte_order: Order::Little,
    };

    #[test]
    fn the_four_orders_of_a_32_bit_value() {
        // 0x11223344: A=0x11 B=0x22 C=0x33 D=0x44.
        let v = Raw::Int(0x1122_3344);
        assert_eq!(
            decode(DataType::Uint32, ABCD, &[0x1122, 0x3344], None),
            Some(v)
        );
        assert_eq!(
            decode(DataType::Uint32, CDAB, &[0x3344, 0x1122], None),
            Some(v)
        );
        assert_eq!(
            decode(DataType::Uint32, BADC, &[0x2211, 0x4433], None),
            Some(v)
        );
        assert_eq!(
            decode(DataType::Uint32, DCBA, &[0x4433, 0x2211], None),
            Some(v)
        );
    }

    #[test]
    fn float32_reads_as_the_decimal_written() {
        // 230.1 as IEEE 754 single: 0x4366199A.
        assert_eq!(
            decode(DataType::Float32, ABCD, &[0x4366, 0x199A], None),
            Some(Raw::Float(230.1))
        );
        assert_eq!(
            decode(DataType::Float32, CDAB, &[0x199A, 0x4366], None),
            Some(Raw::Float(230.1))
        );
        // One ulp below is another decimal, kept as the device wrote it.
        assert_eq!(
            decode(DataType::Float32, ABCD, &[0x4366, 0x1999], None),
            Some(Raw::Float(230.09999))
        );
    }

    #[test]
    fn signed_types_and_64_bit() {
        assert_eq!(
            decode(DataType::Int16, ABCD, &[0xFFCE], None),
            Some(Raw::Int(-50))
        );
        assert_eq!(
            decode(DataType::Uint16, ABCD, &[0xFFCE], None),
            Some(Raw::Int(65486))
        );
        assert_eq!(
            decode(DataType::Int32, ABCD, &[0xFFFF, 0xFFFE], None),
            Some(Raw::Int(-2))
        );
        assert_eq!(
            decode(DataType::Uint64, ABCD, &[0xFFFF; 4], None),
            Some(Raw::Int(u64::MAX.into()))
        );
        assert_eq!(
            decode(DataType::Int64, DCBA, &[0x0100, 0, 0, 0], None),
            Some(Raw::Int(1))
        );
    }

    #[test]
    fn bits_of_a_register_and_wrong_lengths() {
        assert_eq!(
            decode(DataType::Bool, ABCD, &[0b1000], Some(3)),
            Some(Raw::Bool(true))
        );
        assert_eq!(
            decode(DataType::Bool, ABCD, &[0b1000], Some(2)),
            Some(Raw::Bool(false))
        );
        assert_eq!(
            decode(DataType::Bool, ABCD, &[0x8000], Some(15)),
            Some(Raw::Bool(true))
        );
        assert_eq!(decode(DataType::Bool, ABCD, &[1], Some(16)), None);
        assert_eq!(decode(DataType::Uint32, ABCD, &[1], None), None);
        assert_eq!(decode(DataType::Int16, ABCD, &[], None), None);
    }

    fn layout() -> impl Strategy<Value = Layout> {
        prop::sample::select(Layout::ALL.to_vec())
    }

    fn data_type() -> impl Strategy<Value = DataType> {
        prop::sample::select(DataType::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn any_words_never_panic(
            ty in data_type(),
            layout in layout(),
            words in prop::collection::vec(any::<u16>(), 0..6),
            bit in prop::option::of(0u8..20),
        ) {
            let got = decode(ty, layout, &words, bit);
            if words.len() != usize::from(ty.words()) {
                prop_assert!(got.is_none());
            }
        }

        #[test]
        fn int16_round_trips(v in any::<i16>(), layout in layout()) {
            let w = encode(DataType::Int16, layout, Raw::Int(v.into())).unwrap();
            prop_assert_eq!(decode(DataType::Int16, layout, &w, None), Some(Raw::Int(v.into())));
        }

        #[test]
        fn uint16_round_trips(v in any::<u16>(), layout in layout()) {
            let w = encode(DataType::Uint16, layout, Raw::Int(v.into())).unwrap();
            prop_assert_eq!(decode(DataType::Uint16, layout, &w, None), Some(Raw::Int(v.into())));
        }

        #[test]
        fn int32_round_trips(v in any::<i32>(), layout in layout()) {
            let w = encode(DataType::Int32, layout, Raw::Int(v.into())).unwrap();
            prop_assert_eq!(decode(DataType::Int32, layout, &w, None), Some(Raw::Int(v.into())));
        }

        #[test]
        fn uint32_round_trips(v in any::<u32>(), layout in layout()) {
            let w = encode(DataType::Uint32, layout, Raw::Int(v.into())).unwrap();
            prop_assert_eq!(decode(DataType::Uint32, layout, &w, None), Some(Raw::Int(v.into())));
        }

        #[test]
        fn int64_round_trips(v in any::<i64>(), layout in layout()) {
            let w = encode(DataType::Int64, layout, Raw::Int(v.into())).unwrap();
            prop_assert_eq!(decode(DataType::Int64, layout, &w, None), Some(Raw::Int(v.into())));
        }

        #[test]
        fn uint64_round_trips(v in any::<u64>(), layout in layout()) {
            let w = encode(DataType::Uint64, layout, Raw::Int(v.into())).unwrap();
            prop_assert_eq!(decode(DataType::Uint64, layout, &w, None), Some(Raw::Int(v.into())));
        }

        #[test]
        fn float32_round_trips(v in any::<f32>().prop_filter("finite", |v| v.is_finite()), layout in layout()) {
            let w = encode(DataType::Float32, layout, Raw::Float(v.into())).unwrap();
            // Decoding gives the shortest decimal of the f32, which narrows back to it exactly.
            match decode(DataType::Float32, layout, &w, None) {
                Some(Raw::Float(got)) => prop_assert_eq!(got as f32, v),
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn bool_round_trips(v in any::<bool>(), layout in layout()) {
            let w = encode(DataType::Bool, layout, Raw::Bool(v)).unwrap();
            prop_assert_eq!(decode(DataType::Bool, layout, &w, None), Some(Raw::Bool(v)));
        }

        #[test]
        fn bit_selects_exactly_that_bit(word in any::<u16>(), bit in 0u8..16) {
            let got = decode(DataType::Bool, Layout::default(), &[word], Some(bit));
            prop_assert_eq!(got, Some(Raw::Bool(word & (1 << bit) != 0)));
        }

        #[test]
        fn out_of_range_values_do_not_encode(v in 65536i128..(1i128 << 70)) {
            prop_assert!(encode(DataType::Uint16, Layout::default(), Raw::Int(v)).is_none());
            prop_assert!(encode(DataType::Int16, Layout::default(), Raw::Int(-v)).is_none());
        }
    }
}
