//! Recordings of SNMP agents in snmpsim's `.snmprec` format: read (to decode a device
//! offline with `sitewatch profile test`) and written (by `sitewatch probe --record`).
//!
//! A line is `OID|TYPE|VALUE`. TYPE is the BER tag in decimal (2 INTEGER, 4 OCTET STRING,
//! 5 NULL, 6 OBJECT IDENTIFIER, 64 IpAddress, 65 Counter32, 66 Gauge32, 67 TimeTicks,
//! 68 Opaque, 70 Counter64), an `x` suffix means VALUE is hex, and `TYPE:module` names one
//! of snmpsim's variation modules, whose VALUE is a parameter list: for those the recording
//! is read at its starting point (`numeric`: `initial`, `writecache`/`delay`: `value`), so
//! an offline decode is reproducible. Lines a reader cannot use are counted, not fatal: a
//! support recording with one odd line still shows everything else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::path::Path;

use super::mib_view::MibView;
use super::value::{ObjectId, Received, SnmpValue};
use super::SnmpError;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read recording {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no usable `OID|TYPE|VALUE` line (is this an .snmprec file?)")]
    Empty { path: String },
}

/// One agent's objects, in OID order.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    objects: BTreeMap<ObjectId, SnmpValue>,
    /// Lines skipped as unreadable (with the first few, for the message).
    pub skipped: usize,
    pub first_skipped: Vec<String>,
    /// Timestamp given to every value read from it.
    at_ns: i64,
}

/// Why one line could not be used.
fn parse_line(line: &str) -> Result<Option<(ObjectId, SnmpValue)>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut parts = line.splitn(3, '|');
    let (Some(oid), Some(tag), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not OID|TYPE|VALUE".into());
    };
    let oid = ObjectId::parse(oid.trim())?;
    let (tag, module) = match tag.split_once(':') {
        Some((t, m)) => (t, Some(m)),
        None => (tag, None),
    };
    let (tag, hex) = match tag.strip_suffix('x') {
        Some(t) => (t, true),
        None => (tag, false),
    };
    let tag: u32 = tag
        .trim()
        .parse()
        .map_err(|_| format!("type {tag:?} is not a number"))?;
    let value: String = match module {
        None => value.to_string(),
        Some(m) => {
            let param = |key: &str| {
                value.split(',').find_map(|kv| {
                    kv.split_once('=')
                        .filter(|(k, _)| k.trim() == key)
                        .map(|(_, v)| v.to_string())
                })
            };
            match m {
                "numeric" => param("initial")
                    .or_else(|| param("min"))
                    .ok_or("numeric variation without initial or min")?,
                _ => param("value").ok_or_else(|| format!("variation {m:?} without value="))?,
            }
        }
    };
    let bytes = || -> Result<Vec<u8>, String> {
        if hex {
            decode_hex(&value)
        } else {
            Ok(value.as_bytes().to_vec())
        }
    };
    let text = || -> Result<String, String> {
        String::from_utf8(bytes()?).map_err(|_| "not UTF-8".to_string())
    };
    let int = |s: String| -> Result<i128, String> {
        s.trim()
            .parse::<i128>()
            .map_err(|_| format!("{s:?} is not an integer"))
    };
    let v = match tag {
        1 => SnmpValue::Boolean(int(text()?)? != 0),
        2 => SnmpValue::Integer(i64::try_from(int(text()?)?).map_err(|e| e.to_string())?),
        4 => SnmpValue::OctetString(bytes()?),
        5 => SnmpValue::Null,
        // A value OID may be a single arc: agents send `0` for "no specific" (ifSpecific).
        6 => {
            let t = text()?;
            let arcs: Vec<u32> = t
                .trim()
                .trim_start_matches('.')
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| format!("{t:?} is not a numeric OID"))?;
            SnmpValue::ObjectId(ObjectId(arcs))
        }
        64 => {
            let b = bytes()?;
            let a: [u8; 4] = if hex {
                b.try_into().map_err(|_| "IpAddress is not 4 bytes")?
            } else {
                let t = text()?;
                let parts: Vec<u8> = t
                    .trim()
                    .split('.')
                    .map(|p| p.parse::<u8>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("{t:?} is not an IPv4 address"))?;
                parts.try_into().map_err(|_| "IpAddress needs 4 parts")?
            };
            SnmpValue::IpAddress(a)
        }
        65 => SnmpValue::Counter32(u32::try_from(int(text()?)?).map_err(|e| e.to_string())?),
        66 => SnmpValue::Unsigned32(u32::try_from(int(text()?)?).map_err(|e| e.to_string())?),
        67 => SnmpValue::TimeTicks(u32::try_from(int(text()?)?).map_err(|e| e.to_string())?),
        68 => SnmpValue::Opaque(bytes()?),
        70 => SnmpValue::Counter64(u64::try_from(int(text()?)?).map_err(|e| e.to_string())?),
        128 => SnmpValue::NoSuchObject,
        129 => SnmpValue::NoSuchInstance,
        130 => SnmpValue::EndOfMibView,
        t => return Err(format!("type {t} is not an SNMP value type")),
    };
    Ok(Some((oid, v)))
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?} is not hex"))
        })
        .collect()
}

