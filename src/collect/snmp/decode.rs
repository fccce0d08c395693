//! How one SNMP value becomes a field or a tag: wire types read by value, decimal scaling,
//! sentinels ("no reading"), enums with a severity order, counters handed to the rate state.
//!
//! The rules of [docs/profiles.md](../../../docs/profiles.md) live here; the profile file
//! schema that configures them is in [`super::profile`].

use crate::collect::scale::Scale;
use std::collections::HashMap;
use std::sync::Arc;

use crate::model::FieldValue;

use super::value::{ObjectId, Received, SnmpValue};

/// How a profile asks for a value to be read.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Auto,
    Counter,
    Timeticks,
    String,
    Truthvalue,
    /// A number where non-zero means true (many vendors' "alarm present" flags).
    Bool,
}

/// A raw number as the device sent it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Raw {
    Int(i128),
    Float(f64),
}

impl Raw {
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Int(i) => i as f64,
            Raw::Float(f) => f,
        }
    }
}

/// "This value means no reading while that scalar says so" (0 minutes of runtime on a UPS
/// whose battery is normal).
#[derive(Clone, Debug)]
pub struct InvalidWhen {
    pub values: Vec<i128>,
    pub oid: ObjectId,
    pub equals: Vec<i128>,
}

/// How one OID's value becomes a field (or tag).
#[derive(Clone, Debug)]
pub struct ValueSpec {
    pub name: Arc<str>,
    pub state_name: Arc<str>,
    pub severity_name: Arc<str>,
    pub kind: Kind,
    pub scale: Option<Scale>,
    pub enum_map: Option<Arc<HashMap<i64, Arc<str>>>>,
    /// Enum code → 0 ok, 1 warning, 2 critical. Codes not listed get no severity.
    pub severity: Option<Arc<HashMap<i64, i64>>>,
    pub invalid: Vec<i128>,
    pub invalid_when: Option<InvalidWhen>,
    /// `type = "bool"`: the raw codes meaning true (default: any non-zero number). Vendors
    /// write flags as 1 = fine, 2 = problem.
    pub true_values: Option<Vec<i128>>,
}

impl ValueSpec {
    /// A plain spec (no scale, enum or sentinels), for tests and built-in fields.
    pub fn plain(name: &str, kind: Kind) -> ValueSpec {
        ValueSpec {
            name: name.into(),
            state_name: format!("{name}_state").into(),
            severity_name: format!("{name}_severity").into(),
            kind,
            scale: None,
            enum_map: None,
            severity: None,
            invalid: Vec::new(),
            invalid_when: None,
            true_values: None,
        }
    }
}

/// The scalars read in this poll, by OID: what `invalid_when` and `rows_from` look at.
pub type ScalarValues = HashMap<ObjectId, Received>;

/// The numeric reading of a value, whatever its wire type. Strings that hold a number
/// (some agents send "23.5") count as numbers.
pub fn raw_number(v: &SnmpValue) -> Option<Raw> {
    match v {
        SnmpValue::Integer(i) => Some(Raw::Int(i128::from(*i))),
        SnmpValue::Counter32(c) | SnmpValue::Unsigned32(c) | SnmpValue::TimeTicks(c) => {
            Some(Raw::Int(i128::from(*c)))
        }
        SnmpValue::Counter64(c) => Some(Raw::Int(i128::from(*c))),
        SnmpValue::Boolean(b) => Some(Raw::Int(i128::from(*b))),
        SnmpValue::OctetString(s) => {
            let t = String::from_utf8_lossy(s);
            let t = t.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if let Ok(i) = t.parse::<i128>() {
                Some(Raw::Int(i))
            } else {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Raw::Float)
            }
        }
        _ => None,
    }
}

