//! SNMP trap and inform receiver (`[snmp.traps]`).
//!
//! ```toml
//! [snmp.traps]
//! listen = "127.0.0.1:9162"     # ops: "0.0.0.0:162" (needs CAP_NET_BIND_SERVICE or root)
//! communities = [{ env = "SITEWATCH_TRAP_COMMUNITY" }, "public"]
//! measurement = "snmp_traps"
//! max_varbinds_chars = 2048
//! receive_buffer = "4MiB"       # SO_RCVBUF: what a burst can queue in the kernel
//! ```
//!
//! Every accepted SNMPv1 Trap, SNMPv2c Trap and InformRequest becomes one [`Sample`] at
//! receive time:
//!
//! - tags: `source` (v1 agent-addr, else the UDP sender), `trap_oid` (v1 traps mapped to the
//!   SNMPv2 OID per RFC 3584 §3.1), `trap_name` for well-known traps, and `device` when the
//!   source is the address of exactly one configured `[[snmp.target]]`;
//! - fields: `event` (the trap name, or its OID when unknown, so a rule can say
//!   `equals = { critical = "upsTrapOnBattery" }`), `varbinds` (`oid=value; ...`, bounded by
//!   `max_varbinds_chars`), `uptime_s` (the agent's sysUpTime) and `count` = 1.
//!
//! A trap is an edge, not a level, so a rule on `event` fires when the trap arrives and
//! resolves when its series next carries another event. Where a later trap ends the
//! condition for the whole device (APC `powerRestored` after `upsOnBattery`), the listener
//! also writes that later event onto the first trap's series (`count` = 0), so
//! `equals = { critical = "upsOnBattery" }` resolves on power return. Other trap alarms stay
//! firing until acknowledged elsewhere; pair them with a polled value (e.g. UPS-MIB
//! `upsOutputSource`) where one exists.
//!
//! An inform is answered with a Response echoing its request id and varbinds once it is
//! decoded and accepted, so the sender stops retrying; an inform repeated by the sender
//! (same source and request id within a minute) is answered again but not recorded twice.
//!
//! Bad input never stops the listener: a wrong community, an undecodable datagram or a PDU
//! that is not a notification is counted in
//! `sitewatch_snmp_traps_rejected_total{reason}`, logged at most once per 10 s per reason,
//! and dropped. Accepted traps count in `sitewatch_snmp_traps_received_total{version}`.
//!
//! # Bursts
//!
//! A power event makes every UPS, PDU and sensor on a feed send at once. Three things keep
//! such a burst whole:
//!
//! - The socket asks the kernel for a `receive_buffer` (SO_RCVBUF, default 4 MiB) instead of
//!   the system default (`net.core.rmem_default`, usually 208 KiB: about 250 small traps). The
//!   size granted is logged at start and shown as `sitewatch_snmp_trap_receive_buffer_bytes`;
//!   Linux caps the request at `net.core.rmem_max` and reports twice the value it accepted
//!   (socket(7)). A privileged process (CAP_NET_ADMIN, e.g. root) then gets the full size
//!   with SO_RCVBUFFORCE; otherwise a warning names `net.core.rmem_max`, the limit to raise.
//! - A dedicated thread (`sitewatch-traps`, not a tokio worker) does nothing but `recv` into
//!   memory, stamping each datagram with its receive time. Decoding, inform answers and the
//!   hand-off to the pipeline run in the listener's task, so neither slow decoding (SNMPv3
//!   key checks) nor a pipeline that is momentarily full stops the reading. The queue between
//!   them holds up to [`QUEUE_BYTES`]; only when it is full does the reader wait, and the
//!   kernel buffer takes the rest.
//! - Datagrams the kernel still had to drop are counted in
//!   `sitewatch_snmp_trap_kernel_drops_total` and logged. The count is the socket's `drops`
//!   column in `/proc/net/udp` (or `udp6`), found by the socket's inode and read off the
//!   receive path (`spawn_blocking`) every 5 s and shortly after each burst. It is the same
//!   kernel counter `SO_RXQ_OVFL` reports, but `SO_RXQ_OVFL` only delivers it as ancillary
//!   data of the *next* datagram: drops at the end of a burst would stay invisible until
//!   another trap arrives, and it would need `recvmsg` with control-message parsing on every
//!   datagram. Linux only; elsewhere the counter stays 0.
//!
//! SNMPv3 traps are accepted from the users listed as `[[snmp.traps.user]]` (authNoPriv or
//! authPriv; several users are fine). Keys are localized per sending engine the first time
//! it authenticates and cached. There is no replay protection for v3 traps (RFC 3414
//! timeliness applies to the authoritative engine, which for a trap is the sender), and
//! v3 informs are rejected (`reason="v3_inform"`): answering them needs an authoritative
//! engine of our own.
//!
//! ```toml
//! [[snmp.traps.user]]
//! name = "trapuser"
//! security_level = "authPriv"          # default; authNoPriv also accepted
//! auth_protocol = "SHA"
//! auth_password = { env = "SITEWATCH_TRAP_AUTH" }
//! priv_protocol = "AES"
//! priv_password = { env = "SITEWATCH_TRAP_PRIV" }
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use snmp2::{AsnReader, MessageType, Pdu};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Secret, SecretError};
use crate::model::{now_ns, FieldValue, Sample, SeriesKey, TagSet};
use crate::pipeline::{Batch, BatchSender};

