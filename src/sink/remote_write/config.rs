//! The `[remote_write]` configuration table (see `example.toml` beside this file).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Secret, SecretError};
use crate::sink::url::{parse_http_url, redacted_url, redacted_url_text};
use crate::tls::{TlsConfig, TlsError};

/// How a sample's measurement and field become a metric name.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricNaming {
    /// `<measurement>_<field>` (`ups_battery_charge`): the names VictoriaMetrics gives the
    /// InfluxDB line protocol the `[influx]` sink writes, so dashboards carry over.
    #[default]
    MeasurementField,
    /// `<field>` with the measurement in a `measurement` label (`battery_charge{measurement="ups"}`).
    Field,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's write endpoint, e.g. `http://127.0.0.1:8428/api/v1/write`
    /// (VictoriaMetrics) or `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Basic auth user (needs `password`).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `Authorization: Bearer <token>` (not together with basic auth).
    pub bearer_token: Option<Secret>,
    /// Per-request timeout; a request that takes longer is retried.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most samples (one per numeric field) per request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a sample waits before it is sent.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Most series samples (one per numeric field) held in memory, waiting or in flight.
    /// Once reached, the sink stops taking batches: the rules stage and collectors wait, the
    /// MQTT broker holds the unacknowledged messages. Nothing is dropped for lack of room.
    #[serde(default = "default_max_buffered_samples")]
    pub max_buffered_samples: usize,
    /// Cap of the exponential retry backoff (250 ms doubling).
    #[serde(default = "default_max_retry_delay", with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// Labels added to every series (like Prometheus' `external_labels`): a series' own tag of
    /// the same name wins.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub metric_naming: MetricNaming,
    /// Trust and client certificate for an `https://` URL (see `crate::tls`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_batch_size() -> usize {
    2000
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_buffered_samples() -> usize {
    100_000
}
fn default_max_retry_delay() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("[remote_write] {key}: {problem}; {fix}")]
    Config {
        key: &'static str,
        problem: String,
        fix: &'static str,
    },
    #[error("[remote_write] {key}: {source}")]
    Secret {
        key: &'static str,
        source: SecretError,
    },
    #[error("[remote_write] cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn invalid(key: &'static str, problem: String, fix: &'static str) -> RemoteWriteError {
    RemoteWriteError::Config { key, problem, fix }
}

