//! `[mqtt]` configuration: broker connection and `[[mqtt.subscription]]` entries.
//!
//! ```toml
//! [mqtt]
//! host = "broker.example.net"
//! port = 8883
//! username = "sitewatch"
//! password = { env = "SITEWATCH_MQTT_PASSWORD" }
//! tls = { ca_file = "/etc/sitewatch/mqtt-ca.pem" }
//! # share_group = "sitewatch"   # scale-out: instances with this group split the messages
//!
//! [[mqtt.subscription]]
//! topic = "dc/{site}/{room}/{rack}/temperature"
//! measurement = "environment"
//! format = "number"
//! field = "temperature_c"
//!
//! [[mqtt.subscription]]
//! topic = "zigbee2mqtt/{sensor}"
//! measurement = "environment"
//! format = "json"
//! fields = { temperature_c = "temperature", humidity_pct = "humidity", leak = "water_leak" }
//! tags = { site = "ams1" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::decode::Decoder;
use crate::config::Secret;

/// Broker connection and subscriptions, TOML table `[mqtt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Stable across restarts: the broker keeps the persistent session (subscriptions and
    /// un-acknowledged QoS 1 messages) under this id. Two sitewatch instances must not share it.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// `false` (default) keeps the broker-side session across reconnects and restarts, which is
    /// what makes delivery at-least-once.
    #[serde(default)]
    pub clean_session: bool,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Largest MQTT packet accepted, in bytes. rumqttc's default (10 KiB) drops the connection
    /// on any larger JSON payload; keep this at or above the broker's `message_size_limit`,
    /// or an oversized retained/queued message will be redelivered after every reconnect.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Cap of the exponential reconnect backoff.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    /// On shutdown, how long to wait for acknowledgements of data already handed downstream
    /// before disconnecting; un-acknowledged messages are redelivered on the next start.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Scale-out: join the MQTT shared subscription group of this name. Every filter is
    /// subscribed as `$share/<group>/<filter>`, and the broker hands each message to one
    /// member of the group instead of to all of them. Run several instances with the same
    /// group and subscriptions, each with its own `client_id`. Mosquitto 2.x honours shared
    /// subscriptions for MQTT 3.1.1 clients; `sitewatch once` ignores the group (it reads a
    /// copy of everything instead of taking messages from the running instances).
    #[serde(default)]
    pub share_group: Option<String>,
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// TLS to the broker. Without `ca_file` the system's root certificates are used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) for `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// The payload is one number (or `true`/`false`), e.g. `21.5`.
    Number,
    /// A JSON object (or an array of them); `fields` picks values by path.
    Json,
    /// InfluxDB line protocol, one or more lines.
    LineProtocol,
}

/// Unit of a numeric payload timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    /// By magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds,
    /// else nanoseconds (unambiguous for every date from 1973 to 5138); strings as RFC 3339.
    #[default]
    Auto,
    S,
    Ms,
    Us,
    Ns,
    /// A string like `2024-05-01T12:00:00.250+02:00`.
    Rfc3339,
}

/// One `[[mqtt.subscription]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Topic template: `{name}` captures one level as a tag, `+` matches one level,
    /// `{name...}` / `#` as the last level capture / match the rest.
    pub topic: String,
    /// Label for metrics and logs; defaults to the topic template.
    #[serde(default)]
    pub name: Option<String>,
    /// 0 or 1 (default). QoS 2 publishes arrive as QoS 1; see `Decoder::compile` for why 2 is
    /// refused.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Measurement of the samples; required for `number` and `json`, not allowed for
    /// `line_protocol` (the payload names its measurement).
    #[serde(default)]
    pub measurement: Option<String>,
    pub format: PayloadFormat,
    /// `number`: the field name.
    #[serde(default = "default_field")]
    pub field: String,
    /// Static tags added to every sample. Payload and topic tags override them.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `json`: field name -> path like `a.b.c` or `readings.0.value`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// `json`: tag name -> path; strings, numbers and booleans become the tag value.
    #[serde(default)]
    pub tag_paths: BTreeMap<String, String>,
    /// `json`: path of the payload timestamp; receive time is used when unset or absent.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Unit of payload timestamps (`json` and `line_protocol`).
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// `json`: turn strings such as `"21.5"` into numbers (some firmware quotes everything).
    #[serde(default)]
    pub parse_numeric_strings: bool,
    /// Payloads larger than this many bytes are rejected (counted as `oversized`).
    #[serde(default)]
    pub max_payload_size: Option<usize>,
    /// Most distinct series (measurement + tags) this subscription creates; samples of further
    /// new series are dropped and counted (`sitewatch_mqtt_dropped_total{reason="series_cap"}`),
    /// so one publisher with a changing topic level or tag cannot flood InfluxDB with series.
    /// 0: no cap.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn default_max_series() -> usize {
    10_000
}

impl SubscriptionConfig {
    /// The label used in metrics and logs.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.topic)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttConfigError {
    #[error("mqtt.{key}: {problem}")]
    Global { key: &'static str, problem: String },
    #[error("mqtt.subscription[{index}] (topic {topic:?}): `{key}`: {problem}")]
    Subscription {
        index: usize,
        topic: String,
        key: &'static str,
        problem: String,
    },
}

impl MqttConfig {
    /// Checks everything that can be checked without the network, including compiling every
    /// subscription (templates, paths, tag/field name clashes).
    pub fn validate(&self) -> Result<(), MqttConfigError> {
        self.compile().map(|_| ())
    }

