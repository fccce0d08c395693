//! A JSON value as a typed field value (`type = "integer"`, quoted numbers with
//! `parse_numeric_strings`), shared by subscriptions, point lists and value conversions.

use std::sync::Arc;

use serde_json::Value;

use super::field_type::FieldType;
use super::reason::DecodeReason;
use crate::model::FieldValue;

/// A trimmed numeric string as a value of the numeric type `ty` (`float`, `integer`,
/// `unsigned`). No locale guessing: `"12,5"` is not a number.
pub(crate) fn parse_numeric_str(t: &str, ty: FieldType) -> Result<FieldValue, DecodeReason> {
    match ty {
        FieldType::Integer => {
            if let Ok(i) = t.parse::<i64>() {
                return Ok(FieldValue::Int(i));
            }
            if is_integer_literal(t) {
                return Err(DecodeReason::OutOfRange);
            }
            float_to_i64(parse_f64(t)?).map(FieldValue::Int)
        }
        FieldType::Unsigned => {
            if let Ok(u) = t.parse::<u64>() {
                return Ok(FieldValue::UInt(u));
            }
            if is_integer_literal(t) {
                return Err(DecodeReason::OutOfRange);
            }
            float_to_u64(parse_f64(t)?).map(FieldValue::UInt)
        }
        _ => {
            let f = parse_f64(t)?;
            if f.is_finite() {
                Ok(FieldValue::Float(f))
            } else {
                Err(DecodeReason::NonFinite)
            }
        }
    }
}

/// Rust's float syntax (also `inf`, `NaN`, `1e3`, `.5`); callers refuse non-finite values.
fn parse_f64(t: &str) -> Result<f64, DecodeReason> {
    t.parse::<f64>().map_err(|_| DecodeReason::NotANumber)
}

/// `[+-]digits`: a whole number too large for its type, not a float to round.
fn is_integer_literal(t: &str) -> bool {
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// 2^63 and 2^64, exactly representable.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

pub(crate) fn float_to_i64(f: f64) -> Result<i64, DecodeReason> {
    if !f.is_finite() {
        Err(DecodeReason::NonFinite)
    } else if f.fract() != 0.0 {
        Err(DecodeReason::NotAnInteger)
    } else if !(-TWO_POW_63..TWO_POW_63).contains(&f) {
        Err(DecodeReason::OutOfRange)
    } else {
        Ok(f as i64)
    }
}

pub(crate) fn float_to_u64(f: f64) -> Result<u64, DecodeReason> {
    if !f.is_finite() {
        Err(DecodeReason::NonFinite)
    } else if f.fract() != 0.0 {
        Err(DecodeReason::NotAnInteger)
    } else if !(0.0..TWO_POW_64).contains(&f) {
        // -0.0 is in the range: it is 0.
        Err(DecodeReason::OutOfRange)
    } else {
        Ok(f as u64)
    }
}

/// A JSON value as a field of type `ty` (`None`: untyped). `Ok(None)`: `null`, left out like a
/// missing path. `Err`: the value does not fit and is dropped from the point.
pub(crate) fn json_field(
    v: &Value,
    ty: Option<FieldType>,
    parse_numeric_strings: bool,
) -> Result<Option<FieldValue>, DecodeReason> {
    use FieldType as T;
    let value = match (v, ty) {
        (Value::Null, _) => return Ok(None),
        (Value::Number(n), None | Some(T::Float)) => match n.as_f64() {
            Some(f) if f.is_finite() => FieldValue::Float(f),
            _ => return Err(DecodeReason::NonFinite),
        },
        (Value::Number(n), Some(T::Integer)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => FieldValue::Int(i),
            (None, Some(_)) => return Err(DecodeReason::OutOfRange),
            (None, None) => FieldValue::Int(float_to_i64(n.as_f64().unwrap_or(f64::NAN))?),
        },
        (Value::Number(n), Some(T::Unsigned)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => FieldValue::UInt(u),
            (None, Some(_)) => return Err(DecodeReason::OutOfRange),
            (None, None) => FieldValue::UInt(float_to_u64(n.as_f64().unwrap_or(f64::NAN))?),
        },
        (Value::Number(n), Some(T::String)) => FieldValue::Str(Arc::from(n.to_string())),
        (Value::Bool(b), None | Some(T::Bool)) => FieldValue::Bool(*b),
        (Value::Bool(b), Some(T::String)) => {
            FieldValue::Str(Arc::from(if *b { "true" } else { "false" }))
        }
        (Value::String(s), Some(T::String)) => FieldValue::Str(Arc::from(s.as_str())),
        (Value::String(s), None) if parse_numeric_strings => parse_numeric_str(s.trim(), T::Float)?,
        (Value::String(s), Some(numeric @ (T::Float | T::Integer | T::Unsigned)))
            if parse_numeric_strings =>
        {
            parse_numeric_str(s.trim(), numeric)?
        }
        _ => return Err(DecodeReason::TypeMismatch),
    };
    Ok(Some(value))
}
