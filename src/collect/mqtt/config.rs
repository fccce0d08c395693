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
//!
//! [[mqtt.subscription]]
//! topic = "dc/{site}/ups/{device}"
//! measurement = "ups"
//! format = "json"
//! parse_numeric_strings = true   # "230.1" -> 230.1 where the field's type is numeric
//! [mqtt.subscription.fields]     # a field is a path, or a table with a path and a type
//! output_voltage_v = "voltage"
//! output_source = { path = "source.code", type = "integer" }
//! output_source_state = { path = "source.name", type = "string" }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

pub use super::field_type::FieldType;
use super::points_spec::PointsConfig;
use super::value_spec::{NumericSpec, StatesSpec};
use crate::secret::Secret;

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
    /// Largest payload decoded, in bytes, for every subscription that does not set its own
    /// `max_payload_size` (default 1 MiB). A larger message is counted
    /// (`sitewatch_mqtt_decode_errors_total{reason="oversized"}`), logged with its topic and
    /// size, acknowledged and dropped; the connection carries on. Any packet MQTT allows
    /// (up to 268,435,455 bytes) is read off the wire, so the broker's `message_size_limit`
    /// is what bounds memory.
    #[serde(default)]
    pub max_payload_size: Option<usize>,
    /// Deprecated name of `max_payload_size`, kept so existing configs load. It used to be
    /// rumqttc's packet limit, and a larger message then dropped the connection (and came
    /// back after every reconnect); it now only sets the payload limit. Setting both is an
    /// error.
    #[serde(default)]
    pub max_packet_size: Option<usize>,
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
    /// `[[mqtt.partition]]`: groups of topic filters, each collected by its own persistent
    /// session (client id `<client_id>-<name>`), the unit `mqtt:<name>` of cluster mode (see
    /// `partition.rs`). None: one session for everything, as always.
    #[serde(default, rename = "partition")]
    pub partitions: Vec<PartitionConfig>,
}

/// One `[[mqtt.partition]]` (checked and used in `partition.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// Letters, digits, `-` and `_`: it becomes part of the client id and of the unit.
    pub name: String,
    /// MQTT filters (`+`, `#` allowed); together the topics this partition collects.
    pub topics: Vec<String>,
}

/// TLS to the broker: the `tls` table every client shares (system roots plus `ca_file`,
/// client certificate, `insecure_skip_verify`), see `crate::tls`.
pub use crate::tls::TlsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// The payload is one number (or `true`/`false`), e.g. `21.5`.
    Number,
    /// A JSON object (or an array of them); `fields` picks values by path.
    Json,
    /// InfluxDB line protocol, one or more lines.
    LineProtocol,
    /// Sparkplug B protobuf on `spBv1.0/<group>/<type>/<edge>[/<device>]` (see `sparkplug.rs`).
    SparkplugB,
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

/// What a subscription does with a payload timestamp it cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFallback {
    /// Drop the message (counted as `bad_timestamp` / `timestamp_out_of_range`).
    #[default]
    Drop,
    /// Store it at receive time, counted in `sitewatch_mqtt_timestamp_fallbacks_total`.
    ReceiveTime,
}

/// One entry of a `json` subscription's `fields`: `name = "path"`, or
/// `name = { path = "path", type = "integer" }`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub path: String,
    /// `None`: numbers as float, booleans as bool, strings dropped (or parsed as numbers with
    /// `parse_numeric_strings`).
    pub field_type: Option<FieldType>,
    /// Words the device sends for states (`ON`/`OFF`) and what they are stored as.
    pub states: Option<StatesSpec>,
    /// `scale`, `divide`, `offset`, register `decode` and `word_order`.
    pub numeric: NumericSpec,
}

impl FieldSpec {
    pub fn new(path: impl Into<String>, field_type: Option<FieldType>) -> FieldSpec {
        FieldSpec {
            path: path.into(),
            field_type,
            states: None,
            numeric: NumericSpec::default(),
        }
    }
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FieldSpec, D::Error> {
        /// The table form; unknown keys are errors like everywhere else in the config.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            path: String,
            #[serde(default, rename = "type")]
            field_type: Option<FieldType>,
            #[serde(default)]
            states: Option<StatesSpec>,
            #[serde(default)]
            scale: Option<f64>,
            #[serde(default)]
            divide: Option<f64>,
            #[serde(default)]
            offset: Option<f64>,
            #[serde(default)]
            decode: Option<crate::collect::registers::DataType>,
            #[serde(default)]
            word_order: Option<crate::collect::registers::Order>,
        }

