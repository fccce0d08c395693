//! Configuration: one TOML file with a table per stage, validated before anything starts.
//!
//! Each stage owns the schema of its own table (`[influx]` in `sink::influx`, `[mqtt]` in
//! `collect::mqtt`, ...); this module composes them, turns parse errors into `file:line:col`
//! messages and resolves paths relative to the config file (writable ones under systemd's
//! `$STATE_DIRECTORY` when it is set, see [`crate::paths`]).

pub use crate::secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use secret::{Secret, SecretError};

use crate::collect::modbus::ModbusConfig;
pub use crate::text::line_col;

use crate::collect::mqtt::MqttConfig;
use crate::collect::snmp::SnmpConfig;
use crate::notify::NotifyConfig;
use crate::rules::RulesConfig;
use crate::sink::influx::InfluxConfig;
use crate::sink::remote_write::RemoteWriteConfig;

/// The whole configuration file. Each collector and sink has its table here and one
/// registration line in `collect::build_sources` / `sink::build_sinks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub service: ServiceConfig,
    pub influx: Option<InfluxConfig>,
    pub remote_write: Option<RemoteWriteConfig>,
    pub mqtt: Option<MqttConfig>,
    pub snmp: Option<SnmpConfig>,
    pub modbus: Option<ModbusConfig>,
    pub rules: Option<RulesConfig>,
    pub notify: Option<NotifyConfig>,
    /// The operations API on `[service] listen` (acknowledge, silences).
    pub api: Option<crate::api::ApiConfig>,
    /// Cluster mode coordinated by etcd (`crate::cluster`); a single instance without it.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// Process-wide settings: logging and the self-metrics endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `human` (default) or `json` (one object per line, for log shippers).
    #[serde(default)]
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `sitewatch=debug,rumqttc=warn`. `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Address of the Prometheus `/metrics` and `/health` endpoint. Loopback by default:
    /// self-metrics name devices and sites, which is not for the whole network.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long the sink may be down (InfluxDB failing or hung, data going to the spool)
    /// before `/ready` answers 503.
    #[serde(default = "default_ready_grace", with = "humantime_serde")]
    pub ready_grace: std::time::Duration,
    /// Tags added to every sample of every collector (Telegraf's `[global_tags]`), e.g.
    /// `{ dc = "ams1" }`; a tag the sample already has is kept (`crate::global_tags`).
    #[serde(default)]
    pub global_tags: std::collections::BTreeMap<String, String>,
    /// Adds `host` = this machine's host name to every sample (Telegraf's `host` tag);
    /// `global_tags = { host = "..." }` sets it by hand instead.
    #[serde(default)]
    pub host_tag: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            log_format: LogFormat::default(),
            log_level: default_log_level(),
            listen: default_listen(),
            ready_grace: default_ready_grace(),
            global_tags: Default::default(),
            host_tag: false,
        }
    }
}

fn default_ready_grace() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_log_level() -> String {
    "info".to_string()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9273))
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A parsed config with the directory its relative paths are resolved against.
#[derive(Debug)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub base_dir: PathBuf,
    /// Where relative *writable* paths (state file, spool) resolve: `$STATE_DIRECTORY` under
    /// systemd (the config's folder is read-only there), else `base_dir`.
    pub state_dir: PathBuf,
    pub config: Config,
}

impl LoadedConfig {
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = parse(&text, path)?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let state_dir = crate::paths::state_directory().unwrap_or_else(|| base_dir.clone());
        Ok(LoadedConfig {
            path: path.to_path_buf(),
            base_dir,
            state_dir,
            config,
        })
    }

    /// Resolves a path from the config relative to the config file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        crate::paths::under(&self.base_dir, p)
    }

    /// Resolves a path the service writes to (state file, spool) relative to
    /// [`LoadedConfig::state_dir`].
    pub fn resolve_writable(&self, p: &Path) -> PathBuf {
        crate::paths::under(&self.state_dir, p)
    }

    pub fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            message: message.into(),
        }
    }
}

/// Parses config text; `origin` names the file in error messages.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| toml_error(text, origin, &e))
}

/// Turns a TOML/serde error into a `file:line:col: message` error.
pub fn toml_error(text: &str, origin: &Path, err: &toml::de::Error) -> ConfigError {
    let (line, column) = err
        .span()
        .map(|span| line_col(text, span.start))
        .unwrap_or((1, 1));
    ConfigError::Parse {
        path: origin.to_path_buf(),
        line,
        column,
        message: err.message().trim().to_string(),
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 8), (2, 3));
        assert_eq!(line_col(t, 999), (3, 1));
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let text = "[service]\nlog_level = \"info\"\nbogus = 1\n";
        let err = parse(text, Path::new("site.toml")).unwrap_err().to_string();
        assert!(err.starts_with("site.toml:3:1: "), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }
}
