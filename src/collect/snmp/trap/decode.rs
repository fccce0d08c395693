//! Datagram → notification: SNMPv1/v2c/v3 decoding, community and user checks, the trap's
//! fields and tags, and the Response that answers an inform. Pure (no I/O).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use snmp2::{AsnReader, MessageType, Pdu};

use crate::collect::snmp::client::Endpoint;
use crate::collect::snmp::config::{split_host_port, SnmpVersion, TargetConfig};
use crate::collect::snmp::value::{ObjectId, SnmpValue};
use crate::model::{FieldValue, Sample, SeriesKey, TagSet};

use super::config::{TrapConfig, TrapError, TrapUser};
use super::names::{trap_name, v1_trap_oid, CLEARS};

const SYS_UPTIME_0: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
const SNMP_TRAP_OID_0: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];

/// Sending SNMPv3 engines remembered; beyond this the cache starts over (keys are re-derived).
const MAX_V3_ENGINES: usize = 10_000;

impl TrapUser {
    /// The user as a v3 target, so credentials are checked and turned into snmp2 security
    /// exactly as for polling.
    fn as_target(&self) -> TargetConfig {
        let mut t = TargetConfig::v2c(&format!("[snmp.traps] user {}", self.name), "0.0.0.0", "");
        t.community = None;
        t.version = SnmpVersion::V3;
        t.user = Some(self.name.clone());
        t.security_level = self.security_level;
        t.auth_protocol = self.auth_protocol;
        t.auth_password = self.auth_password.clone();
        t.priv_protocol = self.priv_protocol;
        t.priv_password = self.priv_password.clone();
        t
    }
}

/// Why a datagram was dropped; the `reason` label of the rejection counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not decodable as an SNMP message.
    Malformed(String),
    /// A v1/v2c notification with a community not in `communities`.
    Community,
    /// A well-formed SNMP message that is not a notification (e.g. a GET sent to the port).
    NotNotification(&'static str),
    /// A v2c trap/inform without snmpTrapOID.0.
    NoTrapOid,
    /// SNMPv3 from a user not in `[[snmp.traps.user]]`.
    V3UnknownUser,
    /// SNMPv3 authentication or decryption failed.
    V3Auth(String),
    /// SNMPv3 informs need an authoritative engine of our own; not supported.
    V3Inform,
}

impl Reject {
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Malformed(_) => "malformed",
            Reject::Community => "community",
            Reject::NotNotification(_) => "not_notification",
            Reject::NoTrapOid => "no_trap_oid",
            Reject::V3UnknownUser => "v3_unknown_user",
            Reject::V3Auth(_) => "v3_auth",
            Reject::V3Inform => "v3_inform",
        }
    }

    pub(super) fn detail(&self) -> String {
        match self {
            Reject::Malformed(d) => format!("undecodable SNMP datagram: {d}"),
            Reject::Community => {
                "community not in [snmp.traps] communities (add it there if the sender is legitimate)".into()
            }
            Reject::NotNotification(t) => format!("{t} PDU is not a trap or inform"),
            Reject::NoTrapOid => "v2c notification without snmpTrapOID.0".into(),
            Reject::V3UnknownUser => {
                "SNMPv3 trap from a user not in [[snmp.traps.user]]".into()
            }
            Reject::V3Auth(d) => format!(
                "SNMPv3 trap failed authentication/decryption ({d}); check the user's protocols and passwords"
            ),
            Reject::V3Inform => {
                "SNMPv3 informs are not supported; send v3 traps or v2c informs".into()
            }
        }
    }
}

/// A decoded, accepted notification.
#[derive(Debug)]
pub struct Notification {
    pub sample: Sample,
    /// For a trap that ends a condition another trap started (APC powerRestored ends
    /// upsOnBattery): a sample on the starting trap's series with this trap's `event`, so an
    /// `equals` rule on that series resolves. `count` = 0: it is not a second trap.
    pub clears: Option<Sample>,
    /// Bytes to send back to the sender (the Response to an inform).
    pub response: Option<Vec<u8>>,
    /// Request id of an inform, for duplicate detection.
    pub inform_id: Option<i32>,
}

