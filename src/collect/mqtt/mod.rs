//! MQTT collector: subscribe to topic templates, decode payloads into samples, acknowledge
//! QoS 1/2 messages to the broker only once the sink has stored their samples.
//!
//! - [`config`]: the `[mqtt]` table and `[[mqtt.subscription]]` entries.
//! - [`topic`]: topic templates (`dc/{site}/{rack}/temperature`) → MQTT filters + tags.
//! - [`decode`]: `number`, `json`, `line_protocol` and `sparkplug_b` payload decoders.
//! - [`subscriber`]: one session's long-running loop and the one-shot [`collect_for`].
//! - [`partition`]: `[[mqtt.partition]]` (cluster units `mqtt:<name>`), [`filter`]: filter
//!   intersection; `sessions`: [`run`], one session, or one per partition while owned.
//! - [`source`]: the collector as the topology's [`crate::collect::Source`].
//!
//! # Delivery guarantees
//!
//! With `clean_session = false` (the default) and a stable `client_id`, the broker keeps the
//! session while sitewatch is down or reconnecting. Each QoS 1 message travels downstream with
//! a [`crate::ack::Ack`]; the PUBACK goes to the broker when every sink has stored it. A
//! message whose ack never completes (crash, shutdown, sink failure) is redelivered by the
//! broker on the next connection. InfluxDB stores the same series and timestamp once, so a
//! redelivered message with a payload timestamp overwrites instead of duplicating; one decoded
//! with receive time lands as a second point.
//!
//! When the pipeline is full the collector waits before reading the next message, so the
//! broker queues for it (backpressure instead of memory). A wait longer than 1.5 × `keep_alive`
//! lets the broker drop the connection; the collector reconnects and un-acknowledged messages
//! come again, so nothing is lost.
//!
//! Payloads that can never decode are counted (`sitewatch_mqtt_decode_errors_total`),
//! logged, dropped and acknowledged at once: redelivering them would only loop. Field values
//! that do not fit their field's type are dropped from the point, which is kept, and counted
//! (`sitewatch_mqtt_field_errors_total`; see [`decode`] for the type policy).
//!
//! # Oversized messages
//!
//! rumqttc reads any incoming packet MQTT allows (268,435,455 bytes); only sitewatch's own
//! outgoing packets have a small limit. A payload over `max_payload_size` (per subscription,
//! else `[mqtt] max_payload_size`, else 1 MiB) is rejected by its length before it is looked
//! at, counted (`reason="oversized"`), logged with topic and size, and acknowledged, so the
//! session keeps flowing. (A limit in rumqttc would drop the connection instead, before the
//! message could be acknowledged, and the broker would redeliver it after every reconnect.)
//! The payload is read once into rumqttc's buffer and borrowed from there, never copied; the
//! broker's `message_size_limit` is what bounds that memory.
//!
//! # Broker settings
//!
//! The broker stops sending to a client once it has that many un-acknowledged QoS 1/2
//! messages; Mosquitto's `max_inflight_messages` defaults to 20. Since sitewatch
//! acknowledges only after the sink has written (up to the sink's flush interval), raise it,
//! e.g. in `mosquitto.conf`:
//!
//! ```text
//! max_inflight_messages 1000     # un-acked messages in flight per client
//! max_queued_messages 100000     # per-client queue while sitewatch is down or slow
//! message_size_limit 16777216    # largest publish the broker takes (and sitewatch may hold)
//! persistence true               # keep sessions across broker restarts
//! ```
//!
//! # Scale-out
//!
//! Several instances with the same subscriptions, the same `share_group` and each its own
//! `client_id` form one MQTT shared subscription (`$share/<group>/<filter>`): the broker gives
//! each message to one of them. Acknowledgement after storage works per instance as above. A
//! stopped member with a persistent session (`clean_session = false`) keeps its place in the
//! group on Mosquitto 2.0, so its share of QoS 1 messages is queued for it until it returns
//! (delayed, not lost); with `clean_session = true` the broker forgets it at disconnect and
//! the others take the whole stream.
//!
//! The broker spreads messages over the group one by one, not by topic: each instance sees
//! about 1/n of every series' samples and keeps its own rule state. A breaching sample still
//! fires on the instance that gets it, and the duplicate alerts of several instances (same
//! labels) are merged by Alertmanager; but a `for` duration or a no-data check then judges a
//! thinner stream per instance. Where that matters, split by topic instead: partitions
//! (`[[mqtt.partition]]`, see [`partition`]) shared by a `[cluster]` give each group of topics
//! one persistent session run by one member at a time, moved to another member when it dies.

pub mod config;
pub mod decode;
pub mod each;
mod field_type;
pub mod filter;
mod flat_json;
mod json_value;
pub mod partition;
pub mod path;
pub mod points;
mod points_spec;
pub mod reach;
mod reason;
mod series_cap;
mod session_status;
mod sessions;
mod source;
pub mod sparkplug;
pub mod subscriber;
pub mod timefmt;
pub mod topic;
mod topic_warn;
mod value_spec;
pub mod values;

pub use config::{
    FieldSpec, FieldType, MqttConfig, MqttConfigError, PartitionConfig, PayloadFormat,
    SubscriptionConfig, TimestampFallback, TimestampUnit, TlsConfig,
};
pub use decode::{DecodeError, DecodeReason, Decoder, FieldError};
pub use partition::{cluster_warnings, partition_unit, partition_units};
pub use sessions::run;
pub use source::{source, MqttSource};
pub use subscriber::{collect_for, MqttError};
pub use topic::{TopicTemplate, TopicTemplateError};
