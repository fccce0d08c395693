//! SNMP values and object identifiers that own their data (snmp2's borrow the receive
//! buffer): what the client returns, what profiles, recordings and the trap decoder work on.

use std::fmt;

use snmp2::Value;

use super::SnmpError;

/// An object identifier as its arcs. Kept separate from snmp2's borrowed `Oid` so values can
/// outlive the response buffer and be hashed, sorted and compared by prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub Vec<u32>);

impl ObjectId {
    pub fn parse(s: &str) -> Result<ObjectId, String> {
        let t = s.trim().trim_start_matches('.');
        let arcs: Result<Vec<u32>, _> = t.split('.').map(str::parse::<u32>).collect();
        match arcs {
            Ok(a) if a.len() >= 2 => Ok(ObjectId(a)),
            _ => Err(format!(
                "{s:?} is not a numeric OID like \"1.3.6.1.2.1.1.3.0\" (MIB names are not resolved)"
            )),
        }
    }

    pub fn starts_with(&self, prefix: &ObjectId) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// The arcs after `prefix` (the row index of a table column), if it is a prefix.
    pub fn suffix_after(&self, prefix: &ObjectId) -> Option<&[u32]> {
        if self.starts_with(prefix) {
            Some(&self.0[prefix.0.len()..])
        } else {
            None
        }
    }

    pub fn child(&self, arcs: &[u32]) -> ObjectId {
        let mut v = self.0.clone();
        v.extend_from_slice(arcs);
        ObjectId(v)
    }

    pub(crate) fn to_snmp2(&self) -> Result<snmp2::Oid<'static>, SnmpError> {
        let arcs: Vec<u64> = self.0.iter().map(|&a| u64::from(a)).collect();
        snmp2::Oid::from(&arcs).map_err(|e| SnmpError::Protocol {
            target: String::new(),
            detail: format!("cannot encode OID {self}: {e:?}"),
        })
    }

    pub(crate) fn from_snmp2(oid: &snmp2::Oid<'_>) -> Option<ObjectId> {
        oid.iter()?
            .map(|a| u32::try_from(a).ok())
            .collect::<Option<Vec<u32>>>()
            .map(ObjectId)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// A varbind value that owns its data.
#[derive(Clone, Debug, PartialEq)]
pub enum SnmpValue {
    Integer(i64),
    OctetString(Vec<u8>),
    ObjectId(ObjectId),
    IpAddress([u8; 4]),
    Counter32(u32),
    Unsigned32(u32),
    TimeTicks(u32),
    Counter64(u64),
    Opaque(Vec<u8>),
    Boolean(bool),
    Null,
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
    /// A type this poller does not decode (constructed values and the like).
    Unsupported,
}

impl SnmpValue {
    pub(crate) fn from_snmp2(v: &Value<'_>) -> SnmpValue {
        match v {
            Value::Integer(i) => SnmpValue::Integer(*i),
            Value::OctetString(s) => SnmpValue::OctetString(s.to_vec()),
            Value::ObjectIdentifier(o) => ObjectId::from_snmp2(o)
                .map(SnmpValue::ObjectId)
                .unwrap_or(SnmpValue::Unsupported),
            Value::IpAddress(a) => SnmpValue::IpAddress(*a),
            Value::Counter32(c) => SnmpValue::Counter32(*c),
            Value::Unsigned32(c) => SnmpValue::Unsigned32(*c),
            Value::Timeticks(t) => SnmpValue::TimeTicks(*t),
            Value::Counter64(c) => SnmpValue::Counter64(*c),
            Value::Opaque(o) => SnmpValue::Opaque(o.to_vec()),
            Value::Boolean(b) => SnmpValue::Boolean(*b),
            Value::Null => SnmpValue::Null,
            Value::NoSuchObject => SnmpValue::NoSuchObject,
            Value::NoSuchInstance => SnmpValue::NoSuchInstance,
            Value::EndOfMibView => SnmpValue::EndOfMibView,
            _ => SnmpValue::Unsupported,
        }
    }

    /// True for the "nothing here" exceptions and NULL (what v1 agents and some v2c agents
    /// return for an absent object).
    pub fn is_absent(&self) -> bool {
        matches!(
            self,
            SnmpValue::NoSuchObject
                | SnmpValue::NoSuchInstance
                | SnmpValue::EndOfMibView
                | SnmpValue::Null
                | SnmpValue::Unsupported
        )
    }
}

/// A varbind value together with when its response arrived (for counter rates).
#[derive(Clone, Debug)]
pub struct Received {
    pub value: SnmpValue,
    pub at_ns: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_parse_display_prefix() {
        let o = ObjectId::parse(".1.3.6.1.2.1.1.3.0").unwrap();
        assert_eq!(o.to_string(), "1.3.6.1.2.1.1.3.0");
        let p = ObjectId::parse("1.3.6.1.2.1.1").unwrap();
        assert!(o.starts_with(&p));
        assert_eq!(o.suffix_after(&p), Some(&[3, 0][..]));
        assert!(ObjectId::parse("sysUpTime.0").is_err());
        assert!(ObjectId::parse("1").is_err());
        assert!(ObjectId::parse("1.3.99999999999").is_err());
    }

    proptest::proptest! {
        #[test]
        fn oid_parse_never_panics(s in ".{0,40}") {
            let _ = ObjectId::parse(&s);
        }

        #[test]
        fn oid_roundtrip(arcs in proptest::collection::vec(0u32..=u32::MAX, 2..20)) {
            let o = ObjectId(arcs);
            proptest::prop_assert_eq!(ObjectId::parse(&o.to_string()).unwrap(), o);
        }
    }
}
