//! Sparkplug B (Eclipse Tahu `sparkplug_b.proto`, topic namespace `spBv1.0`): the protobuf
//! payloads of industrial and BMS gateways.
//!
//! Topics are `spBv1.0/<group>/<type>/<edge node>[/<device>]`. Every sample gets the tags
//! `group`, `edge_node` and `device` (the Sparkplug device id, or the edge node id for the
//! node's own metrics), so the shipped rules and the device-down inhibition work on it.
//!
//! - `NBIRTH` / `DBIRTH` declare the metrics with name, alias and datatype; the aliases are
//!   kept per edge node and per device and resolve the alias-only metrics of later
//!   `NDATA` / `DDATA`. A BIRTH's metrics are samples too.
//! - `NDEATH` / `DDEATH` write `sparkplug_state up=false` for the device (an NDEATH for the
//!   node and every device it announced), which inhibits that device's rules like
//!   `snmp_poll up=false`; the next BIRTH writes `up=true` and restores them.
//! - Datatypes: Int8..Int64 and UInt8..UInt32 → integer, UInt64 → unsigned, Float/Double →
//!   float (a Float's shortest decimal, 21.1 not 21.100000381), Boolean → bool,
//!   String/Text/UUID → string, DateTime → integer (ms since the epoch). DataSet, Template,
//!   Bytes, File and the arrays are counted as field errors and skipped.
//! - Each metric's own timestamp (ms) is its sample's time, else the payload's, else receive
//!   time; metrics with equal timestamps share one sample.
//!
//! The messages below are `sparkplug_b.proto`'s, declared by hand with `prost`'s derive (no
//! build script, no `protoc`); the parts sitewatch does not read (metadata, property sets,
//! data sets, templates, extensions) are left out, which protobuf decoding skips.

use std::collections::HashMap;
#[cfg(test)]
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prost::Message;

use crate::model::FieldValue;

/// `org.eclipse.tahu.protobuf.Payload`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `Payload.Metric`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// `Payload.Metric.value` (the scalar cases; data sets, templates and extensions are skipped).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    #[prost(float, tag = "12")]
    FloatValue(f32),
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    #[prost(string, tag = "15")]
    StringValue(String),
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// Sparkplug datatype codes (`DataType` in the .proto).
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
    pub const TEXT: u32 = 14;
    pub const UUID: u32 = 15;
}

/// The message type of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    NBirth,
    NData,
    NDeath,
    DBirth,
    DData,
    DDeath,
    /// NCMD, DCMD and STATE: commands and host state, not telemetry.
    Other,
}

/// `spBv1.0/<group>/<type>/<edge>[/<device>]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkplugTopic<'t> {
    pub group: &'t str,
    pub kind: MessageType,
    pub edge: &'t str,
    pub device: Option<&'t str>,
}