use super::client::{Endpoint, ObjectId, SnmpValue};
use super::config::{
    split_host_port, AuthProtocol, PrivProtocol, SecurityLevel, SnmpVersion, TargetConfig,
};

/// Default measurement of trap samples.
pub const TRAPS_MEASUREMENT: &str = "snmp_traps";

const SYS_UPTIME_0: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
const SNMP_TRAP_OID_0: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];
/// RFC 3584 §3.1: generic traps 0..=5 map to `snmpTraps.(generic + 1)`.
const SNMP_TRAPS: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 5];
/// Largest UDP payload; anything longer was truncated by the kernel and is rejected.
const MAX_DATAGRAM: usize = 65_535;
/// Traps handed downstream together when they arrive in a burst.
const MAX_BATCH: usize = 512;
const INFORM_DEDUP_WINDOW: Duration = Duration::from_secs(60);
const INFORM_DEDUP_ENTRIES: usize = 1024;
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Sending SNMPv3 engines remembered; beyond this the cache starts over (keys are re-derived).
const MAX_V3_ENGINES: usize = 10_000;
/// Datagrams (bytes, plus [`DATAGRAM_OVERHEAD`] each) read from the socket and not yet
/// decoded. Beyond it the reader thread waits and the kernel buffer fills instead.
pub const QUEUE_BYTES: usize = 32 << 20;
/// Bookkeeping counted per queued datagram, so a flood of tiny datagrams is bounded too.
const DATAGRAM_OVERHEAD: usize = 64;
/// How often the reader thread looks at the shutdown token while no trap arrives.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// How often the kernel drop counter is read, and how soon after a burst at the earliest.
const DROPS_EVERY: Duration = Duration::from_secs(5);
const DROPS_AFTER_BURST: Duration = Duration::from_secs(1);
/// Bounds of `receive_buffer`: below 64 KiB is less than one large trap; above 1 GiB does not
/// fit SO_RCVBUF's int once the kernel doubles it.
const MIN_RECEIVE_BUFFER: u64 = 64 << 10;
const MAX_RECEIVE_BUFFER: u64 = 1 << 30;
/// At shutdown, traps already read are handed on for at most this long.
const SHUTDOWN_SEND: Duration = Duration::from_secs(2);

/// Well-known notifications: OID (as SNMPv2 trap OID) → name.
const KNOWN_TRAPS: &[(&[u32], &str)] = &[
    // SNMPv2-MIB snmpTraps (RFC 3418); v1 generic traps 0..=4 map here.
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 1], "coldStart"),
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 2], "warmStart"),
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 3], "linkDown"),
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 4], "linkUp"),
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 5], "authenticationFailure"),
    // UPS-MIB (RFC 1628) upsTraps.
    (&[1, 3, 6, 1, 2, 1, 33, 2, 1], "upsTrapOnBattery"),
    (&[1, 3, 6, 1, 2, 1, 33, 2, 2], "upsTrapTestCompleted"),
    (&[1, 3, 6, 1, 2, 1, 33, 2, 3], "upsTrapAlarmEntryAdded"),
    (&[1, 3, 6, 1, 2, 1, 33, 2, 4], "upsTrapAlarmEntryRemoved"),
    // APC PowerNet-MIB SMIv1 traps (enterprise 318, mapped as enterprise.0.specific).
    (&[1, 3, 6, 1, 4, 1, 318, 0, 5], "upsOnBattery"),
    (&[1, 3, 6, 1, 4, 1, 318, 0, 7], "lowBattery"),
    (&[1, 3, 6, 1, 4, 1, 318, 0, 9], "powerRestored"),
];

/// (trap, the trap whose condition it ends, that trap's name). Only pairs that end the
/// condition for the whole device are listed: linkUp/linkDown are per interface, and UPS-MIB
/// alarm entries per alarm, which the trap series (source + trap OID) cannot tell apart.
const CLEARS: &[(&[u32], &[u32], &str)] = &[(
    &[1, 3, 6, 1, 4, 1, 318, 0, 9],
    &[1, 3, 6, 1, 4, 1, 318, 0, 5],
    "upsOnBattery",
)];

/// Name of a well-known trap OID.
pub fn trap_name(oid: &ObjectId) -> Option<&'static str> {
    KNOWN_TRAPS
        .iter()
        .find(|(o, _)| *o == oid.0.as_slice())
        .map(|(_, n)| *n)
}