/// Turns datagrams into samples. Pure (no I/O), so it can be tested and fuzzed directly.
pub struct TrapDecoder {
    communities: Vec<Vec<u8>>,
    measurement: Arc<str>,
    max_chars: usize,
    /// Source IP → target name, for addresses that belong to exactly one target.
    devices: HashMap<IpAddr, Arc<str>>,
    /// SNMPv3 user name → security template (no engine state).
    v3_users: HashMap<Vec<u8>, snmp2::v3::Security>,
    /// (sending engine ID, user) → security with that engine's localized keys.
    v3_engines: HashMap<(Vec<u8>, Vec<u8>), snmp2::v3::Security>,
}

impl TrapDecoder {
    pub fn new(cfg: &TrapConfig, targets: &[TargetConfig]) -> Result<TrapDecoder, TrapError> {
        cfg.validate()?;
        let communities = cfg
            .communities
            .iter()
            .map(|c| c.resolve().map(String::into_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let mut by_ip: HashMap<IpAddr, Option<Arc<str>>> = HashMap::new();
        for t in targets {
            let Ok((host, _)) = split_host_port(&t.address) else {
                continue;
            };
            // Host names are not resolved: a DNS lookup per target at startup would make
            // startup time depend on DNS, and a wrong device tag is worse than none.
            let Ok(ip) = host.parse::<IpAddr>() else {
                continue;
            };
            by_ip
                .entry(ip)
                .and_modify(|v| *v = None)
                .or_insert_with(|| Some(Arc::from(t.name.as_str())));
        }
        let devices = by_ip
            .into_iter()
            .filter_map(|(ip, n)| Some((ip, n?)))
            .collect();
        let mut v3_users = HashMap::new();
        for u in &cfg.users {
            let ep = Endpoint::new(&u.as_target(), Duration::from_secs(1), 0, 1, 1)
                .map_err(|e| TrapError::Config(format!("user {:?}: {e}", u.name)))?;
            if let Some(sec) = ep.security() {
                v3_users.insert(u.name.clone().into_bytes(), sec.clone());
            }
        }
        Ok(TrapDecoder {
            communities,
            measurement: Arc::from(cfg.measurement.as_str()),
            max_chars: cfg.max_varbinds_chars,
            devices,
            v3_users,
            v3_engines: HashMap::new(),
        })
    }

    /// Decodes one datagram from `from`, received at `now_ns`. `&mut` because SNMPv3 engine
    /// state (localized keys per sending engine) is learned and cached here.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        now_ns: i64,
    ) -> Result<Notification, Reject> {
        let parsed = if message_version(bytes) == Some(3) {
            self.parse_v3(bytes)?
        } else {
            self.parse_community(bytes)?
        };
        let n = self.build(parsed, from, now_ns)?;
        Ok(n)
    }

    fn parse_community(&self, bytes: &[u8]) -> Result<Parsed, Reject> {
        let pdu = Pdu::from_bytes(bytes).map_err(|e| Reject::Malformed(e.to_string()))?;
        let version = match pdu.version() {
            Ok(snmp2::Version::V1) => "1",
            Ok(snmp2::Version::V2C) => "2c",
            Ok(snmp2::Version::V3) => return Err(Reject::Malformed("unexpected SNMPv3".into())),
            Err(e) => return Err(Reject::Malformed(e.to_string())),
        };
        check_notification(pdu.message_type)?;
        // A v1 Trap PDU inside a v2c message (or a v2 PDU in v1) is a protocol violation.
        if (version == "1") != (pdu.message_type == MessageType::TrapV1) {
            return Err(Reject::Malformed(format!(
                "{:?} PDU in an SNMPv{version} message",
                pdu.message_type
            )));
        }
        if !self.communities.iter().any(|c| c == pdu.community) {
            return Err(Reject::Community);
        }
        let v1 = match &pdu.v1_trap_info {
            Some(info) => Some(V1Info {
                enterprise: ObjectId::from_snmp2(&info.enterprise).ok_or_else(|| {
                    Reject::Malformed("v1 trap enterprise OID is not decodable".into())
                })?,
                agent_addr: info.agent_addr,
                generic: info.generic_trap,
                specific: info.specific_trap,
                timestamp: info.timestamp,
            }),
            None => None,
        };
        let response =
            if pdu.message_type == MessageType::InformRequest {
                let mut resp = pdu.clone();
                resp.message_type = MessageType::Response;
                resp.error_status = 0;
                resp.error_index = 0;
                Some(resp.to_bytes().map_err(|e| {
                    Reject::Malformed(format!("cannot encode inform response: {e}"))
                })?)
            } else {
                None
            };
        Ok(Parsed {
            version,
            req_id: pdu.req_id,
            varbinds: owned_varbinds(&pdu),
            v1,
            response,
        })
    }

    fn parse_v3(&mut self, bytes: &[u8]) -> Result<Parsed, Reject> {
        let (engine_id, user) = v3_engine_and_user(bytes)
            .ok_or_else(|| Reject::Malformed("undecodable SNMPv3 header".into()))?;
        let key = (engine_id, user);
        let mut sec = match self.v3_engines.get(&key) {
            Some(s) => s.clone(),
            None => self
                .v3_users
                .get(&key.1)
                .cloned()
                .ok_or(Reject::V3UnknownUser)?,
        };
        // snmp2 zeroes the authentication parameters in place while checking the HMAC.
        let copy = bytes.to_vec();
        let parsed = {
            let pdu =
                Pdu::from_bytes_with_security(&copy, Some(&mut sec)).map_err(|e| match e {
                    snmp2::Error::AuthFailure(kind) => Reject::V3Auth(kind.to_string()),
                    snmp2::Error::Crypto(c) => Reject::V3Auth(c),
                    other => Reject::Malformed(other.to_string()),
                })?;
            match pdu.message_type {
                MessageType::Trap => {}
                MessageType::InformRequest => return Err(Reject::V3Inform),
                other => check_notification(other)?,
            }
            Parsed {
                version: "3",
                req_id: pdu.req_id,
                varbinds: owned_varbinds(&pdu),
                v1: None,
                response: None,
            }
        };
        // Only authenticated senders are remembered, so forged engine IDs cannot fill the map.
        if self.v3_engines.len() >= MAX_V3_ENGINES {
            self.v3_engines.clear();
        }
        self.v3_engines.insert(key, sec);
        Ok(parsed)
    }

    fn build(&self, p: Parsed, from: SocketAddr, now_ns: i64) -> Result<Notification, Reject> {
        let mut source_ip = from.ip();
        let (trap_oid, uptime_ticks, payload): (
            ObjectId,
            Option<u32>,
            Vec<&(ObjectId, SnmpValue)>,
        ) = match &p.v1 {
            Some(info) => {
                if !info.agent_addr.is_unspecified() {
                    source_ip = info.agent_addr;
                }
                (
                    v1_trap_oid(&info.enterprise, info.generic, info.specific),
                    Some(info.timestamp),
                    p.varbinds.iter().collect(),
                )
            }
            None => {
                let oid = p
                    .varbinds
                    .iter()
                    .find_map(|(o, v)| match v {
                        SnmpValue::ObjectId(t) if o.0 == SNMP_TRAP_OID_0 => Some(t.clone()),
                        _ => None,
                    })
                    .ok_or(Reject::NoTrapOid)?;
                let uptime = p.varbinds.iter().find_map(|(o, v)| match v {
                    SnmpValue::TimeTicks(t) if o.0 == SYS_UPTIME_0 => Some(*t),
                    _ => None,
                });
                let payload = p
                    .varbinds
                    .iter()
                    .filter(|(o, _)| o.0 != SYS_UPTIME_0 && o.0 != SNMP_TRAP_OID_0)
                    .collect();
                (oid, uptime, payload)
            }
        };

        let name = trap_name(&trap_oid);
        let oid_text = trap_oid.to_string();
        let source = source_ip.to_string();
        // The agent-addr of a v1 trap names the device even when a relay forwarded it.
        let device = self
            .devices
            .get(&source_ip)
            .or_else(|| self.devices.get(&from.ip()));
        let varbinds: Arc<str> = format_varbinds(&payload, self.max_chars).into();
        let event: Arc<str> = name.unwrap_or(&oid_text).into();
        let make = |oid: &str, name: Option<&str>, count: i64| {
            let mut tags: Vec<(&str, &str)> = vec![("source", &source), ("trap_oid", oid)];
            if let Some(n) = name {
                tags.push(("trap_name", n));
            }
            if let Some(d) = device {
                tags.push(("device", d));
            }
            let mut sample = Sample::new(
                SeriesKey::new(self.measurement.clone(), TagSet::new(tags)),
                now_ns,
            )
            .with_field("event", FieldValue::Str(event.clone()))
            .with_field("varbinds", FieldValue::Str(varbinds.clone()))
            .with_field("count", FieldValue::Int(count));
            if let Some(t) = uptime_ticks {
                sample = sample.with_field("uptime_s", FieldValue::Float(f64::from(t) / 100.0));
            }
            sample
        };
        let sample = make(&oid_text, name, 1);
        let clears = CLEARS
            .iter()
            .find(|(by, _, _)| by == &trap_oid.0.as_slice())
            .map(|(_, oid, cleared)| make(&ObjectId(oid.to_vec()).to_string(), Some(cleared), 0));
        let inform_id = p.response.is_some().then_some(p.req_id);
        metrics::counter!("sitewatch_snmp_traps_received_total", "version" => p.version)
            .increment(1);
        Ok(Notification {
            sample,
            clears,
            response: p.response,
            inform_id,
        })
    }
}

/// A notification taken out of snmp2's borrowed `Pdu`.
struct Parsed {
    version: &'static str,
    req_id: i32,
    varbinds: Vec<(ObjectId, SnmpValue)>,
    v1: Option<V1Info>,
    response: Option<Vec<u8>>,
}

struct V1Info {
    enterprise: ObjectId,
    agent_addr: IpAddr,
    generic: i64,
    specific: i64,
    timestamp: u32,
}

fn owned_varbinds(pdu: &Pdu<'_>) -> Vec<(ObjectId, SnmpValue)> {
    pdu.varbinds
        .clone()
        .map(|(o, v)| {
            (
                ObjectId::from_snmp2(&o).unwrap_or_default(),
                SnmpValue::from_snmp2(&v),
            )
        })
        .collect()
}

fn check_notification(t: MessageType) -> Result<(), Reject> {
    Err(Reject::NotNotification(match t {
        MessageType::TrapV1 | MessageType::Trap | MessageType::InformRequest => return Ok(()),
        MessageType::GetRequest => "GetRequest",
        MessageType::GetNextRequest => "GetNextRequest",
        MessageType::GetBulkRequest => "GetBulkRequest",
        MessageType::SetRequest => "SetRequest",
        MessageType::Response => "Response",
        MessageType::Report => "Report",
    }))
}

/// The msgVersion of an SNMP message, without decoding the rest.
fn message_version(bytes: &[u8]) -> Option<i64> {
    let seq = AsnReader::from_bytes(bytes).read_raw(0x30).ok()?;
    AsnReader::from_bytes(seq).read_asn_integer().ok()
}

/// msgAuthoritativeEngineID and msgUserName of an SNMPv3 message (RFC 3412 §6, RFC 3414
/// §2.4), read before decryption to pick the security state.
fn v3_engine_and_user(bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let seq = AsnReader::from_bytes(bytes).read_raw(0x30).ok()?;
    let mut msg = AsnReader::from_bytes(seq);
    msg.read_asn_integer().ok()?;
    msg.read_raw(0x30).ok()?;
    let params = msg.read_asn_octetstring().ok()?;
    let usm = AsnReader::from_bytes(params).read_raw(0x30).ok()?;
    let mut usm = AsnReader::from_bytes(usm);
    let engine = usm.read_asn_octetstring().ok()?;
    usm.read_asn_integer().ok()?;
    usm.read_asn_integer().ok()?;
    let user = usm.read_asn_octetstring().ok()?;
    Some((engine.to_vec(), user.to_vec()))
}

/// `oid=value; oid=value`, cut at `max_chars` with a note of how many varbinds were left out.
fn format_varbinds(vbs: &[&(ObjectId, SnmpValue)], max_chars: usize) -> String {
    let mut out = String::new();
    for (i, (oid, value)) in vbs.iter().enumerate() {
        let item = format!(
            "{}{oid}={}",
            if i > 0 { "; " } else { "" },
            value_text(value)
        );
        if out.chars().count() + item.chars().count() > max_chars {
            let note = format!(" …(+{} more)", vbs.len() - i);
            let room = max_chars.saturating_sub(note.chars().count());
            let mut cut: String = out.chars().take(room).collect();
            if cut.len() < out.len() || i == 0 {
                // Keep whatever part of this varbind fits; it usually carries the message.
                cut.extend(item.chars().take(room.saturating_sub(cut.chars().count())));
            }
            cut.push_str(&note);
            return cut;
        }
        out.push_str(&item);
    }
    out
}

fn value_text(v: &SnmpValue) -> String {
    match v {
        SnmpValue::OctetString(s) | SnmpValue::Opaque(s) => {
            let printable = s
                .iter()
                .all(|&b| b == b'\t' || b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b))
                || std::str::from_utf8(s).is_ok_and(|t| !t.chars().any(char::is_control));
            if printable {
                let t = String::from_utf8_lossy(s);
                format!("\"{}\"", t.trim_end_matches('\0').replace('"', "'"))
            } else {
                // MAC addresses, DateAndTime and other binary strings.
                let hex: Vec<String> = s.iter().map(|b| format!("{b:02x}")).collect();
                format!("0x{}", hex.join(""))
            }
        }
        SnmpValue::ObjectId(o) => o.to_string(),
        SnmpValue::IpAddress(a) => format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]),
        SnmpValue::Integer(i) => i.to_string(),
        SnmpValue::Counter32(c) | SnmpValue::Unsigned32(c) | SnmpValue::TimeTicks(c) => {
            c.to_string()
        }
        SnmpValue::Counter64(c) => c.to_string(),
        SnmpValue::Boolean(b) => b.to_string(),
        SnmpValue::Null => "null".into(),
        SnmpValue::NoSuchObject => "noSuchObject".into(),
        SnmpValue::NoSuchInstance => "noSuchInstance".into(),
        SnmpValue::EndOfMibView => "endOfMibView".into(),
        SnmpValue::Unsupported => "?".into(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::time::Instant;

    fn decoder() -> TrapDecoder {
        let cfg = TrapConfig {
            communities: vec![Secret::Inline("trapc".into())],
            ..TrapConfig::default()
        };
        let mut ups = TargetConfig::v2c("ups-a1", "10.0.0.10", "x");
        ups.profiles.clear();
        // Two targets on one IP (different ports): ambiguous, so no device tag.
        let a = TargetConfig::v2c("a", "10.0.0.20:161", "x");
        let b = TargetConfig::v2c("b", "10.0.0.20:1161", "x");
        TrapDecoder::new(&cfg, &[ups, a, b]).unwrap()
    }

    fn oid(s: &str) -> ObjectId {
        ObjectId::parse(s).unwrap()
    }

    fn snmp2_oid(o: &ObjectId) -> snmp2::Oid<'static> {
        let arcs: Vec<u64> = o.0.iter().map(|&a| u64::from(a)).collect();
        snmp2::Oid::from(&arcs).unwrap()
    }

    /// A v2c message with PDU tag `kind` (0xa7 trap, 0xa6 inform, 0xa0 get).
    fn v2c_bytes(
        kind: u8,
        community: &[u8],
        req_id: i32,
        vbs: &[(ObjectId, snmp2::Value<'_>)],
    ) -> Vec<u8> {
        let oids: Vec<snmp2::Oid<'static>> = vbs.iter().map(|(o, _)| snmp2_oid(o)).collect();
        let values: Vec<(&snmp2::Oid<'_>, &snmp2::Value<'_>)> =
            oids.iter().zip(vbs.iter().map(|(_, v)| v)).collect();
        let mut pdu = tlv(0x02, &int_bytes(i64::from(req_id)));
        pdu.extend(tlv(0x02, &[0]));
        pdu.extend(tlv(0x02, &[0]));
        pdu.extend(tlv(0x30, &encode_varbinds(&values)));
        let mut msg = tlv(0x02, &[1]);
        msg.extend(tlv(0x04, community));
        msg.extend(tlv(kind, &pdu));
        tlv(0x30, &msg)
    }

    /// Minimal BER for a varbind list (content only, without the outer SEQUENCE header),
    /// as `Varbinds::from_bytes` expects.
    fn encode_varbinds(values: &[(&snmp2::Oid<'_>, &snmp2::Value<'_>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (o, v) in values {
            let mut inner = tlv(0x06, o.as_bytes());
            inner.extend(match *v {
                snmp2::Value::Integer(i) => tlv(0x02, &int_bytes(*i)),
                snmp2::Value::OctetString(s) => tlv(0x04, s),
                snmp2::Value::ObjectIdentifier(x) => tlv(0x06, x.as_bytes()),
                snmp2::Value::Timeticks(t) => tlv(0x43, &int_bytes(i64::from(*t))),
                snmp2::Value::IpAddress(a) => tlv(0x40, a),
                snmp2::Value::Counter32(c) => tlv(0x41, &int_bytes(i64::from(*c))),
                _ => vec![0x05, 0x00],
            });
            out.extend(tlv(0x30, &inner));
        }
        out
    }

    fn int_bytes(i: i64) -> Vec<u8> {
        let b = i.to_be_bytes();
        let mut start = 0;
        while start < 7
            && ((b[start] == 0 && b[start + 1] & 0x80 == 0)
                || (b[start] == 0xff && b[start + 1] & 0x80 != 0))
        {
            start += 1;
        }
        b[start..].to_vec()
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = content.len();
        if n < 128 {
            v.push(n as u8);
        } else if n < 256 {
            v.extend([0x81, n as u8]);
        } else {
            v.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(content);
        v
    }

    fn v1_trap_bytes(
        community: &[u8],
        enterprise: &ObjectId,
        agent: [u8; 4],
        generic: i64,
        specific: i64,
        ticks: u32,
    ) -> Vec<u8> {
        let mut pdu = tlv(0x06, snmp2_oid(enterprise).as_bytes());
        pdu.extend(tlv(0x40, &agent));
        pdu.extend(tlv(0x02, &int_bytes(generic)));
        pdu.extend(tlv(0x02, &int_bytes(specific)));
        pdu.extend(tlv(0x43, &int_bytes(i64::from(ticks))));
        let msg_oid = snmp2_oid(&oid("1.3.6.1.4.1.318.2.3.10.0"));
        let text = snmp2::Value::OctetString(
            b"UPS: On battery power in response to an input power problem.",
        );
        let vb = encode_varbinds(&[(&msg_oid, &text)]);
        pdu.extend(tlv(0x30, &vb));
        let mut msg = tlv(0x02, &[0]);
        msg.extend(tlv(0x04, community));
        msg.extend(tlv(0xa4, &pdu));
        tlv(0x30, &msg)
    }

    pub(crate) fn from() -> SocketAddr {
        "10.0.0.10:50000".parse().unwrap()
    }

    #[test]
    fn v1_enterprise_trap_maps_per_rfc3584() {
        let mut d = decoder();
        let bytes = v1_trap_bytes(
            b"trapc",
            &oid("1.3.6.1.4.1.318"),
            [10, 0, 0, 10],
            6,
            5,
            12_345,
        );
        let n = d
            .decode(&bytes, "192.0.2.1:162".parse().unwrap(), 7)
            .unwrap();
        let s = &n.sample;
        assert_eq!(s.series.measurement.as_ref(), "snmp_traps");
        assert_eq!(s.series.tags.get("trap_oid"), Some("1.3.6.1.4.1.318.0.5"));
        assert_eq!(s.series.tags.get("trap_name"), Some("upsOnBattery"));
        // agent-addr wins over the UDP sender (a relay) for source and device.
        assert_eq!(s.series.tags.get("source"), Some("10.0.0.10"));
        assert_eq!(s.series.tags.get("device"), Some("ups-a1"));
        assert_eq!(
            s.field("event"),
            Some(&FieldValue::Str("upsOnBattery".into()))
        );
        assert_eq!(s.field("uptime_s"), Some(&FieldValue::Float(123.45)));
        assert_eq!(s.field("count"), Some(&FieldValue::Int(1)));
        assert_eq!(s.timestamp_ns, 7);
        let FieldValue::Str(v) = s.field("varbinds").unwrap() else {
            panic!()
        };
        assert!(
            v.starts_with("1.3.6.1.4.1.318.2.3.10.0=\"UPS: On battery"),
            "{v}"
        );
        assert!(n.response.is_none());
    }

    #[test]
    fn power_restored_clears_on_battery_series() {
        let mut d = decoder();
        let bytes = v1_trap_bytes(b"trapc", &oid("1.3.6.1.4.1.318"), [10, 0, 0, 10], 6, 9, 1);
        let n = d.decode(&bytes, from(), 5).unwrap();
        assert_eq!(n.sample.series.tags.get("trap_name"), Some("powerRestored"));
        let c = n.clears.expect("powerRestored clears upsOnBattery");
        assert_eq!(c.series.tags.get("trap_oid"), Some("1.3.6.1.4.1.318.0.5"));
        assert_eq!(c.series.tags.get("trap_name"), Some("upsOnBattery"));
        assert_eq!(c.series.tags.get("device"), Some("ups-a1"));
        assert_eq!(
            c.field("event"),
            Some(&FieldValue::Str("powerRestored".into()))
        );
        assert_eq!(c.field("count"), Some(&FieldValue::Int(0)));
        let on_batt = v1_trap_bytes(b"trapc", &oid("1.3.6.1.4.1.318"), [10, 0, 0, 10], 6, 5, 1);
        let n = d.decode(&on_batt, from(), 5).unwrap();
        assert!(n.clears.is_none());
        // Same series as the clearing sample, so a rule on it sees both.
        assert_eq!(n.sample.series, c.series);
    }

    #[test]
    fn v1_generic_traps_map_to_snmp_traps() {
        assert_eq!(
            v1_trap_oid(&oid("1.3.6.1.4.1.9"), 0, 0).to_string(),
            "1.3.6.1.6.3.1.1.5.1"
        );
        assert_eq!(
            v1_trap_oid(&oid("1.3.6.1.4.1.9"), 2, 0).to_string(),
            "1.3.6.1.6.3.1.1.5.3"
        );
        assert_eq!(
            trap_name(&v1_trap_oid(&oid("1.3.6.1.4.1.9"), 3, 0)),
            Some("linkUp")
        );
        assert_eq!(
            v1_trap_oid(&oid("1.3.6.1.4.1.318"), 6, 9).to_string(),
            "1.3.6.1.4.1.318.0.9"
        );
        assert_eq!(
            trap_name(&oid("1.3.6.1.4.1.318.0.9")),
            Some("powerRestored")
        );
    }

    pub(crate) fn ups_on_battery_v2c(kind: u8, community: &[u8]) -> Vec<u8> {
        let trap = snmp2_oid(&oid("1.3.6.1.2.1.33.2.1"));
        v2c_bytes(
            kind,
            community,
            4242,
            &[
                (oid("1.3.6.1.2.1.1.3.0"), snmp2::Value::Timeticks(500)),
                (
                    oid("1.3.6.1.6.3.1.1.4.1.0"),
                    snmp2::Value::ObjectIdentifier(trap),
                ),
                (oid("1.3.6.1.2.1.33.1.2.3.0"), snmp2::Value::Integer(42)),
                (oid("1.3.6.1.2.1.33.1.2.2.0"), snmp2::Value::Integer(-1)),
                (
                    oid("1.3.6.1.2.1.1.5.0"),
                    snmp2::Value::OctetString(&[0, 1, 0xfe]),
                ),
            ],
        )
    }

    #[test]
    fn v2c_trap_and_inform() {
        let mut d = decoder();
        let n = d
            .decode(&ups_on_battery_v2c(0xa7, b"trapc"), from(), 1)
            .unwrap();
        let s = &n.sample;
        assert_eq!(s.series.tags.get("trap_name"), Some("upsTrapOnBattery"));
        assert_eq!(s.series.tags.get("device"), Some("ups-a1"));
        assert_eq!(s.field("uptime_s"), Some(&FieldValue::Float(5.0)));
        assert_eq!(
            s.field("varbinds"),
            Some(&FieldValue::Str(
                "1.3.6.1.2.1.33.1.2.3.0=42; 1.3.6.1.2.1.33.1.2.2.0=-1; 1.3.6.1.2.1.1.5.0=0x0001fe"
                    .into()
            ))
        );
        assert!(n.response.is_none());

        let n = d
            .decode(&ups_on_battery_v2c(0xa6, b"trapc"), from(), 1)
            .unwrap();
        assert_eq!(n.inform_id, Some(4242));
        let resp = n.response.unwrap();
        let r = Pdu::from_bytes(&resp).unwrap();
        assert_eq!(r.message_type, MessageType::Response);
        assert_eq!(r.req_id, 4242);
        assert_eq!(r.community, b"trapc");
        assert_eq!(r.error_status, 0);
        assert_eq!(r.varbinds.clone().count(), 5);
    }

    #[test]
    fn rejects_with_reasons() {
        let mut d = decoder();
        let wrong = d.decode(&ups_on_battery_v2c(0xa7, b"nope"), from(), 1);
        assert_eq!(wrong.unwrap_err(), Reject::Community);
        let get = d.decode(&v2c_bytes(0xa0, b"trapc", 1, &[]), from(), 1);
        assert_eq!(get.unwrap_err().reason(), "not_notification");
        let no_oid = v2c_bytes(
            0xa7,
            b"trapc",
            1,
            &[(oid("1.3.6.1.2.1.1.3.0"), snmp2::Value::Timeticks(1))],
        );
        assert_eq!(d.decode(&no_oid, from(), 1).unwrap_err(), Reject::NoTrapOid);
        assert_eq!(
            d.decode(b"\x30\x03\x02\x01", from(), 1)
                .unwrap_err()
                .reason(),
            "malformed"
        );
        // Ambiguous address (two targets): no device tag.
        let n = d
            .decode(
                &ups_on_battery_v2c(0xa7, b"trapc"),
                "10.0.0.20:9".parse().unwrap(),
                1,
            )
            .unwrap();
        assert_eq!(n.sample.series.tags.get("device"), None);
        assert_eq!(n.sample.series.tags.get("source"), Some("10.0.0.20"));
    }

    #[test]
    fn varbinds_are_bounded() {
        let long = vec![b'x'; 5000];
        let o = oid("1.3.6.1.4.1.1.1");
        let vbs: Vec<(ObjectId, SnmpValue)> = (0..50)
            .map(|_| (o.clone(), SnmpValue::OctetString(long.clone())))
            .collect();
        let refs: Vec<&(ObjectId, SnmpValue)> = vbs.iter().collect();
        let s = format_varbinds(&refs, 100);
        assert!(s.chars().count() <= 100, "{} chars", s.chars().count());
        assert!(s.ends_with("…(+50 more)"), "{s}");
        assert!(s.starts_with("1.3.6.1.4.1.1.1=\"xxx"), "{s}");
        let short: Vec<(ObjectId, SnmpValue)> = vec![(o.clone(), SnmpValue::Integer(1)); 3];
        let refs: Vec<&(ObjectId, SnmpValue)> = short.iter().collect();
        assert_eq!(
            format_varbinds(&refs, 100),
            "1.3.6.1.4.1.1.1=1; 1.3.6.1.4.1.1.1=1; 1.3.6.1.4.1.1.1=1"
        );
    }

    /// Decode cost of a typical v2c trap, printed; `cargo test --release --lib decode_speed
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn decode_speed() {
        let mut d = decoder();
        let bytes = ups_on_battery_v2c(0xa7, b"trapc");
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            d.decode(&bytes, from(), 1).unwrap();
        }
        let per = t.elapsed() / n;
        eprintln!("decode: {per:?} per v2c trap ({} bytes)", bytes.len());
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = decoder().decode(&bytes, from(), 0);
        }

        /// Mutated real notifications reach deeper into the decoder than random bytes.
        #[test]
        fn decoder_never_panics_on_mutations(pos in 0usize..400, byte in proptest::num::u8::ANY, cut in 0usize..400) {
            for mut b in [
                ups_on_battery_v2c(0xa6, b"trapc"),
                v1_trap_bytes(b"trapc", &oid("1.3.6.1.4.1.318"), [10, 0, 0, 10], 6, 5, 1),
            ] {
                let i = pos % b.len();
                b[i] = byte;
                b.truncate(cut.max(1));
                let _ = decoder().decode(&b, from(), 0);
            }
        }
    }
}