impl<'t> SparkplugTopic<'t> {
    /// `None` for topics outside the Sparkplug B namespace or of the wrong shape.
    pub fn parse(topic: &'t str) -> Option<SparkplugTopic<'t>> {
        let mut levels = topic.split('/');
        if levels.next()? != "spBv1.0" {
            return None;
        }
        let group = levels.next()?;
        let kind = levels.next()?;
        let edge = levels.next()?;
        let device = levels.next();
        if levels.next().is_some() || group.is_empty() || edge.is_empty() {
            return None;
        }
        let kind = match (kind, device.is_some()) {
            ("NBIRTH", false) => MessageType::NBirth,
            ("NDATA", false) => MessageType::NData,
            ("NDEATH", false) => MessageType::NDeath,
            ("DBIRTH", true) => MessageType::DBirth,
            ("DDATA", true) => MessageType::DData,
            ("DDEATH", true) => MessageType::DDeath,
            ("NCMD", false) | ("DCMD", true) => MessageType::Other,
            _ => return None,
        };
        if device == Some("") {
            return None;
        }
        Some(SparkplugTopic {
            group,
            kind,
            edge,
            device,
        })
    }
}

/// A metric's value as a field value; `Err` says why it is not stored.
pub fn field_value(datatype: u32, value: &MetricValue) -> Result<FieldValue, &'static str> {
    use datatype::*;
    use MetricValue as V;
    Ok(match (datatype, value) {
        // Signed types travel as uint32 (two's complement, sign-extended or not): the low
        // bits of the type's width are the value.
        (INT8, V::IntValue(v)) => FieldValue::Int(i64::from(*v as i8)),
        (INT16, V::IntValue(v)) => FieldValue::Int(i64::from(*v as i16)),
        (INT32, V::IntValue(v)) => FieldValue::Int(i64::from(*v as i32)),
        (INT64, V::LongValue(v)) => FieldValue::Int(*v as i64),
        (UINT8, V::IntValue(v)) => FieldValue::Int(i64::from(*v as u8)),
        (UINT16, V::IntValue(v)) => FieldValue::Int(i64::from(*v as u16)),
        (UINT32, V::IntValue(v)) => FieldValue::Int(i64::from(*v)),
        // Some publishers put small unsigned values into long_value.
        (UINT32, V::LongValue(v)) => FieldValue::Int(i64::from(*v as u32)),
        (UINT64, V::LongValue(v)) => FieldValue::UInt(*v),
        (FLOAT, V::FloatValue(f)) if f.is_finite() => {
            // The f32's shortest decimal (21.1), not its binary expansion (21.100000381...).
            FieldValue::Float(f.to_string().parse().unwrap_or(f64::from(*f)))
        }
        (DOUBLE, V::DoubleValue(f)) if f.is_finite() => FieldValue::Float(*f),
        (FLOAT | DOUBLE, V::FloatValue(_) | V::DoubleValue(_)) => return Err("non_finite"),
        (BOOLEAN, V::BooleanValue(b)) => FieldValue::Bool(*b),
        (STRING | TEXT | UUID, V::StringValue(s)) => FieldValue::Str(Arc::from(s.as_str())),
        (DATETIME, V::LongValue(ms)) => FieldValue::Int(*ms as i64),
        (INT8..=UUID, _) => return Err("value does not match its datatype"),
        _ => return Err("datatype not stored (data set, template, bytes, file or array)"),
    })
}

/// What a BIRTH declared: alias → (name, datatype), and name → datatype.
#[derive(Debug, Default, Clone)]
pub(crate) struct Declared {
    by_alias: HashMap<u64, (Arc<str>, u32)>,
    by_name: HashMap<Arc<str>, u32>,
}

impl Declared {
    fn from_birth(p: &Payload) -> Declared {
        let mut d = Declared::default();
        for m in &p.metrics {
            let (Some(name), Some(dt)) = (&m.name, m.datatype) else {
                continue;
            };
            let name: Arc<str> = Arc::from(name.as_str());
            if let Some(alias) = m.alias {
                d.by_alias.insert(alias, (name.clone(), dt));
            }
            d.by_name.insert(name, dt);
        }
        d
    }