/// The SNMPv2 trap OID of an SNMPv1 trap (RFC 3584 §3.1): generic 0..=5 →
/// `1.3.6.1.6.3.1.1.5.(generic+1)`, enterpriseSpecific (6) → `enterprise.0.specific`.
pub fn v1_trap_oid(enterprise: &ObjectId, generic: i64, specific: i64) -> ObjectId {
    match generic {
        0..=5 => ObjectId(
            SNMP_TRAPS
                .iter()
                .copied()
                .chain([(generic + 1) as u32])
                .collect(),
        ),
        _ => {
            // A negative or huge specific code cannot be an OID arc; keep it visible rather
            // than wrap it into a different, plausible-looking trap.
            let specific = u32::try_from(specific).unwrap_or(u32::MAX);
            enterprise.child(&[0, specific])
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrapConfig {
    /// UDP address to receive on. Loopback by default so enabling traps never opens a port
    /// to the network by accident; production usually sets `"0.0.0.0:162"`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Accepted v1/v2c communities; a notification with any other community is dropped.
    #[serde(default)]
    pub communities: Vec<Secret>,
    #[serde(default = "default_measurement")]
    pub measurement: String,
    /// Upper bound of the `varbinds` string field, in characters.
    #[serde(default = "default_max_varbinds_chars")]
    pub max_varbinds_chars: usize,
    /// SNMPv3 users whose (authenticated) traps are accepted, any number of them.
    #[serde(default, rename = "user")]
    pub users: Vec<TrapUser>,
    /// Socket receive buffer (SO_RCVBUF) to ask for: bytes, or a string such as `"4MiB"`.
    /// What the kernel holds while the reader is busy; Linux caps it at `net.core.rmem_max`.
    #[serde(default = "default_receive_buffer")]
    pub receive_buffer: ByteSize,
}

/// A size in bytes, written as an integer or as a string with a unit: `"4MiB"`, `"512 KiB"`,
/// `"8M"` (binary: K/Ki/KiB = 1024) or `"4MB"` (decimal: KB = 1000), `"65536"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"4MiB"`-style text (see [`ByteSize`]).
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a size (use bytes or e.g. \"4MiB\")"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" | "b" => 1,
            "K" | "k" | "Ki" | "KiB" | "kiB" => 1 << 10,
            "M" | "Mi" | "MiB" => 1 << 20,
            "G" | "Gi" | "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        if b >= 1 << 20 && b % (1 << 20) == 0 {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b % (1 << 10) == 0 {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a size: bytes, or a string such as \"4MiB\"")
        })? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// `[[snmp.traps.user]]`: same keys and defaults as a v3 `[[snmp.target]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrapUser {
    pub name: String,
    #[serde(default)]
    pub security_level: Option<SecurityLevel>,
    #[serde(default)]
    pub auth_protocol: Option<AuthProtocol>,
    #[serde(default)]
    pub auth_password: Option<Secret>,
    #[serde(default)]
    pub priv_protocol: Option<PrivProtocol>,
    #[serde(default)]
    pub priv_password: Option<Secret>,
}

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

impl Default for TrapConfig {
    fn default() -> Self {
        TrapConfig {
            listen: default_listen(),
            communities: Vec::new(),
            measurement: default_measurement(),
            max_varbinds_chars: default_max_varbinds_chars(),
            users: Vec::new(),
            receive_buffer: default_receive_buffer(),
        }
    }
}

/// 4 MiB: Linux doubles it to 8 MiB of accounting (socket(7)), which holds about 10,000
/// small traps (a datagram costs roughly 800 bytes of kernel memory, whatever its size)
/// while the reader thread is not scheduled: a whole data hall sending at once.
fn default_receive_buffer() -> ByteSize {
    ByteSize(4 << 20)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9162))
}
fn default_measurement() -> String {
    TRAPS_MEASUREMENT.to_string()
}
fn default_max_varbinds_chars() -> usize {
    2048
}

