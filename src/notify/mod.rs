//! Alert forwarding: routes rule events to Alertmanager, generic webhooks, PagerDuty and
//! Slack.
//!
//! ```text
//! rules --Event--> Notifier::run (router: matchers, try-push) --> per-receiver queue --> worker
//!                                                                  (bounded, drop oldest)   (retry, re-send)
//! ```
//!
//! Each receiver has its own bounded queue and task, so a dead or slow receiver delays only
//! itself and never the rules stage. See [`config`] for the TOML schema.

pub mod config;
pub mod matcher;
pub mod payload;
pub mod router;

pub use config::{NotifyConfig, NotifyConfigError, ReceiverConfig, ReceiverKind};
pub use router::Notifier;

use crate::secret::SecretError;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Config(#[from] NotifyConfigError),
    #[error("notify.receiver[{index}] (name {name:?}): `{key}`: {source}")]
    Secret {
        index: usize,
        name: String,
        key: String,
        #[source]
        source: SecretError,
    },
    /// A value that only turned out wrong once its secret was read (the value is not shown).
    #[error("notify.receiver[{index}] (name {name:?}): `{key}`: {problem}")]
    Invalid {
        index: usize,
        name: String,
        key: String,
        problem: String,
    },
    #[error("notify.receiver[{index}] (name {name:?}): cannot build the HTTP client: {source}")]
    Client {
        index: usize,
        name: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("notify receiver {name:?}: {source}")]
    Tls {
        name: String,
        #[source]
        source: crate::tls::TlsError,
    },
}

/// Registers descriptions of the notifier's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "sitewatch_notify_sent_total",
        "Alerts delivered to a receiver (re-sends included)"
    );
    metrics::describe_counter!(
        "sitewatch_notify_failures_total",
        "Failed delivery attempts by receiver and kind (transport, tls, timeout, http_429, http_5xx, rejected)"
    );
    metrics::describe_counter!(
        "sitewatch_notify_dropped_total",
        "Events dropped for a receiver: queue full (oldest dropped) or undelivered at shutdown"
    );
    metrics::describe_gauge!(
        "sitewatch_notify_queue_depth",
        "Events waiting in a receiver's queue"
    );
    metrics::describe_histogram!(
        "sitewatch_notify_latency_seconds",
        metrics::Unit::Seconds,
        "From the event being handed to the notifier (just after the rules made it) to the receiver accepting it; re-sends are not counted"
    );
}
