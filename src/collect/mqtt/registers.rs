//! Raw Modbus registers as values: a gateway that forwards holding/input registers as JSON
//! numbers (`65535`) or arrays of 16-bit words (`[16709, 0]`) is read like a Modbus master
//! reads them.
//!
//! This is the MQTT side of the register decoding the Modbus collector needs too; the API is
//! kept free of MQTT and JSON types ([`RegisterType::decode`] on `&[u16]`) so the two can be
//! merged into one module when that collector lands.
//!
//! | `decode` | words | value |
//! |---|---|---|
//! | `int16` | 1 | two's complement: `65535` → -1 |
//! | `uint16` | 1 | 0 ..= 65535 |
//! | `int32` | 2 | two's complement of the 32 bits |
//! | `uint32` | 2 | 0 ..= 4294967295 |
//! | `float32` | 2 | IEEE 754 single precision (NaN and infinities are refused) |
//!
//! `word_order = "big"` (default, Modbus' usual "high word first", ABCD) or `"little"`
//! (low word first, CDAB). Bytes inside a word are always big-endian as Modbus sends them.

use serde::Deserialize;

/// How registers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterType {
    Int16,
    Uint16,
    Int32,
    Uint32,
    Float32,
}

/// Order of the 16-bit words of a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// High word first (ABCD).
    #[default]
    Big,
    /// Low word first (CDAB).
    Little,
}

/// Why registers could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// Wrong number of words for the type.
    WordCount { want: usize, got: usize },
    /// A float32 that is NaN or infinite.
    NonFinite,
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::WordCount { want, got } => {
                write!(f, "needs {want} register(s), got {got}")
            }
            RegisterError::NonFinite => f.write_str("float32 is NaN or infinite"),
        }
    }
}

/// A decoded register value: integers stay exact, floats are the f32 widened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegisterValue {
    Int(i64),
    Float(f64),
}

impl RegisterValue {
    pub fn as_f64(self) -> f64 {
        match self {
            RegisterValue::Int(i) => i as f64,
            RegisterValue::Float(f) => f,
        }
    }
}

impl RegisterType {
    /// Words the type takes.
    pub fn words(self) -> usize {
        match self {
            RegisterType::Int16 | RegisterType::Uint16 => 1,
            _ => 2,
        }
    }

    /// Reads `words` (each a 16-bit register as sent) as this type.
    pub fn decode(self, words: &[u16], order: WordOrder) -> Result<RegisterValue, RegisterError> {
        if words.len() != self.words() {
            return Err(RegisterError::WordCount {
                want: self.words(),
                got: words.len(),
            });
        }
        let bits32 = || {
            let (hi, lo) = match order {
                WordOrder::Big => (words[0], words[1]),
                WordOrder::Little => (words[1], words[0]),
            };
            (u32::from(hi) << 16) | u32::from(lo)
        };
        Ok(match self {
            RegisterType::Int16 => RegisterValue::Int(i64::from(words[0] as i16)),
            RegisterType::Uint16 => RegisterValue::Int(i64::from(words[0])),
            RegisterType::Int32 => RegisterValue::Int(i64::from(bits32() as i32)),
            RegisterType::Uint32 => RegisterValue::Int(i64::from(bits32())),
            RegisterType::Float32 => {
                let f = f32::from_bits(bits32());
                if !f.is_finite() {
                    return Err(RegisterError::NonFinite);
                }
                RegisterValue::Float(f64::from(f))
            }
        })
    }

    /// Splits a whole number a gateway sent for a 32-bit type as one value (`0..=u32::MAX`)
    /// into its two words in `order`; 16-bit types take `0..=65535`.
    pub fn words_of(self, raw: u64, order: WordOrder) -> Option<Vec<u16>> {
        if self.words() == 1 {
            return u16::try_from(raw).ok().map(|w| vec![w]);
        }
        let v = u32::try_from(raw).ok()?;
        let (hi, lo) = ((v >> 16) as u16, v as u16);
        Some(match order {
            WordOrder::Big => vec![hi, lo],
            WordOrder::Little => vec![lo, hi],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_values() {
        use RegisterType::*;
        use RegisterValue::*;
        let b = WordOrder::Big;
        assert_eq!(Int16.decode(&[65535], b), Ok(Int(-1)));
        assert_eq!(Int16.decode(&[32768], b), Ok(Int(-32768)));
        assert_eq!(Uint16.decode(&[65535], b), Ok(Int(65535)));
        assert_eq!(Int32.decode(&[0xFFFF, 0xFFFE], b), Ok(Int(-2)));
        assert_eq!(Uint32.decode(&[0x0001, 0x0002], b), Ok(Int(65538)));
        assert_eq!(
            Uint32.decode(&[0x0002, 0x0001], WordOrder::Little),
            Ok(Int(65538))
        );
        // 12.5 = 0x41480000.
        assert_eq!(Float32.decode(&[0x4148, 0x0000], b), Ok(Float(12.5)));
        assert_eq!(
            Float32.decode(&[0x0000, 0x4148], WordOrder::Little),
            Ok(Float(12.5))
        );
        assert_eq!(
            Float32.decode(&[0x7FC0, 0], b),
            Err(RegisterError::NonFinite)
        );
        assert_eq!(
            Int32.decode(&[1], b),
            Err(RegisterError::WordCount { want: 2, got: 1 })
        );
        assert_eq!(Uint32.words_of(65538, b), Some(vec![1, 2]));
        assert_eq!(Uint32.words_of(65538, WordOrder::Little), Some(vec![2, 1]));
        assert_eq!(Int16.words_of(65536, b), None);
    }

    proptest! {
        /// Every 32-bit pattern reads back as the value it encodes, in both word orders.
        #[test]
        fn words_round_trip(v in any::<u32>(), little in any::<bool>()) {
            let order = if little { WordOrder::Little } else { WordOrder::Big };
            let words = RegisterType::Uint32.words_of(u64::from(v), order).unwrap();
            prop_assert_eq!(RegisterType::Uint32.decode(&words, order), Ok(RegisterValue::Int(i64::from(v))));
            prop_assert_eq!(RegisterType::Int32.decode(&words, order), Ok(RegisterValue::Int(i64::from(v as i32))));
            match RegisterType::Float32.decode(&words, order) {
                Ok(RegisterValue::Float(f)) => prop_assert_eq!(f as f32, f32::from_bits(v)),
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err(e) => prop_assert!(!f32::from_bits(v).is_finite(), "{e}"),
            }
        }

        #[test]
        fn any_words_never_panic(words in proptest::collection::vec(any::<u16>(), 0..4)) {
            for ty in [RegisterType::Int16, RegisterType::Uint16, RegisterType::Int32, RegisterType::Uint32, RegisterType::Float32] {
                let _ = ty.decode(&words, WordOrder::Big);
            }
        }
    }
}