#[derive(Debug, thiserror::Error)]
pub enum TrapError {
    #[error("[snmp.traps] communities: {0}")]
    Secret(#[from] SecretError),
    #[error("[snmp.traps] {0}")]
    Config(String),
    #[error("[snmp.traps] cannot listen on UDP {addr}: {source}; {hint}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
}

impl TrapConfig {
    /// What serde cannot check; secrets are resolved so a missing env var fails at startup.
    pub fn validate(&self) -> Result<(), TrapError> {
        if self.communities.is_empty() && self.users.is_empty() {
            return Err(TrapError::Config(
                "communities is empty and no [[snmp.traps.user]] is set: every trap would be rejected; list the communities your devices send, e.g. communities = [{ env = \"SITEWATCH_TRAP_COMMUNITY\" }]".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for u in &self.users {
            if u.name.is_empty() || !names.insert(u.name.as_str()) {
                return Err(TrapError::Config(format!(
                    "user {:?}: names must be non-empty and unique",
                    u.name
                )));
            }
            let level = u.security_level.unwrap_or(SecurityLevel::AuthPriv);
            if level == SecurityLevel::NoAuthNoPriv {
                return Err(TrapError::Config(format!(
                    "user {:?}: noAuthNoPriv traps are not accepted (anyone could forge them); use authNoPriv or authPriv",
                    u.name
                )));
            }
            for (key, secret) in [
                ("auth_password", &u.auth_password),
                ("priv_password", &u.priv_password),
            ] {
                if key == "priv_password" && level != SecurityLevel::AuthPriv {
                    continue;
                }
                match secret {
                    None => {
                        return Err(TrapError::Config(format!(
                            "user {:?}: {key} is required for {level:?}",
                            u.name
                        )))
                    }
                    Some(s) if s.resolve()?.len() < 8 => {
                        return Err(TrapError::Config(format!(
                            "user {:?}: {key} must be at least 8 characters (RFC 3414)",
                            u.name
                        )))
                    }
                    Some(_) => {}
                }
            }
        }
        for c in &self.communities {
            if c.resolve()?.is_empty() {
                return Err(TrapError::Config("a community is empty".into()));
            }
        }
        if self.measurement.is_empty() {
            return Err(TrapError::Config("measurement is empty".into()));
        }
        if self.max_varbinds_chars < 16 {
            return Err(TrapError::Config(
                "max_varbinds_chars must be at least 16".into(),
            ));
        }
        let rb = self.receive_buffer.bytes();
        if !(MIN_RECEIVE_BUFFER..=MAX_RECEIVE_BUFFER).contains(&rb) {
            return Err(TrapError::Config(format!(
                "receive_buffer = {} is out of range: use 64KiB to 1GiB (default 4MiB)",
                self.receive_buffer
            )));
        }
        Ok(())
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

    fn detail(&self) -> String {
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

/// Logs rejections at most once per [`LOG_EVERY`] per reason, with how many were suppressed.
#[derive(Default)]
struct RateLimitedLog {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl RateLimitedLog {
    fn reject(&mut self, r: &Reject, from: SocketAddr) {
        let reason = r.reason();
        metrics::counter!("sitewatch_snmp_traps_rejected_total", "reason" => reason).increment(1);
        let now = Instant::now();
        match self.last.get_mut(reason) {
            Some((at, suppressed)) if now.duration_since(*at) < LOG_EVERY => *suppressed += 1,
            entry => {
                let suppressed = entry.map_or(0, |(_, s)| *s);
                tracing::warn!(%from, reason, suppressed, "SNMP trap dropped: {}", r.detail());
                self.last.insert(reason, (now, 0));
            }
        }
    }
}

/// Remembers recently answered informs so a retransmission is answered but not re-recorded.
#[derive(Default)]
struct InformDedup {
    seen: VecDeque<(Instant, SocketAddr, i32)>,
}

impl InformDedup {
    /// True if `(from, id)` was seen within the window; records it otherwise.
    fn seen_before(&mut self, from: SocketAddr, id: i32) -> bool {
        let now = Instant::now();
        while self
            .seen
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > INFORM_DEDUP_WINDOW)
            || self.seen.len() >= INFORM_DEDUP_ENTRIES
        {
            self.seen.pop_front();
        }
        if self.seen.iter().any(|(_, a, i)| *a == from && *i == id) {
            return true;
        }
        self.seen.push_back((now, from, id));
        false
    }
}

/// A bound trap socket and its decoder.
pub struct TrapListener {
    socket: Arc<UdpSocket>,
    decoder: TrapDecoder,
    /// SO_RCVBUF asked for, and as the kernel reports it afterwards.
    requested: u64,
    granted: u64,
}

impl TrapListener {
    /// Validates the config and binds the socket, so a taken or privileged port is a startup
    /// error rather than a silently missing alarm path. The receive buffer is sized before
    /// the bind, and what the kernel granted is logged (a warning naming `net.core.rmem_max`
    /// when it is less than `receive_buffer`).
    pub async fn bind(
        cfg: &TrapConfig,
        targets: &[TargetConfig],
    ) -> Result<TrapListener, TrapError> {
        let decoder = TrapDecoder::new(cfg, targets)?;
        let requested = cfg.receive_buffer.bytes();
        let (socket, granted) = bind_socket(cfg.listen, requested)?;
        if accepted_buffer(granted) < requested {
            tracing::warn!(
                listen = %cfg.listen,
                requested,
                granted,
                "SNMP trap socket: the kernel granted a smaller receive buffer than [snmp.traps] \
                 receive_buffer asks for, so a burst of traps can overflow it (counted in \
                 sitewatch_snmp_trap_kernel_drops_total). Raise the kernel's cap: \
                 sysctl -w net.core.rmem_max={requested}, and keep it in /etc/sysctl.d/"
            );
        } else {
            tracing::info!(
                listen = %cfg.listen,
                requested,
                granted,
                "SNMP trap socket receive buffer sized"
            );
        }
        Ok(TrapListener {
            socket: Arc::new(socket),
            decoder,
            requested,
            granted,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The receive buffer asked for and the one the kernel reports (on Linux twice what it
    /// accepted, see socket(7)), in bytes.
    pub fn receive_buffer(&self) -> (u64, u64) {
        (self.requested, self.granted)
    }

    /// Receives until `shutdown`. A dedicated thread reads the socket into a queue; this task
    /// decodes, answers informs and hands bursts on as batches of up to [`MAX_BATCH`]. A
    /// full pipeline holds this task, not the reading. At shutdown, traps already read are
    /// handed on for up to [`SHUTDOWN_SEND`].
    pub async fn run(mut self, tx: BatchSender, shutdown: CancellationToken) {
        describe_metrics();
        let addr = self.local_addr().ok();
        metrics::gauge!("sitewatch_snmp_trap_receive_buffer_bytes").set(self.granted as f64);
        // Registered at 0, so "no drops" is visible as such in /metrics.
        metrics::counter!("sitewatch_snmp_trap_kernel_drops_total").increment(0);
        let queue = Arc::new(RxQueue::new(QUEUE_BYTES));
        let stop = shutdown.child_token();
        let reader = {
            let (socket, queue, stop) = (self.socket.clone(), queue.clone(), stop.clone());
            std::thread::Builder::new()
                .name("sitewatch-traps".into())
                .spawn(move || receive_loop(&socket, &queue, &stop))
        };
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                metrics::gauge!("sitewatch_snmp_trap_listener_up").set(0.0);
                tracing::error!(error = %e, "cannot start the SNMP trap reader thread: traps are NOT received");
                return;
            }
        };
        let burst_done = Arc::new(Notify::new());
        let drops =
            tokio::spawn(KernelDrops::new(&self.socket).watch(burst_done.clone(), stop.clone()));
        tracing::info!(listen = ?addr, "SNMP trap listener started");
        metrics::gauge!("sitewatch_snmp_trap_listener_up").set(1.0);

        let mut log = RateLimitedLog::default();
        let mut dedup = InformDedup::default();
        let mut unsent: Vec<Sample> = Vec::new();
        let mut channel_open = true;
        let mut since_idle = 0usize;
        loop {
            let datagrams = queue.take(MAX_BATCH);
            if datagrams.is_empty() {
                if since_idle >= BURST {
                    burst_done.notify_one();
                }
                since_idle = 0;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = queue.ready.notified() => continue,
                }
            }
            since_idle += datagrams.len();
            let mut samples = Vec::new();
            for d in &datagrams {
                self.handle(d, &mut log, &mut dedup, &mut samples);
            }
            drop(datagrams);
            if samples.is_empty() {
                continue;
            }
            // Reserve first: a shutdown while the pipeline is full keeps the samples here.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => {
                    unsent = samples;
                    break;
                }
                p = tx.reserve() => p,
            };
            match permit {
                Ok(p) => p.send(Batch::new(samples)),
                Err(_) => {
                    tracing::warn!("sample channel closed; SNMP trap listener ends");
                    channel_open = false;
                    break;
                }
            }
        }
        stop.cancel();
        queue.close();
        if tokio::task::spawn_blocking(move || reader.join())
            .await
            .is_err()
        {
            tracing::warn!("SNMP trap reader thread did not stop cleanly");
        }
        if channel_open {
            for d in &queue.take(usize::MAX) {
                self.handle(d, &mut log, &mut dedup, &mut unsent);
            }
            if !unsent.is_empty() {
                let n = unsent.len();
                match tokio::time::timeout(SHUTDOWN_SEND, tx.send(Batch::new(unsent))).await {
                    Ok(Ok(())) => {
                        tracing::info!(traps = n, "SNMP traps read before shutdown handed on")
                    }
                    _ => tracing::warn!(
                        traps = n,
                        "SNMP traps read just before shutdown could not be handed on"
                    ),
                }
            }
        }
        let _ = drops.await;
        metrics::gauge!("sitewatch_snmp_trap_listener_up").set(0.0);
        tracing::info!("SNMP trap listener stopped");
    }

    fn handle(
        &mut self,
        d: &Datagram,
        log: &mut RateLimitedLog,
        dedup: &mut InformDedup,
        out: &mut Vec<Sample>,
    ) {
        if d.bytes.len() > MAX_DATAGRAM {
            log.reject(
                &Reject::Malformed("datagram larger than 64 KiB".into()),
                d.from,
            );
            return;
        }
        match self.decoder.decode(&d.bytes, d.from, d.at_ns) {
            Ok(n) => {
                let duplicate = n.inform_id.is_some_and(|id| dedup.seen_before(d.from, id));
                if let Some(resp) = n.response {
                    match send_now(&self.socket, &resp, d.from) {
                        Ok(_) => {
                            metrics::counter!("sitewatch_snmp_informs_answered_total").increment(1)
                        }
                        Err(e) => {
                            tracing::warn!(from = %d.from, error = %e, "cannot answer SNMP inform; the sender will retry")
                        }
                    }
                }
                if duplicate {
                    metrics::counter!("sitewatch_snmp_informs_duplicate_total").increment(1);
                    return;
                }
                out.push(n.sample);
                out.extend(n.clears);
            }
            Err(r) => {
                log.reject(&r, d.from);
            }
        }
    }
}

/// Datagrams handled in one run before the queue was empty again that count as a burst (and
/// make the kernel drop counter be read soon after).
const BURST: usize = 32;

/// Help texts of the listener's metrics (the others are described in `telemetry`).
fn describe_metrics() {
    metrics::describe_counter!(
        "sitewatch_snmp_traps_received_total",
        "SNMP traps and informs accepted, by SNMP version"
    );
    metrics::describe_counter!(
        "sitewatch_snmp_trap_kernel_drops_total",
        "SNMP trap datagrams dropped by the kernel before sitewatch read them (socket receive buffer full; see [snmp.traps] receive_buffer and net.core.rmem_max)"
    );
    metrics::describe_gauge!(
        "sitewatch_snmp_trap_receive_buffer_bytes",
        "Receive buffer of the SNMP trap socket as the kernel reports it (Linux: twice the size it accepted)"
    );
    metrics::describe_gauge!(
        "sitewatch_snmp_trap_listener_up",
        "1 while the SNMP trap listener is receiving"
    );
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> TrapError {
    TrapError::Bind {
        addr,
        hint: match source.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need root or CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE), or listen on a high port and redirect 162 to it"
            }
            std::io::ErrorKind::AddrInUse => {
                "another process (snmptrapd?) already uses this port; stop it or pick another listen address"
            }
            _ => "check that the address belongs to this host",
        },
        source,
    }
}

/// A blocking UDP socket (the reader thread waits in `recv` with [`READ_TIMEOUT`]) with its
/// receive buffer sized before the bind. Returns the socket and SO_RCVBUF as reported after.
fn bind_socket(addr: SocketAddr, receive_buffer: u64) -> Result<(UdpSocket, u64), TrapError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| bind_error(addr, e))?;
    let size = usize::try_from(receive_buffer).unwrap_or(usize::MAX);
    if let Err(e) = socket.set_recv_buffer_size(size) {
        // Not fatal: the default buffer still receives, only smaller bursts.
        tracing::warn!(listen = %addr, error = %e, requested = receive_buffer, "SNMP trap socket: cannot set the receive buffer (SO_RCVBUF)");
    }
    let capped = socket
        .recv_buffer_size()
        .is_ok_and(|n| accepted_buffer(n as u64) < receive_buffer);
    if capped && force_recv_buffer(&socket, size) {
        tracing::info!(
            listen = %addr,
            requested = receive_buffer,
            "SNMP trap socket: receive buffer set with SO_RCVBUFFORCE (privileged), above net.core.rmem_max"
        );
    }
    socket.bind(&addr.into()).map_err(|e| bind_error(addr, e))?;
    socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| bind_error(addr, e))?;
    let granted = socket.recv_buffer_size().map_or(0, |n| n as u64);
    Ok((socket.into(), granted))
}

/// SO_RCVBUFFORCE: like SO_RCVBUF but not capped by `net.core.rmem_max`; only a process
/// with CAP_NET_ADMIN may use it (for others it fails with EPERM, and `false` is returned).
#[cfg(target_os = "linux")]
fn force_recv_buffer(socket: &socket2::Socket, size: usize) -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(value) = libc::c_int::try_from(size) else {
        return false;
    };
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int that outlives the call
    // and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn force_recv_buffer(_socket: &socket2::Socket, _size: usize) -> bool {
    false
}