/// Text rendering of a value, for string fields and tags.
pub fn text_of(v: &SnmpValue) -> Option<String> {
    match v {
        SnmpValue::OctetString(s) | SnmpValue::Opaque(s) => {
            let t = String::from_utf8_lossy(s);
            Some(
                t.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string(),
            )
        }
        SnmpValue::ObjectId(o) => Some(o.to_string()),
        SnmpValue::IpAddress(a) => Some(format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
        SnmpValue::Integer(i) => Some(i.to_string()),
        SnmpValue::Counter32(c) | SnmpValue::Unsigned32(c) | SnmpValue::TimeTicks(c) => {
            Some(c.to_string())
        }
        SnmpValue::Counter64(c) => Some(c.to_string()),
        SnmpValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What one value decodes to.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// Absent or a sentinel ("no reading"): no field.
    Missing,
    /// Present but not decodable as asked (a string where a number was expected, an
    /// out-of-range enum code …): no field, counted by the poller.
    Undecodable,
    /// Ready fields (one; two or three for an enum).
    Fields(Vec<(Arc<str>, FieldValue)>),
    /// A counter reading; the poller turns two of them into a rate.
    Counter { value: u64, width: CounterWidth },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CounterWidth {
    Bits32,
    Bits64,
    /// Wire type was not a counter (a misreporting device): no wrap handling, a drop is a
    /// reset.
    Unknown,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl ValueSpec {
    fn is_sentinel(&self, raw: Raw, scalars: &ScalarValues) -> bool {
        let hit = |list: &[i128]| match raw {
            Raw::Int(i) => list.contains(&i),
            Raw::Float(f) => list.iter().any(|&s| s as f64 == f),
        };
        if hit(&self.invalid) {
            return true;
        }
        match &self.invalid_when {
            Some(w) if hit(&w.values) => scalars
                .get(&w.oid)
                .and_then(|r| raw_number(&r.value))
                .is_some_and(|r| matches!(r, Raw::Int(i) if w.equals.contains(&i))),
            _ => false,
        }
    }

    pub fn scaled(&self, x: f64) -> f64 {
        self.scale.map_or(x, |s| s.apply(x))
    }

    /// Decodes one value as a field. `scalars` are this poll's scalar readings, for
    /// `invalid_when`.
    pub fn decode(&self, v: &SnmpValue, scalars: &ScalarValues) -> Decoded {
        match self.decode_inner(v, scalars) {
            Decoded::Missing
                if !v.is_absent()
                    && !raw_number(v).is_some_and(|r| self.is_sentinel(r, scalars))
                    && !text_of(v).is_some_and(|t| t.is_empty()) =>
            {
                Decoded::Undecodable
            }
            d => d,
        }
    }

    fn decode_inner(&self, v: &SnmpValue, scalars: &ScalarValues) -> Decoded {
        if v.is_absent() {
            return Decoded::Missing;
        }
        let one = |fv: FieldValue| Decoded::Fields(vec![(self.name.clone(), fv)]);
        let text = || match text_of(v).and_then(non_empty) {
            Some(s) => one(FieldValue::Str(s.into())),
            None => Decoded::Missing,
        };
        let number = raw_number(v).filter(|r| !self.is_sentinel(*r, scalars));
        match self.kind {
            Kind::String => text(),
            Kind::Truthvalue => match number {
                Some(Raw::Int(1)) => one(FieldValue::Bool(true)),
                Some(Raw::Int(2)) => one(FieldValue::Bool(false)),
                _ => Decoded::Missing,
            },
            Kind::Bool => match (number, &self.true_values) {
                (Some(Raw::Int(i)), Some(t)) => one(FieldValue::Bool(t.contains(&i))),
                (Some(_), Some(_)) => Decoded::Missing,
                (Some(r), None) => one(FieldValue::Bool(r.as_f64() != 0.0)),
                (None, _) => Decoded::Missing,
            },
            Kind::Counter => {
                let width = match v {
                    SnmpValue::Counter32(_) => CounterWidth::Bits32,
                    SnmpValue::Counter64(_) => CounterWidth::Bits64,
                    _ => CounterWidth::Unknown,
                };
                match number {
                    Some(Raw::Int(i)) if (0..=i128::from(u64::MAX)).contains(&i) => {
                        Decoded::Counter {
                            value: i as u64,
                            width,
                        }
                    }
                    _ => Decoded::Missing,
                }
            }
            Kind::Timeticks => match number {
                Some(r) => one(FieldValue::Float(self.scaled(r.as_f64() / 100.0))),
                None => Decoded::Missing,
            },
            Kind::Auto => {
                if let Some(map) = &self.enum_map {
                    let Some(Raw::Int(code)) = number else {
                        return Decoded::Missing;
                    };
                    let Ok(code) = i64::try_from(code) else {
                        return Decoded::Missing;
                    };
                    let label: Arc<str> = map
                        .get(&code)
                        .cloned()
                        .unwrap_or_else(|| format!("unknown({code})").into());
                    let mut fields = vec![
                        (self.name.clone(), FieldValue::Int(code)),
                        (self.state_name.clone(), FieldValue::Str(label)),
                    ];
                    if let Some(sev) = self.severity.as_ref().and_then(|s| s.get(&code)) {
                        fields.push((self.severity_name.clone(), FieldValue::Int(*sev)));
                    }
                    return Decoded::Fields(fields);
                }
                match v {
                    // A string stays a string unless the profile asked for arithmetic.
                    SnmpValue::OctetString(_) if self.scale.is_none() => text(),
                    SnmpValue::ObjectId(_) | SnmpValue::IpAddress(_) => text(),
                    _ => match number {
                        Some(r) => one(FieldValue::Float(self.scaled(r.as_f64()))),
                        None => Decoded::Missing,
                    },
                }
            }
        }
    }

    /// Decodes one value as a tag value (enum names replace codes); empty is no tag.
    pub fn decode_tag(&self, v: &SnmpValue, scalars: &ScalarValues) -> Option<String> {
        if v.is_absent() {
            return None;
        }
        if let Some(r) = raw_number(v) {
            if self.is_sentinel(r, scalars) {
                return None;
            }
            if let (Some(map), Raw::Int(code)) = (&self.enum_map, r) {
                let code = i64::try_from(code).ok()?;
                return Some(
                    map.get(&code)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| format!("unknown({code})")),
                );
            }
        }
        text_of(v).and_then(non_empty)
    }
}

/// ENTITY-SENSOR-MIB entPhySensorType names (RFC 3433 SensorDataType).
pub fn entity_sensor_type_name(code: i64) -> String {
    match code {
        1 => "other".into(),
        2 => "unknown".into(),
        3 => "volts_ac".into(),
        4 => "volts_dc".into(),
        5 => "amperes".into(),
        6 => "watts".into(),
        7 => "hertz".into(),
        8 => "celsius".into(),
        9 => "percent_rh".into(),
        10 => "rpm".into(),
        11 => "cmm".into(),
        12 => "truthvalue".into(),
        n => format!("unknown({n})"),
    }
}

/// entPhySensorValue × 10^(3·(scale−9)) / 10^precision; `None` for out-of-range inputs.
/// TruthValue sensors (type 12) map to 1.0 (true) / 0.0 (false).
pub fn entity_sensor_value(
    sensor_type: i64,
    scale: i64,
    precision: i64,
    value: i64,
) -> Option<f64> {
    if sensor_type == 12 {
        return match value {
            1 => Some(1.0),
            2 => Some(0.0),
            _ => None,
        };
    }
    if !(1..=17).contains(&scale) || !(-8..=9).contains(&precision) {
        return None;
    }
    let exp = 3 * (scale - 9) - precision;
    // Dividing by an exact power of ten keeps 254 × 10⁻¹ at 25.4 rather than 25.400000000000002.
    let v = if exp < 0 {
        value as f64 / 10f64.powi(-exp as i32)
    } else {
        value as f64 * 10f64.powi(exp as i32)
    };
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> ScalarValues {
        ScalarValues::new()
    }

    #[test]
    fn enum_severity_and_sentinel_codes() {
        let mut spec = ValueSpec::plain("load_state", Kind::Auto);
        spec.enum_map = Some(Arc::new(
            [
                (1, "low"),
                (2, "normal"),
                (4, "overload"),
                (5, "not_supported"),
            ]
            .into_iter()
            .map(|(k, v)| (k, Arc::<str>::from(v)))
            .collect(),
        ));
        spec.severity = Some(Arc::new([(1, 0), (2, 0), (4, 2)].into_iter().collect()));
        assert_eq!(
            spec.decode(&SnmpValue::Integer(4), &none()),
            Decoded::Fields(vec![
                ("load_state".into(), FieldValue::Int(4)),
                (
                    "load_state_state".into(),
                    FieldValue::Str("overload".into())
                ),
                ("load_state_severity".into(), FieldValue::Int(2)),
            ])
        );
        // notSupported: a state, never a severity.
        assert_eq!(
            spec.decode(&SnmpValue::Integer(5), &none()),
            Decoded::Fields(vec![
                ("load_state".into(), FieldValue::Int(5)),
                (
                    "load_state_state".into(),
                    FieldValue::Str("not_supported".into())
                ),
            ])
        );
        spec.invalid = vec![5];
        assert_eq!(
            spec.decode(&SnmpValue::Integer(5), &none()),
            Decoded::Missing
        );
    }

    #[test]
    fn invalid_when_looks_at_another_scalar() {
        let status = ObjectId::parse("1.3.6.1.2.1.33.1.2.1.0").unwrap();
        let mut spec = ValueSpec::plain("battery_runtime_min", Kind::Auto);
        spec.invalid_when = Some(InvalidWhen {
            values: vec![0],
            oid: status.clone(),
            equals: vec![2],
        });
        let with = |code: i64| {
            let mut m = ScalarValues::new();
            m.insert(
                status.clone(),
                Received {
                    value: SnmpValue::Integer(code),
                    at_ns: 0,
                },
            );
            m
        };
        // 0 minutes while the battery is normal: the card does not know.
        assert_eq!(
            spec.decode(&SnmpValue::Integer(0), &with(2)),
            Decoded::Missing
        );
        // 0 minutes with a depleted battery is a reading.
        assert_eq!(
            spec.decode(&SnmpValue::Integer(0), &with(4)),
            Decoded::Fields(vec![("battery_runtime_min".into(), FieldValue::Float(0.0))])
        );
        assert_eq!(
            spec.decode(&SnmpValue::Integer(12), &with(2)),
            Decoded::Fields(vec![(
                "battery_runtime_min".into(),
                FieldValue::Float(12.0)
            )])
        );
    }

    #[test]
    fn empty_strings_are_no_reading() {
        let spec = ValueSpec::plain("model", Kind::String);
        assert_eq!(
            spec.decode(&SnmpValue::OctetString(b"  \0".to_vec()), &none()),
            Decoded::Missing
        );
        assert_eq!(
            spec.decode_tag(&SnmpValue::OctetString(Vec::new()), &none()),
            None
        );
        let mut b = ValueSpec::plain("alarm", Kind::Bool);
        assert_eq!(
            b.decode(&SnmpValue::Integer(3), &none()),
            Decoded::Fields(vec![("alarm".into(), FieldValue::Bool(true))])
        );
        // APC: 1 noBatteryNeedsReplacing, 2 batteryNeedsReplacing.
        b.true_values = Some(vec![2]);
        assert_eq!(
            b.decode(&SnmpValue::Integer(1), &none()),
            Decoded::Fields(vec![("alarm".into(), FieldValue::Bool(false))])
        );
        assert_eq!(
            b.decode(&SnmpValue::Integer(2), &none()),
            Decoded::Fields(vec![("alarm".into(), FieldValue::Bool(true))])
        );
    }

    #[test]
    fn timeticks_truthvalue_string_counter() {
        let mk = |kind| ValueSpec::plain("f", kind);
        assert_eq!(
            mk(Kind::Timeticks).decode(&SnmpValue::TimeTicks(720_000), &none()),
            Decoded::Fields(vec![("f".into(), FieldValue::Float(7200.0))])
        );
        assert_eq!(
            mk(Kind::Truthvalue).decode(&SnmpValue::Integer(1), &none()),
            Decoded::Fields(vec![("f".into(), FieldValue::Bool(true))])
        );
        assert_eq!(
            mk(Kind::String).decode(&SnmpValue::OctetString(b"ab\xffc\0".to_vec()), &none()),
            Decoded::Fields(vec![("f".into(), FieldValue::Str("ab\u{fffd}c".into()))])
        );
        assert_eq!(
            mk(Kind::Truthvalue).decode(&SnmpValue::Integer(7), &none()),
            Decoded::Undecodable
        );
        assert_eq!(
            mk(Kind::Counter).decode(&SnmpValue::Integer(-5), &none()),
            Decoded::Undecodable
        );
        assert_eq!(
            mk(Kind::Counter).decode(&SnmpValue::Counter64(5), &none()),
            Decoded::Counter {
                value: 5,
                width: CounterWidth::Bits64
            }
        );
    }

    #[test]
    fn entity_sensor_arithmetic() {
        // 2345 at scale units (9), precision 1 → 234.5
        assert_eq!(entity_sensor_value(3, 9, 1, 2345), Some(234.5));
        // milli (8), precision 0: 1500 mA → 1.5 A
        assert_eq!(entity_sensor_value(5, 8, 0, 1500), Some(1.5));
        // kilo (10), precision 2: 123 → 1.23 k → 1230
        assert!((entity_sensor_value(6, 10, 2, 123).unwrap() - 1230.0).abs() < 1e-9);
        assert_eq!(entity_sensor_value(12, 9, 0, 1), Some(1.0));
        assert_eq!(entity_sensor_value(8, 0, 0, 1), None);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(i in proptest::num::i64::ANY, bytes in proptest::collection::vec(0u8..=255, 0..16)) {
            let mut spec = ValueSpec::plain("f", Kind::Auto);
            spec.scale = Scale::from_f64(0.1);
            spec.invalid = vec![-1];
            let _ = spec.decode(&SnmpValue::Integer(i), &none());
            let _ = spec.decode(&SnmpValue::OctetString(bytes.clone()), &none());
            let _ = spec.decode_tag(&SnmpValue::OctetString(bytes), &none());
        }

        #[test]
        fn scale_matches_decimal_division(raw in -1_000_000i64..1_000_000, k in 0u32..4) {
            // scale 10^-k applied to an integer gives the same float as parsing the decimal.
            let s = Scale::from_f64(10f64.powi(-(k as i32))).unwrap();
            let text = if k == 0 { raw.to_string() } else {
                let neg = raw < 0;
                let digits = format!("{:0>width$}", raw.unsigned_abs(), width = k as usize + 1);
                let (a, b) = digits.split_at(digits.len() - k as usize);
                format!("{}{a}.{b}", if neg { "-" } else { "" })
            };
            proptest::prop_assert_eq!(s.apply(raw as f64), text.parse::<f64>().unwrap());
        }
    }
}
