//! The `[snmp]` table: defaults and `[[snmp.target]]` entries.
//!
//! ```toml
//! [snmp]
//! profiles_dir = "mappings/snmp"      # relative to the config file's directory
//! interval = "60s"
//! timeout = "5s"
//! retries = 2
//! max_repetitions = 25
//! max_oids_per_get = 32
//! concurrency = 256
//!
//! [[snmp.target]]
//! name = "ups-a1"
//! address = "10.0.0.10"               # host[:port], port 161 by default
//! version = "2c"
//! community = { env = "SITEWATCH_SNMP_COMMUNITY" }
//! profiles = ["ups-mib"]              # empty: auto-detect by sysObjectID on each poll
//! tags = { site = "dc1", room = "r1" }
//!
//! [[snmp.target]]
//! name = "pdu-r1"
//! address = "10.0.0.20:161"
//! version = "3"
//! user = "monitor"
//! security_level = "authPriv"
//! auth_protocol = "SHA256"
//! auth_password = { file = "/etc/sitewatch/snmp-auth" }
//! priv_protocol = "AES"
//! priv_password = { file = "/etc/sitewatch/snmp-priv" }
//! interval = "30s"
//!
//! [snmp.traps]                        # optional: trap/inform listener, see `trap`
//! listen = "0.0.0.0:162"
//! communities = [{ env = "SITEWATCH_TRAP_COMMUNITY" }]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Secret, SecretError};

use super::profile::ProfileSet;
pub use super::security::{AuthProtocol, PrivProtocol, SecurityLevel, SnmpVersion};
use super::trap::{TrapConfig, TrapError};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    /// Directory of profile TOML files; a relative path is taken from the config file's
    /// directory, and one missing there is looked up where packages put the shipped profiles
    /// (see [`crate::paths::find_mappings`]).
    #[serde(default = "default_profiles_dir")]
    pub profiles_dir: PathBuf,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Varbinds asked for per GETBULK response, shared by the columns walked together (up
    /// to 8 per request), so responses stay near the same size however wide the table.
    #[serde(default = "default_max_repetitions")]
    pub max_repetitions: u32,
    /// Scalars per GET PDU; a `tooBig` (or v1 `noSuchName`) halves the batch and retries.
    #[serde(default = "default_max_oids_per_get")]
    pub max_oids_per_get: usize,
    /// Most polls in flight at once, across all targets.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
    /// Trap/inform listener; absent means no listener.
    #[serde(default)]
    pub traps: Option<TrapConfig>,
}

