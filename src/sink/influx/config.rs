//! The `[influx]` configuration table.
//!
//! ```toml
//! [influx]
//! url = "http://127.0.0.1:8086"
//! api = "v1"                  # v1 | v2 | v3
//! database = "sitewatch"      # v1 and v3
//! # retention_policy = "autogen"
//! # username = "sitewatch"
//! # password = { env = "SITEWATCH_INFLUX_PASSWORD" }
//! # org = "dc-ops"            # v2
//! # bucket = "sitewatch"      # v2
//! # token = { file = "/etc/sitewatch/influx.token" }   # v2 and v3
//! batch_size = 5000
//! flush_interval = "1s"
//! timeout = "10s"
//! gzip = true
//! max_retry_delay = "30s"
//! buffer_limit = 100000
//! shutdown_timeout = "10s"
//! events_measurement = "events"
//! # On-disk spool for outages (default: none, memory only). Relative to the config file.
//! spool_dir = "/var/lib/sitewatch/spool"
//! spool_max_bytes = 1073741824  # 1 GiB
//! fsync = "batch"               # always | batch | never
//!
//! # HTTPS with an internal CA, optionally mutual TLS (see `crate::tls`).
//! [influx.tls]
//! ca_file = "/etc/sitewatch/internal-ca.pem"
//! # client_cert = "/etc/sitewatch/client.pem"
//! # client_key = "/etc/sitewatch/client.key"
//! ```

use crate::sink::url::parse_http_url;
pub use crate::sink::url::{redacted_url, redacted_url_text};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Secret, SecretError};
use crate::tls::{TlsConfig, TlsError};

pub use crate::buffer::{FsyncPolicy, SpoolError};

/// Which write API the server speaks. Only the URL and the authorization differ.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// InfluxDB 1.x `POST /write?db=&rp=&precision=ns`, optional basic auth. Also accepted by
    /// InfluxDB 2.x/3.x compatibility endpoints and VictoriaMetrics.
    #[default]
    V1,
    /// InfluxDB 2.x `POST /api/v2/write?org=&bucket=&precision=ns`, `Authorization: Token`.
    V2,
    /// InfluxDB 3 `POST /api/v3/write_lp?db=&precision=nanosecond`, `Authorization: Bearer`.
    V3,
}