impl Recording {
    /// Parses `.snmprec` text. Never fails on a bad line: see [`Recording::skipped`].
    pub fn parse(text: &str) -> Recording {
        let mut r = Recording {
            at_ns: crate::model::now_ns(),
            ..Recording::default()
        };
        for (n, line) in text.lines().enumerate() {
            match parse_line(line) {
                Ok(Some((oid, v))) => {
                    r.objects.insert(oid, v);
                }
                Ok(None) => {}
                Err(why) => {
                    r.skipped += 1;
                    if r.first_skipped.len() < 3 {
                        r.first_skipped.push(format!("line {}: {why}", n + 1));
                    }
                }
            }
        }
        r
    }

    /// Reads a recording file; an empty or unreadable one is an error naming the path.
    pub fn read(path: &Path) -> Result<Recording, RecordingError> {
        let bytes = std::fs::read(path).map_err(|source| RecordingError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let r = Recording::parse(&String::from_utf8_lossy(&bytes));
        if r.objects.is_empty() {
            return Err(RecordingError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(r)
    }

    /// A recording of walked objects (what `probe --record` saves).
    pub fn from_objects(objects: impl IntoIterator<Item = (ObjectId, SnmpValue)>) -> Recording {
        Recording {
            objects: objects
                .into_iter()
                .filter(|(_, v)| !matches!(v, SnmpValue::Unsupported))
                .collect(),
            at_ns: crate::model::now_ns(),
            ..Recording::default()
        }
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn value(&self, oid: &ObjectId) -> Option<&SnmpValue> {
        self.objects.get(oid)
    }

    /// The `.snmprec` text: sorted by OID (snmpsim answers GETNEXT in file order), strings
    /// in clear when they are plain printable ASCII, hex otherwise.
    pub fn to_snmprec(&self) -> String {
        let mut out = String::new();
        for (oid, v) in &self.objects {
            let _ = match v {
                SnmpValue::Boolean(b) => writeln!(out, "{oid}|1|{}", u8::from(*b)),
                SnmpValue::Integer(i) => writeln!(out, "{oid}|2|{i}"),
                SnmpValue::OctetString(s) => {
                    let plain = !s.is_empty()
                        && s.iter().all(|b| (0x20..0x7f).contains(b))
                        && s.first() != Some(&b' ')
                        && s.last() != Some(&b' ');
                    if plain || s.is_empty() {
                        writeln!(out, "{oid}|4|{}", String::from_utf8_lossy(s))
                    } else {
                        writeln!(out, "{oid}|4x|{}", hex(s))
                    }
                }
                SnmpValue::Null => writeln!(out, "{oid}|5|"),
                SnmpValue::ObjectId(o) => writeln!(out, "{oid}|6|{o}"),
                SnmpValue::IpAddress(a) => {
                    writeln!(out, "{oid}|64|{}.{}.{}.{}", a[0], a[1], a[2], a[3])
                }
                SnmpValue::Counter32(c) => writeln!(out, "{oid}|65|{c}"),
                SnmpValue::Unsigned32(c) => writeln!(out, "{oid}|66|{c}"),
                SnmpValue::TimeTicks(c) => writeln!(out, "{oid}|67|{c}"),
                SnmpValue::Opaque(b) => writeln!(out, "{oid}|68x|{}", hex(b)),
                SnmpValue::Counter64(c) => writeln!(out, "{oid}|70|{c}"),
                SnmpValue::NoSuchObject
                | SnmpValue::NoSuchInstance
                | SnmpValue::EndOfMibView
                | SnmpValue::Unsupported => Ok(()),
            };
        }
        out
    }

    fn received(&self, v: &SnmpValue) -> Received {
        Received {
            value: v.clone(),
            at_ns: self.at_ns,
        }
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

impl MibView for Recording {
    async fn get(&mut self, oids: &[ObjectId]) -> Result<Vec<(ObjectId, Received)>, SnmpError> {
        Ok(oids
            .iter()
            .map(|o| {
                let v = self.objects.get(o).unwrap_or(&SnmpValue::NoSuchObject);
                (o.clone(), self.received(v))
            })
            .collect())
    }

    async fn walk(
        &mut self,
        roots: &[ObjectId],
    ) -> Result<Vec<(usize, ObjectId, Received)>, SnmpError> {
        let mut out = Vec::new();
        for (i, root) in roots.iter().enumerate() {
            for (o, v) in self
                .objects
                .range((Bound::Excluded(root), Bound::Unbounded))
                .take_while(|(o, _)| o.starts_with(root))
            {
                out.push((i, o.clone(), self.received(v)));
            }
        }
        Ok(out)
    }

    async fn next_of(&mut self, oids: &[ObjectId]) -> Result<Vec<Option<ObjectId>>, SnmpError> {
        Ok(oids
            .iter()
            .map(|o| {
                self.objects
                    .range((Bound::Excluded(o), Bound::Unbounded))
                    .next()
                    .map(|(k, _)| k.clone())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;

    const SAMPLE: &str = "\
#EAST EA9080 UPS
1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.40614
1.3.6.1.2.1.33.1.1.1.0|4x|4541535420
1.3.6.1.2.1.33.1.2.3.0|2|-1
1.3.6.1.2.1.33.1.3.3.1.3.1.0|66|236
1.3.6.1.4.1.318.1.1.26.9.2.3.1.5.1|2:numeric|min=1,max=2,initial=2,wrap=1
1.3.6.1.4.1.318.1.1.4.4.2.1.4.1|4:writecache|value=Server 1 PS 1
1.3.6.1.2.1.1.3.0|67|12345
1.3.6.1.2.1.4.20.1.1.10.0.0.1|64x|0a000001
bogus line
1.3.6.1.2.1.9|99|x
";

    #[test]
    fn reads_types_hex_and_variations() {
        let r = Recording::parse(SAMPLE);
        let v = |s: &str| r.value(&ObjectId::parse(s).unwrap()).cloned();
        assert_eq!(
            v("1.3.6.1.2.1.1.2.0"),
            Some(SnmpValue::ObjectId(
                ObjectId::parse("1.3.6.1.4.1.40614").unwrap()
            ))
        );
        assert_eq!(
            v("1.3.6.1.2.1.33.1.1.1.0"),
            Some(SnmpValue::OctetString(b"EAST ".to_vec()))
        );
        assert_eq!(v("1.3.6.1.2.1.33.1.2.3.0"), Some(SnmpValue::Integer(-1)));
        assert_eq!(
            v("1.3.6.1.2.1.33.1.3.3.1.3.1.0"),
            Some(SnmpValue::Unsigned32(236))
        );
        assert_eq!(
            v("1.3.6.1.4.1.318.1.1.26.9.2.3.1.5.1"),
            Some(SnmpValue::Integer(2))
        );
        assert_eq!(
            v("1.3.6.1.4.1.318.1.1.4.4.2.1.4.1"),
            Some(SnmpValue::OctetString(b"Server 1 PS 1".to_vec()))
        );
        assert_eq!(
            v("1.3.6.1.2.1.4.20.1.1.10.0.0.1"),
            Some(SnmpValue::IpAddress([10, 0, 0, 1]))
        );
        assert_eq!(r.skipped, 2, "{:?}", r.first_skipped);
    }

    #[tokio::test]
    async fn answers_get_walk_and_next_like_an_agent() {
        let mut r = Recording::parse(SAMPLE);
        let root = ObjectId::parse("1.3.6.1.2.1.33").unwrap();
        let walked = r.walk(std::slice::from_ref(&root)).await.unwrap();
        assert_eq!(walked.len(), 3);
        assert!(walked.windows(2).all(|w| w[0].1 < w[1].1));
        let next = r
            .next_of(&[
                ObjectId::parse("1.3.6.1.2.1.33.1.1").unwrap(),
                ObjectId::parse("1.3.6.1.4.1.999").unwrap(),
            ])
            .await
            .unwrap();
        assert_eq!(
            next[0].as_ref().map(ToString::to_string).as_deref(),
            Some("1.3.6.1.2.1.33.1.1.1.0")
        );
        assert_eq!(next[1], None);
        let got = r
            .get(&[ObjectId::parse("1.3.6.1.2.1.33.1.9.9.0").unwrap()])
            .await
            .unwrap();
        assert_eq!(got[0].1.value, SnmpValue::NoSuchObject);
    }

    #[test]
    fn written_text_reads_back() {
        let r = Recording::parse(SAMPLE);
        let again = Recording::parse(&r.to_snmprec());
        assert_eq!(again.objects, r.objects);
        assert_eq!(again.skipped, 0);
    }

    fn value_strategy() -> impl Strategy<Value = SnmpValue> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(SnmpValue::Integer),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(SnmpValue::OctetString),
            any::<u32>().prop_map(SnmpValue::Unsigned32),
            any::<u32>().prop_map(SnmpValue::Counter32),
            any::<u32>().prop_map(SnmpValue::TimeTicks),
            any::<u64>().prop_map(SnmpValue::Counter64),
            any::<[u8; 4]>().prop_map(SnmpValue::IpAddress),
            proptest::collection::vec(0u32..100_000, 1..8)
                .prop_map(|a| SnmpValue::ObjectId(ObjectId(a))),
        ]
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "[ -~\n|x:]{0,300}") {
            let _ = Recording::parse(&s);
        }

        #[test]
        fn any_recording_roundtrips(
            objs in proptest::collection::btree_map(
                proptest::collection::vec(0u32..50, 2..8).prop_map(ObjectId),
                value_strategy(),
                0..20,
            )
        ) {
            let r = Recording::from_objects(objs.clone());
            let back = Recording::parse(&r.to_snmprec());
            proptest::prop_assert_eq!(back.objects, objs);
        }
    }
}
