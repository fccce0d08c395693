//! `[snmp.traps]`: the listener's configuration and its validation, and the trap error type.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::collect::snmp::security::{AuthProtocol, PrivProtocol, SecurityLevel};
use crate::secret::{Secret, SecretError};

/// Default measurement of trap samples.
pub const TRAPS_MEASUREMENT: &str = "snmp_traps";

/// Bounds of `receive_buffer`: below 64 KiB is less than one large trap; above 1 GiB does not
/// fit SO_RCVBUF's int once the kernel doubles it.
pub(super) const MIN_RECEIVE_BUFFER: u64 = 64 << 10;
pub(super) const MAX_RECEIVE_BUFFER: u64 = 1 << 30;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