impl Default for SnmpConfig {
    fn default() -> Self {
        SnmpConfig {
            profiles_dir: default_profiles_dir(),
            interval: default_interval(),
            timeout: default_timeout(),
            retries: default_retries(),
            max_repetitions: default_max_repetitions(),
            max_oids_per_get: default_max_oids_per_get(),
            concurrency: default_concurrency(),
            targets: Vec::new(),
            traps: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Device name; becomes the `device` tag.
    pub name: String,
    /// `host`, `host:port`, `ip`, `ip:port` or `[ipv6]:port`; port 161 by default.
    pub address: String,
    #[serde(default = "default_version")]
    pub version: SnmpVersion,
    /// Required for v1/v2c: no silent "public".
    #[serde(default)]
    pub community: Option<Secret>,
    #[serde(default)]
    pub user: Option<String>,
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
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub max_repetitions: Option<u32>,
    /// Profile names; empty means auto-detect by sysObjectID prefix.
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl TargetConfig {
    /// A v2c target with the given community, for `sitewatch probe` and tests.
    pub fn v2c(name: &str, address: &str, community: &str) -> Self {
        TargetConfig {
            name: name.to_string(),
            address: address.to_string(),
            version: SnmpVersion::V2c,
            community: Some(Secret::Inline(community.to_string())),
            user: None,
            security_level: None,
            auth_protocol: None,
            auth_password: None,
            priv_protocol: None,
            priv_password: None,
            context: None,
            interval: None,
            timeout: None,
            retries: None,
            max_repetitions: None,
            profiles: Vec::new(),
            tags: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnmpConfigError {
    #[error("[[snmp.target]] {target}: {message}")]
    Target { target: String, message: String },
    #[error("[[snmp.target]] {target}: {key}: {source}")]
    Secret {
        target: String,
        key: &'static str,
        source: SecretError,
    },
    #[error("[snmp] {0}")]
    Global(String),
    #[error(transparent)]
    Traps(#[from] TrapError),
}

impl SnmpConfig {
    /// Checks what serde cannot: per-version credentials, unique names, known profiles,
    /// sane limits. Secrets are resolved here too, so a missing env var fails at startup.
    pub fn validate(&self, profiles: &ProfileSet) -> Result<(), SnmpConfigError> {
        if self.concurrency == 0 {
            return Err(SnmpConfigError::Global(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.max_oids_per_get == 0 {
            return Err(SnmpConfigError::Global(
                "max_oids_per_get must be at least 1".into(),
            ));
        }
        if self.max_repetitions == 0 {
            return Err(SnmpConfigError::Global(
                "max_repetitions must be at least 1".into(),
            ));
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err(SnmpConfigError::Global(
                "interval and timeout must be greater than zero".into(),
            ));
        }
        if let Some(t) = &self.traps {
            t.validate()?;
        }
        let mut names = HashSet::new();
        for t in &self.targets {
            let err = |message: String| SnmpConfigError::Target {
                target: t.name.clone(),
                message,
            };
            if t.name.is_empty() {
                return Err(SnmpConfigError::Global(format!(
                    "a target with address {:?} has an empty name",
                    t.address
                )));
            }
            if !names.insert(t.name.as_str()) {
                return Err(err(
                    "duplicate target name (names become the device tag and must be unique)".into(),
                ));
            }
            split_host_port(&t.address).map_err(err)?;
            if t.interval.is_some_and(|d| d.is_zero()) || t.timeout.is_some_and(|d| d.is_zero()) {
                return Err(err("interval and timeout must be greater than zero".into()));
            }
            for p in &t.profiles {
                if profiles.get(p).is_none() {
                    return Err(err(format!(
                        "unknown profile {p:?}; known: {}",
                        profiles.names().join(", ")
                    )));
                }
            }
            let resolve = |key: &'static str, s: &Secret| {
                s.resolve().map_err(|source| SnmpConfigError::Secret {
                    target: t.name.clone(),
                    key,
                    source,
                })
            };
            match t.version {
                SnmpVersion::V1 | SnmpVersion::V2c => {
                    let Some(c) = &t.community else {
                        return Err(err(
                            "community is required for version 1 and 2c (e.g. community = { env = \"SNMP_COMMUNITY\" })".into(),
                        ));
                    };
                    resolve("community", c)?;
                    if t.user.is_some() || t.auth_password.is_some() || t.priv_password.is_some() {
                        return Err(err(
                            "user/auth_password/priv_password are SNMPv3 settings; set version = \"3\"".into(),
                        ));
                    }
                }
                SnmpVersion::V3 => {
                    if t.user.as_deref().is_none_or(str::is_empty) {
                        return Err(err("user is required for version 3".into()));
                    }
                    if t.community.is_some() {
                        return Err(err("community is not used by SNMPv3; remove it".into()));
                    }
                    let level = t.security_level.unwrap_or(SecurityLevel::AuthPriv);
                    if level != SecurityLevel::NoAuthNoPriv {
                        let Some(a) = &t.auth_password else {
                            return Err(err(format!("auth_password is required for {level:?}")));
                        };
                        if resolve("auth_password", a)?.len() < 8 {
                            return Err(err(
                                "auth_password must be at least 8 characters (RFC 3414)".into(),
                            ));
                        }
                    }
                    if level == SecurityLevel::AuthPriv {
                        let Some(p) = &t.priv_password else {
                            return Err(err("priv_password is required for authPriv".into()));
                        };
                        if resolve("priv_password", p)?.len() < 8 {
                            return Err(err(
                                "priv_password must be at least 8 characters (RFC 3414)".into(),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into host and port, defaulting to 161.
pub fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let bad = || format!("address {address:?} is not host[:port] (IPv6: [addr]:port)");
    if address.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail {
            "" => 161,
            t => t
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)?,
        };
        return Ok((host.to_string(), port));
    }
    match address.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((h, _)) if h.contains(':') => Ok((address.to_string(), 161)),
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| bad())?)),
        None => Ok((address.to_string(), 161)),
    }
}

fn default_profiles_dir() -> PathBuf {
    PathBuf::from("mappings/snmp")
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    2
}
fn default_max_repetitions() -> u32 {
    25
}
fn default_max_oids_per_get() -> usize {
    32
}
fn default_concurrency() -> usize {
    256
}
fn default_version() -> SnmpVersion {
    SnmpVersion::V2c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Root {
        snmp: SnmpConfig,
    }

    #[test]
    fn parses_example_and_defaults() {
        let r: Root = toml::from_str(
            r#"
            [snmp]
            interval = "30s"
            [[snmp.target]]
            name = "ups1"
            address = "10.0.0.1"
            community = "c"
            tags = { site = "dc1" }
            [[snmp.target]]
            name = "pdu1"
            address = "[::1]:1161"
            version = "3"
            user = "u"
            security_level = "authPriv"
            auth_protocol = "SHA"
            auth_password = "authpass1"
            priv_protocol = "AES"
            priv_password = "privpass1"
            "#,
        )
        .unwrap();
        let c = r.snmp;
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.retries, 2);
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[1].version, SnmpVersion::V3);
        c.validate(&ProfileSet::default()).unwrap();
    }

    #[test]
    fn rejects_unknown_keys_and_missing_community() {
        let e = toml::from_str::<Root>("[snmp]\nintervall = \"1s\"\n")
            .err()
            .unwrap();
        assert!(e.to_string().contains("intervall"), "{e}");
        let r: Root =
            toml::from_str("[snmp]\n[[snmp.target]]\nname = \"a\"\naddress = \"h\"\n").unwrap();
        let e = r.snmp.validate(&ProfileSet::default()).unwrap_err();
        assert!(e.to_string().contains("community is required"), "{e}");
    }

    #[test]
    fn splits_addresses() {
        assert_eq!(split_host_port("h").unwrap(), ("h".into(), 161));
        assert_eq!(split_host_port("h:1161").unwrap(), ("h".into(), 1161));
        assert_eq!(split_host_port("[::1]:5").unwrap(), ("::1".into(), 5));
        assert_eq!(split_host_port("fe80::1").unwrap(), ("fe80::1".into(), 161));
        assert!(split_host_port("h:x").is_err());
        assert!(split_host_port("").is_err());
    }
}
