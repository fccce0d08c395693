//! MQTT collector: subscribe to topic templates, decode payloads into samples, acknowledge
//! QoS 1/2 messages to the broker only once the sink has stored their samples.
//!
//! - [`config`]: the `[mqtt]` table and `[[mqtt.subscription]]` entries.
//! - [`topic`]: topic templates (`dc/{site}/{rack}/temperature`) → MQTT filters + tags.
//! - [`decode`]: `number`, `json` and `line_protocol` payload decoders.
//! - [`subscriber`]: the long-running [`run`] loop and the one-shot [`collect_for`].
//!
//! # Delivery guarantees
//!
//! With `clean_session = false` (the default) and a stable `client_id`, the broker keeps the
//! session while sitewatch is down or reconnecting. Each QoS 1 message travels downstream with
//! a [`crate::pipeline::Ack`]; the PUBACK goes to the broker when the sink completes it. A
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
//! logged, dropped and acknowledged at once: redelivering them would only loop.
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
//! message_size_limit 1048576     # keep <= sitewatch's mqtt.max_packet_size
//! persistence true               # keep sessions across broker restarts
//! ```
//!
//! An incoming packet above `max_packet_size` makes rumqttc drop the connection before the
//! message can be acknowledged; the broker would redeliver it forever, so keep the broker's
//! `message_size_limit` at or below it.
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
//! thinner stream per instance. Where that matters, split by topic instead (each instance its
//! own subscriptions, e.g. one site each) and use the share group only within a site's pair.

pub mod config;
pub mod decode;
mod series_cap;
pub mod subscriber;
pub mod topic;

pub use config::{
    MqttConfig, MqttConfigError, PayloadFormat, SubscriptionConfig, TimestampUnit, TlsConfig,
};
pub use decode::{DecodeError, DecodeReason, Decoder};
pub use subscriber::{collect_for, run, MqttError};
pub use topic::{TopicTemplate, TopicTemplateError};