/// A label name as the spec allows it: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Credentials resolved from their secrets.
#[derive(Clone)]
pub enum Auth {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl RemoteWriteConfig {
    /// Checks the URL, the credentials' shape, the ranges and the extra labels.
    pub fn validate(&self) -> Result<reqwest::Url, RemoteWriteError> {
        let url = parse_http_url(
            &self.url,
            "write it like \"http://127.0.0.1:8428/api/v1/write\"",
        )
        .map_err(|(problem, fix)| invalid("url", problem, fix))?;
        if self.username.is_some() != self.password.is_some() {
            return Err(invalid(
                "username",
                "basic auth needs both username and password".into(),
                "set both, or neither",
            ));
        }
        if self.username.is_some() && self.bearer_token.is_some() {
            return Err(invalid(
                "bearer_token",
                "both basic auth and a bearer token are set".into(),
                "keep one of them",
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid(
                "batch_size",
                "is 0".into(),
                "use 1 or more (default 2000)",
            ));
        }
        if self.max_buffered_samples == 0 {
            return Err(invalid(
                "max_buffered_samples",
                "is 0".into(),
                "use at least batch_size (default 100000)",
            ));
        }
        for (key, d) in [
            ("timeout", self.timeout),
            ("flush_interval", self.flush_interval),
            ("max_retry_delay", self.max_retry_delay),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "is 0".into(), "use a duration such as \"1s\""));
            }
        }
        for (name, value) in &self.labels {
            if !is_valid_label_name(name) || name.starts_with("__") {
                return Err(invalid(
                    "labels",
                    format!("{name:?} is not a label name (or is reserved: it starts with __)"),
                    "use letters, digits and _ (not first a digit), not starting with __",
                ));
            }
            if value.is_empty() {
                return Err(invalid(
                    "labels",
                    format!("{name:?} has an empty value, which means no label"),
                    "give it a value or remove it",
                ));
            }
        }
        Ok(url)
    }

    /// Resolves the password or token (an unset variable or unreadable file is an error
    /// naming the key).
    pub fn auth(&self) -> Result<Auth, RemoteWriteError> {
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            let password = password
                .resolve()
                .map_err(|source| RemoteWriteError::Secret {
                    key: "password",
                    source,
                })?;
            return Ok(Auth::Basic {
                user: user.clone(),
                password,
            });
        }
        if let Some(token) = &self.bearer_token {
            let token = token.resolve().map_err(|source| RemoteWriteError::Secret {
                key: "bearer_token",
                source,
            })?;
            return Ok(Auth::Bearer(token));
        }
        Ok(Auth::None)
    }

    /// The URL as logs and `check` show it: a password in it is `***`.
    pub fn shown_url(&self) -> String {
        reqwest::Url::parse(&self.url)
            .map(|u| redacted_url(&u))
            .unwrap_or_else(|_| redacted_url_text(&self.url))
    }

    pub fn auth_kind(&self) -> &'static str {
        if self.username.is_some() {
            "basic auth"
        } else if self.bearer_token.is_some() {
            "bearer token"
        } else if reqwest::Url::parse(&self.url).is_ok_and(|u| !u.username().is_empty()) {
            // reqwest sends credentials in the URL as basic auth.
            "basic auth from the URL"
        } else {
            "no auth"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RemoteWriteConfig {
        toml::from_str(text).expect("config parses")
    }

    #[test]
    fn defaults_and_the_shipped_sample_parse() {
        let c = parse("url = \"http://127.0.0.1:8428/api/v1/write\"");
        assert_eq!(c.batch_size, 2000);
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.max_buffered_samples, 100_000);
        assert_eq!(c.metric_naming, MetricNaming::MeasurementField);
        c.validate().unwrap();
        assert!(matches!(c.auth().unwrap(), Auth::None));

        #[derive(Deserialize)]
        struct File {
            remote_write: RemoteWriteConfig,
        }
        let sample: File = toml::from_str(include_str!("example.toml")).expect("sample");
        let c = sample.remote_write;
        c.validate().unwrap();
        assert_eq!(c.metric_naming, MetricNaming::MeasurementField);
        assert_eq!(
            c.labels.get("instance_group").map(String::as_str),
            Some("dc1")
        );
    }

    #[test]
    fn invalid_tables_name_the_key() {
        let cases = [
            ("url = \"ftp://x/\"", "url"),
            ("url = \"not a url\"", "url"),
            ("url = \"http://x/\"\nusername = \"u\"", "username"),
            (
                "url = \"http://x/\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"",
                "bearer_token",
            ),
            ("url = \"http://x/\"\nbatch_size = 0", "batch_size"),
            (
                "url = \"http://x/\"\nmax_buffered_samples = 0",
                "max_buffered_samples",
            ),
            ("url = \"http://x/\"\ntimeout = \"0s\"", "timeout"),
            (
                "url = \"http://x/\"\nlabels = { \"bad-name\" = \"x\" }",
                "labels",
            ),
            (
                "url = \"http://x/\"\nlabels = { __reserved = \"x\" }",
                "labels",
            ),
            ("url = \"http://x/\"\nlabels = { dc = \"\" }", "labels"),
        ];
        for (text, key) in cases {
            let err = parse(text).validate().unwrap_err().to_string();
            assert!(err.contains(&format!("] {key}:")), "{text}: {err}");
        }
        assert!(toml::from_str::<RemoteWriteConfig>("url = \"http://x/\"\nbogus = 1").is_err());
        assert!(
            toml::from_str::<RemoteWriteConfig>("url = \"http://x/\"\nmetric_naming = \"x\"")
                .is_err()
        );
    }

    #[test]
    fn secrets_resolve_and_urls_are_redacted() {
        let c = parse(
            "url = \"http://u:hunter2@vm:8428/api/v1/write\"\nbearer_token = { env = \"SITEWATCH_TEST_RW_UNSET\" }",
        );
        assert!(!c.shown_url().contains("hunter2"), "{}", c.shown_url());
        let err = c.auth().err().expect("unset variable").to_string();
        assert!(err.contains("bearer_token"), "{err}");
        let c = parse("url = \"http://x/\"\nusername = \"u\"\npassword = \"p\"");
        assert!(
            matches!(c.auth().unwrap(), Auth::Basic { user, password } if user == "u" && password == "p")
        );
        assert!(!format!("{c:?}").contains("\"p\""));
        assert_eq!(c.auth_kind(), "basic auth");
    }
}