impl InfluxApi {
    pub fn as_str(self) -> &'static str {
        match self {
            InfluxApi::V1 => "v1",
            InfluxApi::V2 => "v2",
            InfluxApi::V3 => "v3",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8086`. A path prefix (reverse proxy)
    /// is kept.
    pub url: String,
    #[serde(default)]
    pub api: InfluxApi,
    /// v1 and v3: database name.
    pub database: Option<String>,
    /// v1: retention policy (server default when absent).
    pub retention_policy: Option<String>,
    /// v1: user for basic auth (needs `password`).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// v2: organization name or id.
    pub org: Option<String>,
    /// v2: bucket name.
    pub bucket: Option<String>,
    /// v2 and v3: API token.
    pub token: Option<Secret>,
    /// Lines per write request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a line waits before it is sent.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Cap of the exponential retry backoff.
    #[serde(default = "default_max_retry_delay", with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// Most samples held in memory. While the server answers, a full buffer stops the writer
    /// from taking more series (backpressure: collectors wait, the MQTT broker queues). While
    /// it fails, new data goes to the spool; without `spool_dir` the oldest series samples
    /// are dropped instead (events never are).
    #[serde(default = "default_buffer_limit")]
    pub buffer_limit: usize,
    /// Most bytes of encoded lines held in memory (a second bound beside `buffer_limit`, for
    /// sources whose samples are large). Reaching it has the same effect as `buffer_limit`.
    #[serde(default = "default_buffer_max_bytes")]
    pub buffer_max_bytes: usize,
    /// With `spool_dir`: when the oldest sample in memory has waited this long beyond its
    /// `flush_interval` for the server (a hung or slow InfluxDB), everything in memory moves
    /// to the spool and is acknowledged to its sources, so the MQTT broker's in-flight window
    /// keeps moving instead of filling (a broker with a full queue drops messages). At most
    /// `timeout`; default 3 s, or `timeout` if that is shorter.
    #[serde(default, with = "humantime_serde")]
    pub spill_after: Option<Duration>,
    /// How long shutdown may spend flushing what is buffered.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Measurement that samples from the events channel are written to.
    #[serde(default = "default_events_measurement")]
    pub events_measurement: String,
    /// Directory of the on-disk spool used while the server fails (and replayed at start-up).
    /// None: memory only.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Size cap of the spool in bytes; beyond it the oldest series segments are deleted
    /// (counted as `spool_full`), events only when no series data is left.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// When spooled data is fsync'd: `always` (each write), `batch` (each group of writes,
    /// before their acks complete) or `never`.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Samples per second this instance is expected to write: only for `sitewatch check`,
    /// which then says whether the spool holds an outage of `hold_outage` and which broker
    /// settings hold the time before memory moves to the spool.
    #[serde(default)]
    pub expected_rate: Option<f64>,
    /// The InfluxDB outage the spool should hold at `expected_rate` (default 1 h).
    #[serde(default = "default_hold_outage", with = "humantime_serde")]
    pub hold_outage: Duration,
    /// Trust and client certificate for an `https://` URL (also used by `rules test`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Below this a spool holds too little to be worth its segments.
pub const MIN_SPOOL_BYTES: u64 = 64 << 10;

fn default_batch_size() -> usize {
    5000
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_max_retry_delay() -> Duration {
    Duration::from_secs(30)
}
fn default_buffer_limit() -> usize {
    100_000
}
fn default_buffer_max_bytes() -> usize {
    64 << 20
}
const DEFAULT_SPILL_AFTER: Duration = Duration::from_secs(3);
fn default_hold_outage() -> Duration {
    Duration::from_secs(3600)
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_events_measurement() -> String {
    super::event::EVENTS_MEASUREMENT.to_string()
}

/// Errors from building an [`super::InfluxWriter`].
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    #[error("[influx] {key}: {problem}; {fix}")]
    Config {
        key: &'static str,
        problem: String,
        fix: &'static str,
    },
    #[error("[influx] {key}: {source}")]
    Secret {
        key: &'static str,
        source: SecretError,
    },
    #[error("[influx] cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

fn missing(key: &'static str, problem: String, fix: &'static str) -> InfluxError {
    InfluxError::Config { key, problem, fix }
}

fn is_blank(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(|s| s.trim().is_empty())
}

impl InfluxConfig {
    /// Checks the keys the chosen `api` needs and the ranges of the tuning keys.
    pub fn validate(&self) -> Result<(), InfluxError> {
        parse_http_url(&self.url, "write it like \"http://127.0.0.1:8086\"")
            .map_err(|(problem, fix)| missing("url", problem, fix))?;
        let api = self.api.as_str();
        match self.api {
            InfluxApi::V1 => {
                if is_blank(&self.database) {
                    return Err(missing(
                        "database",
                        "api = \"v1\" needs a database".into(),
                        "add database = \"sitewatch\" (create it with CREATE DATABASE first)",
                    ));
                }
                if self.username.is_some() != self.password.is_some() {
                    return Err(missing(
                        if self.username.is_some() {
                            "password"
                        } else {
                            "username"
                        },
                        "username and password go together".into(),
                        "set both, or neither for a server without authentication",
                    ));
                }
                self.reject_keys(
                    api,
                    &[
                        ("org", self.org.is_some()),
                        ("bucket", self.bucket.is_some()),
                        ("token", self.token.is_some()),
                    ],
                )?;
            }
            InfluxApi::V2 => {
                for (key, blank) in [
                    ("org", is_blank(&self.org)),
                    ("bucket", is_blank(&self.bucket)),
                ] {
                    if blank {
                        return Err(missing(
                            key,
                            format!("api = \"v2\" needs {key}"),
                            "set org and bucket as shown in the InfluxDB UI (Load Data > Buckets)",
                        ));
                    }
                }
                if self.token.is_none() {
                    return Err(missing(
                        "token",
                        "api = \"v2\" needs a token".into(),
                        "create a write token for the bucket and set token = { env = \"...\" } or { file = \"...\" }",
                    ));
                }
                self.reject_keys(
                    api,
                    &[
                        ("database", self.database.is_some()),
                        ("retention_policy", self.retention_policy.is_some()),
                        ("username", self.username.is_some()),
                        ("password", self.password.is_some()),
                    ],
                )?;
            }
            InfluxApi::V3 => {
                if is_blank(&self.database) {
                    return Err(missing(
                        "database",
                        "api = \"v3\" needs a database".into(),
                        "add database = \"sitewatch\"",
                    ));
                }
                if self.token.is_none() {
                    return Err(missing(
                        "token",
                        "api = \"v3\" needs a token".into(),
                        "create one with `influxdb3 create token` and set token = { env = \"...\" } or { file = \"...\" }",
                    ));
                }
                self.reject_keys(
                    api,
                    &[
                        ("org", self.org.is_some()),
                        ("bucket", self.bucket.is_some()),
                        ("retention_policy", self.retention_policy.is_some()),
                        ("username", self.username.is_some()),
                        ("password", self.password.is_some()),
                    ],
                )?;
            }
        }
        if self.batch_size == 0 {
            return Err(missing(
                "batch_size",
                "must be at least 1".into(),
                "5000 is a good start",
            ));
        }
        if self.buffer_limit < self.batch_size {
            return Err(missing(
                "buffer_limit",
                format!(
                    "{} is below batch_size {}",
                    self.buffer_limit, self.batch_size
                ),
                "raise buffer_limit (default 100000) or lower batch_size",
            ));
        }
        for (key, d) in [
            ("flush_interval", self.flush_interval),
            ("timeout", self.timeout),
            ("max_retry_delay", self.max_retry_delay),
        ] {
            if d.is_zero() {
                return Err(missing(
                    key,
                    "must be longer than 0".into(),
                    "use a duration like \"1s\"",
                ));
            }
        }
        if self.buffer_max_bytes < 1 << 20 {
            return Err(missing(
                "buffer_max_bytes",
                format!("{} bytes is too small", self.buffer_max_bytes),
                "use at least 1048576 (1 MiB); the default is 67108864 (64 MiB)",
            ));
        }
        if self
            .expected_rate
            .is_some_and(|r| !r.is_finite() || r <= 0.0)
        {
            return Err(missing(
                "expected_rate",
                "must be a positive number of samples per second".into(),
                "e.g. expected_rate = 500, or leave it out",
            ));
        }
        let spill = self.spill_after();
        if spill.is_zero() || spill > self.timeout {
            return Err(missing(
                "spill_after",
                format!(
                    "{spill:?} must be longer than 0 and at most timeout ({:?})",
                    self.timeout
                ),
                "leave it out (3s, or timeout if shorter) or set it below timeout",
            ));
        }
        if self.spool_dir.is_some() && self.spool_max_bytes < MIN_SPOOL_BYTES {
            return Err(missing(
                "spool_max_bytes",
                format!("{} bytes is too small", self.spool_max_bytes),
                "use at least 65536; the default is 1073741824 (1 GiB)",
            ));
        }
        if self
            .spool_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(missing(
                "spool_dir",
                "is empty".into(),
                "leave it out for a memory-only buffer, or name a directory",
            ));
        }
        if self.events_measurement.is_empty() {
            return Err(missing(
                "events_measurement",
                "is empty".into(),
                "leave it out for \"events\"",
            ));
        }
        Ok(())
    }

    /// How long memory may wait for the server before it moves to the spool.
    pub fn spill_after(&self) -> Duration {
        self.spill_after
            .unwrap_or(DEFAULT_SPILL_AFTER.min(self.timeout))
    }

    /// A key that belongs to another API is almost always a copy-paste mistake that would
    /// otherwise be silently ignored.
    fn reject_keys(&self, api: &str, keys: &[(&'static str, bool)]) -> Result<(), InfluxError> {
        for &(key, present) in keys {
            if present {
                return Err(InfluxError::Config {
                    key,
                    problem: format!("is not used with api = \"{api}\""),
                    fix: "remove it, or set api to the flavour that uses it (v1: database/retention_policy/username/password, v2: org/bucket/token, v3: database/token)",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> InfluxConfig {
        toml::from_str(s).expect("parse")
    }

    #[test]
    fn passwords_in_urls_are_never_shown() {
        let u = reqwest::Url::parse("http://admin:S3cret%21@db.example:8086/x").unwrap();
        assert_eq!(redacted_url(&u), "http://admin:***@db.example:8086/x");
        let plain = reqwest::Url::parse("http://db.example:8086").unwrap();
        assert_eq!(redacted_url(&plain), "http://db.example:8086/");
        assert_eq!(
            redacted_url_text("http://u:pa ss@bad host"),
            "http://***@bad host"
        );
        let c = parse("url = \"http://u:hunter2@[::1\"\ndatabase = \"sw\"");
        let e = c.validate().unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn spill_after_is_at_most_the_timeout() {
        let c = parse("url = \"http://127.0.0.1:8086\"\ndatabase = \"sw\"");
        assert_eq!(c.spill_after(), Duration::from_secs(3));
        let short = parse("url = \"http://127.0.0.1:8086\"\ndatabase = \"sw\"\ntimeout = \"2s\"");
        short.validate().unwrap();
        assert_eq!(short.spill_after(), Duration::from_secs(2));
        assert_eq!(c.buffer_max_bytes, 64 << 20);
        for bad in ["spill_after = \"11s\"", "spill_after = \"0s\""] {
            let c = parse(&format!(
                "url = \"http://127.0.0.1:8086\"\ndatabase = \"sw\"\n{bad}"
            ));
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("spill_after"), "{e}");
        }
    }

    #[test]
    fn defaults() {
        let c = parse(
            r#"url = "http://127.0.0.1:8086"
database = "sw""#,
        );
        c.validate().unwrap();
        assert_eq!(c.api, InfluxApi::V1);
        assert_eq!(c.batch_size, 5000);
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(c.gzip);
        assert_eq!(c.max_retry_delay, Duration::from_secs(30));
        assert_eq!(c.buffer_limit, 100_000);
        assert_eq!(c.events_measurement, "events");
        assert_eq!(c.spool_dir, None);
        assert_eq!(c.spool_max_bytes, 1 << 30);
        assert_eq!(c.fsync, FsyncPolicy::Batch);
    }

    #[test]
    fn spool_keys() {
        let c = parse(
            r#"url = "http://x"
database = "d"
spool_dir = "spool"
spool_max_bytes = 1000000
fsync = "always""#,
        );
        c.validate().unwrap();
        assert_eq!(c.spool_dir.as_deref(), Some(std::path::Path::new("spool")));
        assert_eq!(c.fsync, FsyncPolicy::Always);
        let e = err(r#"url = "http://x"
database = "d"
spool_dir = "s"
spool_max_bytes = 10"#);
        assert!(e.contains("spool_max_bytes"), "{e}");
        assert!(toml::from_str::<InfluxConfig>(
            "url = \"http://x\"\ndatabase = \"d\"\nfsync = \"sometimes\""
        )
        .is_err());
    }

    #[test]
    fn full_v2() {
        let c = parse(
            r#"url = "https://influx.example:8086/prefix"
api = "v2"
org = "ops"
bucket = "b"
token = { env = "X" }
batch_size = 100
flush_interval = "250ms"
gzip = false"#,
        );
        c.validate().unwrap();
        assert_eq!(c.flush_interval, Duration::from_millis(250));
        assert!(!c.gzip);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<InfluxConfig>(
            r#"url = "http://x"
databse = "typo""#,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("databse"), "{e}");
    }

    fn err(s: &str) -> String {
        parse(s).validate().unwrap_err().to_string()
    }

    #[test]
    fn validation_names_the_missing_key() {
        assert!(err(r#"url = "http://x""#).contains("database"));
        let e = err(r#"url = "http://x"
api = "v2"
org = "o"
token = "t""#);
        assert!(e.contains("bucket"), "{e}");
        let e = err(r#"url = "http://x"
api = "v2"
org = "o"
bucket = "b""#);
        assert!(e.contains("token"), "{e}");
        let e = err(r#"url = "http://x"
api = "v3"
database = "d""#);
        assert!(e.contains("token"), "{e}");
        let e = err(r#"url = "http://x"
database = "d"
username = "u""#);
        assert!(e.contains("password"), "{e}");
        let e = err(r#"url = "http://x"
database = "d"
bucket = "b""#);
        assert!(e.contains("bucket") && e.contains("not used"), "{e}");
        let e = err(r#"url = "127.0.0.1:8086"
database = "d""#);
        assert!(e.contains("url"), "{e}");
        let e = err(r#"url = "http://x"
database = "d"
batch_size = 0"#);
        assert!(e.contains("batch_size"), "{e}");
        let e = err(r#"url = "http://x"
database = "d"
buffer_limit = 10"#);
        assert!(e.contains("buffer_limit"), "{e}");
    }
}
