//! Alert forwarding: routes rule events to Alertmanager, generic webhooks, PagerDuty and
//! Slack.
//!
//! ```text
//! rules --Event--> Notifier::run (router: matchers, try-push) --> per-receiver queue --> worker
//!                                                                  (bounded, drop oldest)   (retry, re-send)
//! ```
//!
//! Each receiver has its own bounded queue and task, so a dead or slow receiver delays only
//! itself and never the rules stage. See [`config`] for the TOML schema. Acknowledgements
//! come from the rules stage as notices of their own; unacknowledged alerts go on to the next
//! receivers as [`escalation`] says, each step written to the events history.

pub mod config;
pub mod escalation;
pub mod matcher;
pub mod payload;
pub mod router;

pub use config::{NotifyConfig, NotifyConfigError, ReceiverConfig, ReceiverKind};
pub use router::Notifier;

use std::sync::Arc;

use crate::model::{Event, SeriesKey};
use crate::secret::SecretError;

/// Identity of an alert: rule + series (the severity may change while it fires).
pub type AlertKey = (Arc<str>, SeriesKey);

pub fn key_of(ev: &Event) -> AlertKey {
    (ev.rule.clone(), ev.series.clone())
}

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