    /// A metric's name and datatype: its own, else from the BIRTH by alias or name.
    pub(crate) fn resolve(&self, m: &Metric) -> Option<(Arc<str>, u32)> {
        match (&m.name, m.alias) {
            (Some(name), _) => {
                let dt = m
                    .datatype
                    .or_else(|| self.by_name.get(name.as_str()).copied())?;
                Some((Arc::from(name.as_str()), dt))
            }
            (None, Some(alias)) => {
                let (name, dt) = self.by_alias.get(&alias)?;
                Some((name.clone(), m.datatype.unwrap_or(*dt)))
            }
            (None, None) => None,
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    declared: Declared,
    devices: HashMap<Arc<str>, Declared>,
}

/// Most edge nodes, and devices per edge node, whose BIRTH state one subscription keeps: a
/// publisher inventing ids cannot grow it without bound. A BIRTH beyond them is refused.
pub(crate) const MAX_NODES: usize = 10_000;
pub(crate) const MAX_DEVICES_PER_NODE: usize = 10_000;

/// BIRTH state of every edge node and device seen, per subscription (shared by its clones).
#[derive(Debug, Default, Clone)]
pub(crate) struct Births {
    nodes: Arc<Mutex<HashMap<NodeKey, Node>>>,
}

/// (group, edge node).
type NodeKey = (Arc<str>, Arc<str>);

/// A metric read from a payload: name, value (or why it is not stored), own timestamp (ms).
pub(crate) type DecodedMetric = (Arc<str>, Result<FieldValue, &'static str>, Option<u64>);

/// A decoded Sparkplug message, before it becomes samples.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// (name, value or why not, metric timestamp ms).
    pub(crate) metrics: Vec<DecodedMetric>,
    pub(crate) payload_ts_ms: Option<u64>,
    /// Devices whose state changes: (device tag, up).
    pub(crate) health: Vec<(Arc<str>, bool)>,
    /// Metrics whose alias no BIRTH declared (a BIRTH missed: the host should ask for a
    /// rebirth).
    pub(crate) unresolved: usize,
}

impl Births {
    /// Decodes `payload` of topic `t`, updating the BIRTH state.
    pub(crate) fn decode(&self, t: &SparkplugTopic<'_>, payload: &[u8]) -> Result<Decoded, String> {
        let p = Payload::decode(payload).map_err(|e| format!("not a Sparkplug B payload: {e}"))?;
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let key = (Arc::<str>::from(t.group), Arc::<str>::from(t.edge));
        let full = match t.kind {
            MessageType::NBirth => !nodes.contains_key(&key) && nodes.len() >= MAX_NODES,
            MessageType::DBirth => {
                let n = nodes.get(&key);
                (n.is_none() && nodes.len() >= MAX_NODES)
                    || n.is_some_and(|n| {
                        n.devices.len() >= MAX_DEVICES_PER_NODE
                            && !n.devices.contains_key(t.device.unwrap_or_default())
                    })
            }
            _ => false,
        };
        if full {
            return Err(format!(
                "BIRTH refused: this subscription already keeps {MAX_NODES} edge nodes or \
                 {MAX_DEVICES_PER_NODE} devices of one node (a publisher inventing ids?)"
            ));
        }
        let mut health = Vec::new();
        let edge: Arc<str> = Arc::from(t.edge);
        let device: Option<Arc<str>> = t.device.map(Arc::from);
        match t.kind {
            MessageType::NBirth => {
                let node = nodes.entry(key.clone()).or_default();
                node.declared = Declared::from_birth(&p);
                health.push((edge.clone(), true));
            }
            MessageType::DBirth => {
                let dev = device.clone().expect("DBIRTH topics have a device");
                nodes
                    .entry(key.clone())
                    .or_default()
                    .devices
                    .insert(dev.clone(), Declared::from_birth(&p));
                health.push((dev, true));
            }
            MessageType::NDeath => {
                // The node and everything behind it are offline; their aliases are void.
                if let Some(node) = nodes.remove(&key) {
                    let mut devs: Vec<_> = node.devices.keys().cloned().collect();
                    devs.sort();
                    health.extend(devs.into_iter().map(|d| (d, false)));
                }
                health.insert(0, (edge.clone(), false));
            }
            MessageType::DDeath => {
                let dev = device.clone().expect("DDEATH topics have a device");
                if let Some(node) = nodes.get_mut(&key) {
                    node.devices.remove(&dev);
                }
                health.push((dev, false));
            }
            MessageType::NData | MessageType::DData | MessageType::Other => {}
        }
        let empty = Declared::default();
        let declared = match (&device, nodes.get(&key)) {
            (None, Some(node)) => &node.declared,
            (Some(d), Some(node)) => node.devices.get(d).unwrap_or(&empty),
            _ => &empty,
        };
        let mut metrics = Vec::new();
        let mut unresolved = 0;
        if matches!(
            t.kind,
            MessageType::NBirth | MessageType::DBirth | MessageType::NData | MessageType::DData
        ) {
            for m in &p.metrics {
                let Some((name, dt)) = declared.resolve(m) else {
                    unresolved += 1;
                    continue;
                };
                if m.is_null == Some(true) {
                    continue;
                }
                let Some(value) = &m.value else {
                    continue;
                };
                metrics.push((name, field_value(dt, value), m.timestamp));
            }
        }
        Ok(Decoded {
            metrics,
            payload_ts_ms: p.timestamp,
            health,
            unresolved,
        })
    }

    /// Devices known per edge node (for tests).
    #[cfg(test)]
    fn devices(&self, group: &str, edge: &str) -> HashSet<String> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .get(&(Arc::from(group), Arc::from(edge)))
            .map(|n| n.devices.keys().map(|d| d.to_string()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn metric(name: Option<&str>, alias: Option<u64>, dt: Option<u32>, v: MetricValue) -> Metric {
        Metric {
            name: name.map(str::to_string),
            alias,
            timestamp: None,
            datatype: dt,
            is_historical: None,
            is_transient: None,
            is_null: None,
            value: Some(v),
        }
    }

    fn payload(metrics: Vec<Metric>) -> Vec<u8> {
        Payload {
            timestamp: Some(1_700_000_000_000),
            metrics,
            seq: Some(0),
            uuid: None,
            body: None,
        }
        .encode_to_vec()
    }

    #[test]
    fn topics() {
        let t = SparkplugTopic::parse("spBv1.0/dc1/DDATA/gw-1/crah-1").unwrap();
        assert_eq!(
            t,
            SparkplugTopic {
                group: "dc1",
                kind: MessageType::DData,
                edge: "gw-1",
                device: Some("crah-1")
            }
        );
        assert_eq!(
            SparkplugTopic::parse("spBv1.0/dc1/NBIRTH/gw-1")
                .unwrap()
                .kind,
            MessageType::NBirth
        );
        for bad in [
            "spBv1.0/dc1/DDATA/gw-1",
            "spBv1.0/dc1/NDATA/gw-1/x",
            "spBv1.0/STATE/host",
            "spAv1.0/dc1/NDATA/gw",
            "spBv1.0/dc1/DDATA/gw/dev/extra",
            "spBv1.0//NDATA/gw",
        ] {
            assert!(SparkplugTopic::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn datatypes() {
        use datatype::*;
        use MetricValue as V;
        assert_eq!(
            field_value(INT8, &V::IntValue(255)),
            Ok(FieldValue::Int(-1))
        );
        assert_eq!(
            field_value(INT8, &V::IntValue(u32::MAX)),
            Ok(FieldValue::Int(-1))
        );
        assert_eq!(
            field_value(INT16, &V::IntValue(65535)),
            Ok(FieldValue::Int(-1))
        );
        assert_eq!(
            field_value(INT32, &V::IntValue(u32::MAX)),
            Ok(FieldValue::Int(-1))
        );
        assert_eq!(
            field_value(INT64, &V::LongValue(u64::MAX)),
            Ok(FieldValue::Int(-1))
        );
        assert_eq!(
            field_value(UINT32, &V::IntValue(u32::MAX)),
            Ok(FieldValue::Int(4294967295))
        );
        assert_eq!(
            field_value(UINT64, &V::LongValue(u64::MAX)),
            Ok(FieldValue::UInt(u64::MAX))
        );
        assert_eq!(
            field_value(FLOAT, &V::FloatValue(21.1)),
            Ok(FieldValue::Float(21.1))
        );
        assert_eq!(
            field_value(DOUBLE, &V::DoubleValue(0.1)),
            Ok(FieldValue::Float(0.1))
        );
        assert!(field_value(DOUBLE, &V::DoubleValue(f64::NAN)).is_err());
        assert_eq!(
            field_value(BOOLEAN, &V::BooleanValue(true)),
            Ok(FieldValue::Bool(true))
        );
        assert_eq!(
            field_value(STRING, &V::StringValue("run".into())),
            Ok(FieldValue::Str("run".into()))
        );
        assert!(field_value(BOOLEAN, &V::IntValue(1)).is_err());
        assert!(field_value(16, &V::BytesValue(vec![])).is_err());
    }

    #[test]
    fn aliases_from_births_per_node_and_device() {
        use datatype::*;
        let b = Births::default();
        let topic = |s: &'static str| SparkplugTopic::parse(s).unwrap();
        let birth = payload(vec![
            metric(
                Some("Supply Air"),
                Some(1),
                Some(FLOAT),
                MetricValue::FloatValue(18.5),
            ),
            metric(
                Some("Running"),
                Some(2),
                Some(BOOLEAN),
                MetricValue::BooleanValue(true),
            ),
        ]);
        let d = b
            .decode(&topic("spBv1.0/dc1/DBIRTH/gw-1/crah-1"), &birth)
            .unwrap();
        assert_eq!(d.health, vec![(Arc::from("crah-1"), true)]);
        assert_eq!(d.metrics.len(), 2);
        // DDATA by alias only, no datatype.
        let data = payload(vec![
            metric(None, Some(2), None, MetricValue::BooleanValue(false)),
            metric(None, Some(1), None, MetricValue::FloatValue(19.25)),
            metric(None, Some(9), None, MetricValue::FloatValue(1.0)),
        ]);
        let d = b
            .decode(&topic("spBv1.0/dc1/DDATA/gw-1/crah-1"), &data)
            .unwrap();
        let got: Vec<_> = d
            .metrics
            .iter()
            .map(|(n, v, _)| (n.to_string(), v.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Running".to_string(), Ok(FieldValue::Bool(false))),
                ("Supply Air".to_string(), Ok(FieldValue::Float(19.25))),
            ]
        );
        assert_eq!(d.unresolved, 1);
        // Another device's aliases are its own.
        let d = b
            .decode(&topic("spBv1.0/dc1/DDATA/gw-1/crah-2"), &data)
            .unwrap();
        assert_eq!((d.metrics.len(), d.unresolved), (0, 3));
        // NDEATH: the node and its devices are down, the aliases forgotten.
        let d = b
            .decode(&topic("spBv1.0/dc1/NDEATH/gw-1"), &payload(vec![]))
            .unwrap();
        assert_eq!(
            d.health,
            vec![(Arc::from("gw-1"), false), (Arc::from("crah-1"), false)]
        );
        assert!(b.devices("dc1", "gw-1").is_empty());
        assert!(b
            .decode(&topic("spBv1.0/dc1/DDATA/gw-1/crah-1"), b"\xff\xff")
            .is_err());
    }

    #[test]
    fn birth_state_is_bounded() {
        let b = Births::default();
        let empty = payload(vec![]);
        for i in 0..MAX_NODES {
            let t = format!("spBv1.0/g/NBIRTH/e{i}");
            b.decode(&SparkplugTopic::parse(&t).unwrap(), &empty)
                .unwrap();
        }
        let e = b
            .decode(
                &SparkplugTopic::parse("spBv1.0/g/NBIRTH/one-more").unwrap(),
                &empty,
            )
            .unwrap_err();
        assert!(e.contains("refused"), "{e}");
        // A known node may be reborn.
        b.decode(
            &SparkplugTopic::parse("spBv1.0/g/NBIRTH/e7").unwrap(),
            &empty,
        )
        .unwrap();
    }

    proptest! {
        /// Arbitrary bytes on any message type never panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), k in 0usize..6) {
            let topics = ["spBv1.0/g/NBIRTH/e", "spBv1.0/g/DBIRTH/e/d", "spBv1.0/g/NDATA/e", "spBv1.0/g/DDATA/e/d", "spBv1.0/g/NDEATH/e", "spBv1.0/g/DDEATH/e/d"];
            let b = Births::default();
            let t = SparkplugTopic::parse(topics[k]).unwrap();
            let _ = b.decode(&t, &bytes);
        }

        /// Valid payloads with arbitrary metrics decode, and every value has a field type.
        #[test]
        fn arbitrary_metrics_decode(dts in proptest::collection::vec(0u32..40, 0..8), vals in proptest::collection::vec(any::<u64>(), 8)) {
            let metrics = dts.iter().zip(&vals).enumerate().map(|(i, (dt, v))| {
                let value = match i % 4 {
                    0 => MetricValue::IntValue(*v as u32),
                    1 => MetricValue::LongValue(*v),
                    2 => MetricValue::DoubleValue(f64::from_bits(*v)),
                    _ => MetricValue::FloatValue(f32::from_bits(*v as u32)),
                };
                metric(Some(&format!("m{i}")), Some(i as u64), Some(*dt), value)
            }).collect();
            let b = Births::default();
            let d = b.decode(&SparkplugTopic::parse("spBv1.0/g/NBIRTH/e").unwrap(), &payload(metrics)).unwrap();
            for (_, v, _) in d.metrics {
                if let Ok(FieldValue::Float(f)) = v { prop_assert!(f.is_finite()); }
            }
        }
    }
}