        struct SpecVisitor;

        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = FieldSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a JSON path such as \"sensor.temperature\", or a table such as \
                     { path = \"sensor.temperature\", type = \"float\" }",
                )
            }

            fn visit_str<E: de::Error>(self, path: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec::new(path, None))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FieldSpec {
                    path: t.path,
                    field_type: t.field_type,
                    states: t.states,
                    numeric: NumericSpec {
                        scale: t.scale,
                        divide: t.divide,
                        offset: t.offset,
                        decode: t.decode,
                        word_order: t.word_order,
                    },
                })
            }
        }

        deserializer.deserialize_any(SpecVisitor)
    }
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
    /// `number`: the field name, or `"{capture}"` to name the field by that topic level
    /// (ESPHome's `{node}/sensor/{entity}/state`); the level is then not a tag.
    #[serde(default = "default_field")]
    pub field: String,
    /// Static tags added to every sample. Payload and topic tags override them.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `json`: field name -> path like `a.b.c`, `temp\\.inlet` (a key with a dot) or
    /// `readings.0.value`, or a table `{ path = "a.b", type = "integer" }` that also fixes the
    /// field's type (and `states`).
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
    /// `number`: the type of `field` (default: numbers as float, `true`/`false` as bool).
    #[serde(default, rename = "type")]
    pub field_type: Option<FieldType>,
    /// `number`: state words of the payload (`"default"` for ON/OFF, open/closed, wet/dry, or
    /// a table such as `{ ON = true, OFF = false }`).
    #[serde(default)]
    pub states: Option<StatesSpec>,
    /// `json`: one sample per element of an array or object (`[[mqtt.subscription.each]]`,
    /// see `each.rs`): TTN `rx_metadata[]`, `"Power":[120,85]`, Shelly `switch:0`.
    #[serde(default)]
    pub each: Vec<EachConfig>,
    /// `number` with `field = "{capture}"`: topic level value -> field name (e.g.
    /// `{ temperature = "temperature_c" }`); other values are used sanitised to snake_case.
    #[serde(default)]
    pub field_names: BTreeMap<String, String>,
    /// `sparkplug_b`: metric name as sent (`"Inputs/Supply Air"`) -> field name.
    #[serde(default)]
    pub metric_names: BTreeMap<String, String>,
    /// `sparkplug_b`: metrics not in `metric_names`: `"keep"` (default, snake_case of the
    /// name: `inputs_supply_air`) or `"drop"` (counted as unknown points).
    #[serde(default)]
    pub unknown_metrics: Option<super::points_spec::UnknownPoints>,
    /// `json`: a list of named points (`[mqtt.subscription.points]`, see `points.rs`): each
    /// value is stored under the field its own name maps to, whatever its position.
    #[serde(default)]
    pub points: Option<PointsConfig>,
    /// `json`: tag name -> path; strings, numbers and booleans become the tag value.
    #[serde(default)]
    pub tag_paths: BTreeMap<String, String>,
    /// `json`: path of the payload timestamp; receive time is used when unset or absent.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Unit of payload timestamps (`json` and `line_protocol`).
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// `json`: strftime-style layout of string timestamps (`"%d.%m.%Y %H:%M:%S"`); without an
    /// offset (`%z`) in it, `timestamp_timezone` says the zone.
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// `json`: IANA zone (`"Europe/Berlin"`) of timestamps that carry no offset, such as
    /// Tasmota's `"2026-12-01T07:00:00"`.
    #[serde(default)]
    pub timestamp_timezone: Option<String>,
    /// A payload timestamp that cannot be read or is out of range: `"drop"` the message
    /// (default) or use `"receive_time"` instead, counted in
    /// `sitewatch_mqtt_timestamp_fallbacks_total{subscription,reason}`.
    #[serde(default)]
    pub timestamp_fallback: TimestampFallback,
    /// `json`: turn strings such as `"21.5"` into numbers (some firmware quotes everything),
    /// for fields without a type and fields of type `float`, `integer` or `unsigned`.
    /// Strings that are not numbers (`"12,5"`, `"n/a"`) are dropped from the point either way.
    #[serde(default)]
    pub parse_numeric_strings: bool,
    /// Payloads larger than this many bytes are dropped (counted as `oversized`), acknowledged
    /// and logged. Default: `[mqtt] max_payload_size`, else 1 MiB.
    #[serde(default)]
    pub max_payload_size: Option<usize>,
    /// Most distinct series (measurement + tags) this subscription creates; samples of further
    /// new series are dropped and counted (`sitewatch_mqtt_dropped_total{reason="series_cap"}`),
    /// so one publisher with a changing topic level or tag cannot flood InfluxDB with series.
    /// A warning is logged once the subscription reaches 80 % of it. 0: no cap. The default
    /// (100,000) holds a large site's sensors on one subscription; the cap itself costs about
    /// 16 bytes per series.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn default_max_series() -> usize {
    100_000
}

impl SubscriptionConfig {
    /// The label used in metrics and logs.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.topic)
    }
}

/// Default of `max_payload_size` when neither the subscription nor `[mqtt]` sets it.
pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 1024 * 1024;
/// The largest remaining length an MQTT packet can declare (MQTT 3.1.1 §2.2.3).
pub const MQTT_MAX_PACKET_SIZE: usize = 268_435_455;

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
    #[error("mqtt.partition[{index}] ({name:?}): {problem}")]
    Partition {
        index: usize,
        name: String,
        problem: String,
    },
}