/// The part of a reported SO_RCVBUF that answers the request: Linux doubles the accepted
/// value for its bookkeeping and reports the doubled one (socket(7)).
fn accepted_buffer(reported: u64) -> u64 {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// Sends without ever blocking the calling (async) thread: a full send buffer is an error,
/// and the sender of the inform retries.
fn send_now(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    #[cfg(unix)]
    {
        socket2::SockRef::from(socket).send_to_with_flags(bytes, &to.into(), libc::MSG_DONTWAIT)
    }
    #[cfg(not(unix))]
    {
        socket.send_to(bytes, to)
    }
}

/// One datagram as read, with its receive time (the trap's timestamp).
struct Datagram {
    bytes: Vec<u8>,
    from: SocketAddr,
    at_ns: i64,
}

impl Datagram {
    fn cost(&self) -> usize {
        self.bytes.len() + DATAGRAM_OVERHEAD
    }
}

/// Datagrams between the reader thread and the listener task, bounded in bytes. The thread
/// waits on `space` when it is full; the task waits on `ready` when it is empty.
struct RxQueue {
    inner: Mutex<RxInner>,
    space: Condvar,
    ready: Notify,
    max_bytes: usize,
}

#[derive(Default)]
struct RxInner {
    items: VecDeque<Datagram>,
    bytes: usize,
    closed: bool,
}

impl RxQueue {
    fn new(max_bytes: usize) -> RxQueue {
        RxQueue {
            inner: Mutex::new(RxInner::default()),
            space: Condvar::new(),
            ready: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RxInner> {
        // Nothing panics while holding the lock; if it ever did, the data is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `d`, waiting while the queue is full. `None`: closed or stopped meanwhile
    /// (`d` is dropped); `Some(true)`: it had to wait.
    fn push(&self, d: Datagram, stop: &CancellationToken) -> Option<bool> {
        let cost = d.cost();
        let mut g = self.lock();
        let mut waited = false;
        // An empty queue takes anything, so no datagram is too large to ever get in.
        while !g.closed && !g.items.is_empty() && g.bytes + cost > self.max_bytes {
            if stop.is_cancelled() {
                return None;
            }
            waited = true;
            g = self
                .space
                .wait_timeout(g, READ_TIMEOUT)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        if g.closed {
            return None;
        }
        g.bytes += cost;
        g.items.push_back(d);
        drop(g);
        self.ready.notify_one();
        Some(waited)
    }

    /// Up to `max` datagrams, oldest first.
    fn take(&self, max: usize) -> Vec<Datagram> {
        let mut g = self.lock();
        let n = g.items.len().min(max);
        let out: Vec<Datagram> = g.items.drain(..n).collect();
        g.bytes -= out.iter().map(Datagram::cost).sum::<usize>();
        drop(g);
        if !out.is_empty() {
            self.space.notify_all();
        }
        out
    }

    fn close(&self) {
        self.lock().closed = true;
        self.space.notify_all();
    }
}

/// The reader thread: `recv` into the queue until `stop` (checked every [`READ_TIMEOUT`]
/// while idle) or until the queue is closed.
fn receive_loop(socket: &UdpSocket, queue: &RxQueue, stop: &CancellationToken) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut last_full_log: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    let due = |last: &Option<Instant>| last.is_none_or(|t| t.elapsed() >= LOG_EVERY);
    while !stop.is_cancelled() {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let d = Datagram {
                    bytes: buf[..n].to_vec(),
                    from,
                    at_ns: now_ns(),
                };
                match queue.push(d, stop) {
                    None => break,
                    Some(true) if due(&last_full_log) => {
                        last_full_log = Some(Instant::now());
                        tracing::warn!(
                            queue_bytes = QUEUE_BYTES,
                            "SNMP trap queue full: decoding or the pipeline is not keeping up; \
                             the kernel receive buffer takes the rest (overflow is counted in \
                             sitewatch_snmp_trap_kernel_drops_total)"
                        );
                    }
                    Some(_) => {}
                }
            }
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => {}
                // ICMP errors for earlier inform answers surface here on Linux; nothing to do.
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => {
                    tracing::debug!(error = %e, "SNMP trap socket receive error");
                }
                _ => {
                    if due(&last_error_log) {
                        last_error_log = Some(Instant::now());
                        tracing::warn!(error = %e, "SNMP trap socket receive error");
                    }
                    // Never spin on an error that repeats.
                    std::thread::sleep(Duration::from_millis(10));
                }
            },
        }
    }
}

/// `sitewatch_snmp_trap_kernel_drops_total`: the socket's `drops` in `/proc/net/udp{,6}`.
struct KernelDrops {
    inode: Option<u64>,
    seen: u64,
}

impl KernelDrops {
    fn new(socket: &UdpSocket) -> KernelDrops {
        let inode = socket_inode(socket);
        if inode.is_none() {
            tracing::debug!("kernel drops of the SNMP trap socket are not counted on this OS");
        }
        KernelDrops { inode, seen: 0 }
    }

    /// Reads the counter every [`DROPS_EVERY`], [`DROPS_AFTER_BURST`] after a burst, and once
    /// more when `stop` is cancelled.
    async fn watch(mut self, burst_done: Arc<Notify>, stop: CancellationToken) {
        let Some(inode) = self.inode else {
            return;
        };
        let mut every = tokio::time::interval(DROPS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
                _ = burst_done.notified() => {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(DROPS_AFTER_BURST) => {}
                    }
                }
            }
            self.read(inode).await;
        }
        self.read(inode).await;
    }

    async fn read(&mut self, inode: u64) {
        match tokio::task::spawn_blocking(move || read_udp_drops(inode)).await {
            Ok(Ok(Some(total))) => self.update(total),
            Ok(Ok(None)) => {
                tracing::debug!(inode, "SNMP trap socket not found in /proc/net/udp{{,6}}")
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read /proc/net/udp"),
            Err(_) => {}
        }
    }

    fn update(&mut self, total: u64) {
        if total > self.seen {
            let new = total - self.seen;
            metrics::counter!("sitewatch_snmp_trap_kernel_drops_total").increment(new);
            tracing::warn!(
                dropped = new,
                total,
                "SNMP trap datagrams dropped by the kernel: the socket receive buffer was full. \
                 Raise [snmp.traps] receive_buffer (and net.core.rmem_max if the granted size \
                 was capped; see the log at start)"
            );
        }
        self.seen = total;
    }
}