    pub(crate) fn compile(&self) -> Result<Vec<Decoder>, MqttConfigError> {
        let global = |key, problem: &str| MqttConfigError::Global {
            key,
            problem: problem.to_string(),
        };
        if self.host.trim().is_empty() {
            return Err(global(
                "host",
                "is empty; set the broker's host name or address",
            ));
        }
        if self.client_id.is_empty() && !self.clean_session {
            return Err(global(
                "client_id",
                "must not be empty with clean_session = false (the broker keys the persistent \
                 session by it)",
            ));
        }
        if self.client_id.len() > 65535 {
            return Err(global(
                "client_id",
                "is longer than MQTT allows (65535 bytes)",
            ));
        }
        if self.keep_alive < Duration::from_secs(1) && !self.keep_alive.is_zero() {
            return Err(global("keep_alive", "must be 0 (off) or at least 1s"));
        }
        if self.max_packet_size < 1024 {
            return Err(global("max_packet_size", "must be at least 1024 bytes"));
        }
        if self.reconnect_backoff_max.is_zero() {
            return Err(global("reconnect_backoff_max", "must be more than 0s"));
        }
        if let Some(group) = &self.share_group {
            // MQTT 5 §4.8.2: a ShareName is at least one character and contains no "/", "+"
            // or "#".
            if group.is_empty() || group.contains(['/', '+', '#']) {
                return Err(global(
                    "share_group",
                    "must be a non-empty name without '/', '+' or '#', e.g. \"sitewatch\"",
                ));
            }
        }
        if self.subscriptions.is_empty() {
            return Err(global(
                "subscription",
                "no [[mqtt.subscription]] entries; add at least one or remove [mqtt]",
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                return Err(global(
                    "tls",
                    "client_cert and client_key must be set together (mutual TLS)",
                ));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(global(
                "password",
                "is set without username; MQTT 3.1.1 sends a password only with a username",
            ));
        }
        let mut labels = std::collections::HashSet::new();
        let mut decoders = Vec::with_capacity(self.subscriptions.len());
        for (index, sub) in self.subscriptions.iter().enumerate() {
            if !labels.insert(sub.label()) {
                return Err(MqttConfigError::Subscription {
                    index,
                    topic: sub.topic.clone(),
                    key: "name",
                    problem: format!(
                        "label {:?} is used by an earlier subscription; set a distinct `name`",
                        sub.label()
                    ),
                });
            }
            decoders.push(Decoder::compile(index, sub)?);
        }
        Ok(decoders)
    }
}

fn default_port() -> u16 {
    1883
}

fn default_client_id() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("sitewatch-{host}")
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn default_max_packet_size() -> usize {
    1024 * 1024
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(5)
}

fn default_qos() -> u8 {
    1
}

fn default_field() -> String {
    "value".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MqttConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn defaults_and_subscriptions() {
        let c = parse(
            r#"
            host = "localhost"
            [[subscription]]
            topic = "dc/{site}/temp"
            measurement = "env"
            format = "number"
            "#,
        )
        .unwrap();
        assert_eq!(c.port, 1883);
        assert!(c.client_id.starts_with("sitewatch-"));
        assert!(!c.clean_session);
        assert_eq!(c.keep_alive, Duration::from_secs(30));
        assert_eq!(c.max_packet_size, 1024 * 1024);
        assert_eq!(c.subscriptions[0].qos, 1);
        assert_eq!(c.subscriptions[0].field, "value");
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(parse("host = \"x\"\nprot = 1").is_err());
        assert!(parse(
            "host = \"x\"\n[[subscription]]\ntopic=\"a\"\nformat=\"number\"\nmesurement=\"m\""
        )
        .is_err());
    }

    #[test]
    fn validation_names_subscription_and_key() {
        let c = parse(
            r#"
            host = "localhost"
            [[subscription]]
            topic = "a/{x}"
            measurement = "m"
            format = "number"
            [[subscription]]
            topic = "b/{x}/#/c"
            measurement = "m"
            format = "number"
            "#,
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("subscription[1]") && e.contains("b/{x}/#/c") && e.contains("`topic`"));

        let c = parse("host = \"h\"\nclient_id = \"\"\n[[subscription]]\ntopic=\"a\"\nformat=\"number\"\nmeasurement=\"m\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("client_id"));
    }

    #[test]
    fn share_group_must_be_a_plain_name() {
        let with_group = |g: &str| {
            parse(&format!(
                "host = \"h\"\nshare_group = {g:?}\n[[subscription]]\ntopic=\"a\"\nformat=\"number\"\nmeasurement=\"m\""
            ))
            .unwrap()
        };
        with_group("sitewatch").validate().unwrap();
        for bad in ["", "a/b", "a+", "#"] {
            let e = with_group(bad).validate().unwrap_err().to_string();
            assert!(e.contains("mqtt.share_group"), "{bad:?}: {e}");
        }
    }
}