impl MqttConfig {
    /// The checks of the `[mqtt]` table's own keys; [`MqttConfig::validate`] (in `decode`)
    /// adds compiling every subscription.
    pub(crate) fn check_global(&self) -> Result<(), MqttConfigError> {
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
        if self.max_payload_size.is_some() && self.max_packet_size.is_some() {
            return Err(global(
                "max_packet_size",
                "is the deprecated name of max_payload_size; set only max_payload_size",
            ));
        }
        if let Some(max) = self.max_payload_size {
            check_max_payload(max).map_err(|p| global("max_payload_size", p))?;
        }
        if let Some(max) = self.max_packet_size {
            check_max_payload(max).map_err(|p| global("max_packet_size", p))?;
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
        Ok(())
    }

    /// The payload limit subscriptions inherit: `max_payload_size`, or the deprecated
    /// `max_packet_size`, or 1 MiB.
    pub fn max_payload(&self) -> usize {
        self.max_payload_size
            .or(self.max_packet_size)
            .unwrap_or(DEFAULT_MAX_PAYLOAD_SIZE)
    }
}

pub(crate) fn check_max_payload(max: usize) -> Result<(), &'static str> {
    if max == 0 {
        Err("must be at least 1 byte")
    } else if max > MQTT_MAX_PACKET_SIZE {
        Err("is larger than any MQTT message can be (268435455 bytes)")
    } else {
        Ok(())
    }
}

/// `[[mqtt.subscription.each]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EachConfig {
    pub path: String,
    #[serde(default)]
    pub measurement: Option<String>,
    #[serde(default)]
    pub key_tag: Option<String>,
    #[serde(default)]
    pub key_prefix: Option<String>,
    #[serde(default)]
    pub first_index: usize,
    pub fields: BTreeMap<String, FieldSpec>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub timestamp: Option<String>,
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
        assert_eq!(c.max_payload(), 1024 * 1024);
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

    /// Errors in the field table are config parse errors with the file, line and column.
    #[test]
    fn field_table_errors_point_at_the_line() {
        let text = |fields: &str| {
            format!(
                "[influx]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"d\"\n\n[mqtt]\n\
                 host = \"h\"\n\n[[mqtt.subscription]]\ntopic = \"a/{{x}}\"\n\
                 measurement = \"m\"\nformat = \"json\"\n[mqtt.subscription.fields]\n\
                 temperature_c = \"temperature\"\n{fields}\n"
            )
        };
        let parse = |t: &str| crate::config::parse(t, std::path::Path::new("site.toml"));
        let ok = parse(&text("seq = { path = \"seq\", type = \"integer\" }")).unwrap();
        let sub = &ok.mqtt.unwrap().subscriptions[0];
        assert_eq!(
            sub.fields["seq"],
            FieldSpec::new("seq", Some(FieldType::Integer))
        );
        assert_eq!(
            sub.fields["temperature_c"],
            FieldSpec::new("temperature", None)
        );
        for (bad, wants) in [
            ("seq = { path = \"seq\", typ = \"integer\" }", "typ"),
            ("seq = { path = \"seq\", type = \"int\" }", "int"),
            ("seq = { type = \"integer\" }", "path"),
            ("seq = 5", "JSON path"),
        ] {
            let e = parse(&text(bad)).unwrap_err().to_string();
            assert!(e.starts_with("site.toml:14:"), "{bad}: {e}");
            assert!(e.contains(wants), "{bad}: {e}");
        }
    }

    #[test]
    fn max_payload_size_and_its_deprecated_name() {
        let with = |keys: &str| {
            parse(&format!(
                "host = \"h\"\n{keys}\n[[subscription]]\ntopic=\"a\"\nformat=\"number\"\nmeasurement=\"m\""
            ))
            .unwrap()
        };
        assert_eq!(with("").max_payload(), DEFAULT_MAX_PAYLOAD_SIZE);
        let c = with("max_payload_size = 5000000");
        c.validate().unwrap();
        assert_eq!(c.max_payload(), 5_000_000);
        // Old configs keep loading; the old key now means the payload limit.
        let c = with("max_packet_size = 2048");
        c.validate().unwrap();
        assert_eq!(c.max_payload(), 2048);
        let e = with("max_packet_size = 2048\nmax_payload_size = 4096")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mqtt.max_packet_size") && e.contains("deprecated"),
            "{e}"
        );
        for bad in ["max_payload_size = 0", "max_payload_size = 268435456"] {
            let e = with(bad).validate().unwrap_err().to_string();
            assert!(e.contains("mqtt.max_payload_size"), "{bad}: {e}");
        }
        let e = parse("host = \"h\"\n[[subscription]]\ntopic=\"a\"\nformat=\"number\"\nmeasurement=\"m\"\nmax_payload_size = 0")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("subscription[0]") && e.contains("`max_payload_size`"),
            "{e}"
        );
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
