//! The `[modbus]` table: defaults and `[[modbus.device]]` entries.
//!
//! ```toml
//! [modbus]
//! maps_dir = "mappings/modbus"        # relative to the config file's directory (src/paths.rs)
//! interval = "30s"
//! timeout = "3s"                      # per request (and per connection attempt)
//! retries = 1                         # more attempts after a timeout or a broken connection
//! concurrency = 64                    # polls in flight at once, across all devices
//! max_gap = 8                         # unused registers a batched read may span
//!
//! [[modbus.device]]
//! name = "meter-a1"
//! address = "10.0.0.30"               # host[:port], port 502 by default
//! unit_id = 1                         # default 1; an RTU device behind a gateway: its id
//! map = "eastron-sdm630"              # a file in maps_dir, without .toml
//! interval = "10s"                    # optional, else [modbus] interval
//! timeout = "2s"                      # optional, else [modbus] timeout
//! tags = { site = "dc1", room = "hall1" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Directory of register maps; a relative path is taken from the config file's directory.
    #[serde(default = "default_maps_dir")]
    pub maps_dir: PathBuf,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Unused registers (or bits) a batched read may span; a map's own `max_gap` wins.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The `device` tag of every sample; also what `--shard` hashes.
    pub name: toml::Spanned<String>,
    /// `host` or `host:port`; port 502 by default.
    pub address: toml::Spanned<String>,
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// A register map's name (its file name without `.toml`).
    pub map: toml::Spanned<String>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl DeviceConfig {
    /// `host:port`, with the default port added when none is written.
    pub fn host_port(&self) -> String {
        with_default_port(self.address.get_ref())
    }
}

/// `host` → `host:502`; `host:port` and `[v6]:port` as written; a bare IPv6 address in brackets.
pub fn with_default_port(address: &str) -> String {
    let a = address.trim();
    if a.starts_with('[') {
        if a.contains("]:") {
            a.to_string()
        } else {
            format!("{a}:502")
        }
    } else if a.matches(':').count() == 1 {
        a.to_string()
    } else if a.contains(':') {
        format!("[{a}]:502")
    } else {
        format!("{a}:502")
    }
}

impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig {
            maps_dir: default_maps_dir(),
            interval: default_interval(),
            timeout: default_timeout(),
            retries: default_retries(),
            concurrency: default_concurrency(),
            max_gap: default_max_gap(),
            devices: Vec::new(),
        }
    }
}

fn default_maps_dir() -> PathBuf {
    PathBuf::from("mappings/modbus")
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_retries() -> u32 {
    1
}

fn default_concurrency() -> usize {
    64
}

fn default_max_gap() -> u16 {
    8
}

fn default_unit_id() -> u8 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ports() {
        let c: ModbusConfig =
            toml::from_str("[[device]]\nname = \"m1\"\naddress = \"10.0.0.1\"\nmap = \"x\"\n")
                .unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.maps_dir, PathBuf::from("mappings/modbus"));
        let d = &c.devices[0];
        assert_eq!(d.unit_id, 1);
        assert_eq!(d.host_port(), "10.0.0.1:502");
        assert_eq!(with_default_port("gw.local:1502"), "gw.local:1502");
        assert_eq!(with_default_port("fe80::1"), "[fe80::1]:502");
        assert_eq!(with_default_port("[::1]:5020"), "[::1]:5020");
        assert_eq!(with_default_port("[::1]"), "[::1]:502");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<ModbusConfig>(
            "[[device]]\nname = \"m1\"\naddress = \"a\"\nmap = \"x\"\nunit = 3\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `unit`"), "{e}");
    }
}