/// The socket's inode, which names it in `/proc/net/udp` (Linux only).
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .ok()
            .map(|m| m.ino())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        None
    }
}

/// The `drops` column of the socket with `inode` in `/proc/net/udp` or `/proc/net/udp6`.
fn read_udp_drops(inode: u64) -> std::io::Result<Option<u64>> {
    use std::io::BufRead;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in std::io::BufReader::new(file).lines().skip(1) {
            if let Some(drops) = udp_line_drops(&line?, inode) {
                return Ok(Some(drops));
            }
        }
    }
    Ok(None)
}

/// `drops` of one `/proc/net/udp` line if it is the socket with `inode`. Columns: sl,
/// local_address, rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout,
/// inode, ref, pointer, drops.
fn udp_line_drops(line: &str, inode: u64) -> Option<u64> {
    let mut cols = line.split_whitespace();
    let ino: u64 = cols.nth(9)?.parse().ok()?;
    if ino != inode {
        return None;
    }
    cols.nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn from() -> SocketAddr {
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

    fn ups_on_battery_v2c(kind: u8, community: &[u8]) -> Vec<u8> {
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

    #[test]
    fn config_defaults_and_validation() {
        #[derive(Deserialize)]
        struct Root {
            traps: TrapConfig,
        }
        let r: Root = toml::from_str("[traps]\ncommunities = [\"a\"]\n").unwrap();
        assert_eq!(r.traps.listen, "127.0.0.1:9162".parse().unwrap());
        assert_eq!(r.traps.measurement, "snmp_traps");
        r.traps.validate().unwrap();
        let r: Root = toml::from_str("[traps]\nlisten = \"0.0.0.0:162\"\n").unwrap();
        assert!(r
            .traps
            .validate()
            .unwrap_err()
            .to_string()
            .contains("communities is empty"));
        assert!(toml::from_str::<Root>("[traps]\nlisten = \"nowhere\"\n").is_err());
    }

    #[test]
    fn inform_dedup_window() {
        let mut d = InformDedup::default();
        assert!(!d.seen_before(from(), 1));
        assert!(d.seen_before(from(), 1));
        assert!(!d.seen_before(from(), 2));
        assert!(!d.seen_before("10.0.0.11:1".parse().unwrap(), 1));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("4MiB"), Ok(ByteSize(4 << 20)));
        assert_eq!(ByteSize::parse("512 KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("8M"), Ok(ByteSize(8 << 20)));
        assert_eq!(ByteSize::parse("4MB"), Ok(ByteSize(4_000_000)));
        assert_eq!(ByteSize::parse("65536"), Ok(ByteSize(65536)));
        assert!(ByteSize::parse("4 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999999999999GiB").is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");

        #[derive(Deserialize)]
        struct Root {
            traps: TrapConfig,
        }
        let parse = |body: &str| {
            toml::from_str::<Root>(&format!("[traps]\ncommunities = [\"a\"]\n{body}"))
                .map(|r| r.traps)
        };
        assert_eq!(parse("").unwrap().receive_buffer, ByteSize(4 << 20));
        assert_eq!(
            parse("receive_buffer = \"16MiB\"").unwrap().receive_buffer,
            ByteSize(16 << 20)
        );
        assert_eq!(
            parse("receive_buffer = 1048576").unwrap().receive_buffer,
            ByteSize(1 << 20)
        );
        assert!(parse("receive_buffer = \"lots\"").is_err());
        let tiny = parse("receive_buffer = 1000").unwrap();
        assert!(
            tiny.validate().unwrap_err().to_string().contains("64KiB"),
            "{:?}",
            tiny.validate()
        );
        assert!(parse("receive_buffer = \"2GiB\"")
            .unwrap()
            .validate()
            .is_err());
    }

    #[test]
    fn proc_net_udp_lines() {
        let header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops";
        let line = " 3974: 0100007F:3F21 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 63812 2 0000000013263068 630";
        let v6 = "  120: 00000000000000000000000000000000:00A2 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   998        0 777 2 0000000000000000 0";
        assert_eq!(udp_line_drops(line, 63812), Some(630));
        assert_eq!(udp_line_drops(line, 63813), None);
        assert_eq!(udp_line_drops(v6, 777), Some(0));
        assert_eq!(udp_line_drops(header, 0), None);
        assert_eq!(udp_line_drops("garbage", 1), None);
        assert_eq!(udp_line_drops("", 1), None);
    }

    fn datagram(n: usize) -> Datagram {
        Datagram {
            bytes: vec![0; n],
            from: from(),
            at_ns: 0,
        }
    }

    #[test]
    fn rx_queue_is_bounded_in_bytes_and_never_refuses_when_empty() {
        let stop = CancellationToken::new();
        let q = RxQueue::new(1000);
        // Larger than the bound, but the queue is empty: accepted.
        assert_eq!(q.push(datagram(5000), &stop), Some(false));
        let q = Arc::new(RxQueue::new(1000));
        for _ in 0..4 {
            assert_eq!(q.push(datagram(100), &stop), Some(false));
        }
        // Full (4 × 164 + 464 > 1000): the pusher waits until the consumer takes some.
        let pusher = {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || q.push(datagram(400), &stop))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.lock().items.len(), 4, "the fifth datagram waits");
        assert_eq!(q.take(2).len(), 2);
        assert_eq!(pusher.join().unwrap(), Some(true));
        assert_eq!(q.take(usize::MAX).len(), 3);
        assert_eq!(q.lock().bytes, 0);
        // Closing releases a waiting pusher.
        for _ in 0..6 {
            q.push(datagram(100), &stop);
        }
        let pusher = {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || q.push(datagram(100), &stop))
        };
        q.close();
        assert_eq!(pusher.join().unwrap(), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_drops_are_read_from_proc_net_udp() {
        // A socket nobody reads, with the smallest buffer: most of a burst is dropped, and
        // /proc/net/udp says so for exactly this socket.
        let (rx, granted) = bind_socket("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        assert!(granted > 0);
        let inode = socket_inode(&rx).expect("socket inode");
        assert_eq!(read_udp_drops(inode).unwrap(), Some(0));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for _ in 0..500 {
            tx.send_to(&[0u8; 100], to).unwrap();
        }
        let drops = read_udp_drops(inode).unwrap().unwrap();
        assert!(drops > 0 && drops < 500, "{drops} of 500 dropped");
        let mut k = KernelDrops {
            inode: Some(inode),
            seen: 0,
        };
        k.update(drops);
        k.update(drops);
        assert_eq!(k.seen, drops);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn receive_buffer_above_rmem_max_is_capped_or_forced() {
        let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let asked = (rmem_max * 2).min(MAX_RECEIVE_BUFFER);
        let (_s, granted) = bind_socket("127.0.0.1:0".parse().unwrap(), asked).unwrap();
        let accepted = accepted_buffer(granted);
        // Privileged (SO_RCVBUFFORCE): all of it; otherwise net.core.rmem_max.
        assert!(
            accepted == asked || accepted == rmem_max,
            "asked {asked}, reported {granted}, rmem_max {rmem_max}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listener_reports_the_granted_buffer_and_stops() {
        let cfg = TrapConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            communities: vec![Secret::Inline("trapc".into())],
            receive_buffer: ByteSize(256 << 10),
            ..TrapConfig::default()
        };
        let l = TrapListener::bind(&cfg, &[]).await.unwrap();
        let (asked, granted) = l.receive_buffer();
        assert_eq!(asked, 256 << 10);
        assert!(granted > 0);
        let to = l.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(l.run(tx, stop.clone()));
        let send = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            send.send_to(&ups_on_battery_v2c(0xa7, b"trapc"), to)
                .unwrap();
        }
        let mut got = 0;
        while got < 3 {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("traps within 5 s")
                .unwrap();
            got += b.samples.len();
        }
        assert_eq!(got, 3);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("listener stops within 5 s")
            .unwrap();
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
