//! Collectors: turn outside telemetry into [`crate::model::Sample`] batches.
//!
//! A collector knows nothing of rules or sinks; it only sends [`Batch`]es on its channel.
//! Each lives in a folder of its own (`snmp/`, `mqtt/`, ...) with a `README.md` and a sample
//! config, implements [`Source`], and is registered by one line in [`crate::registry::build_sources`]; the
//! topology (`crate::topology`) starts, stops and feeds them. See `docs/adding-a-collector.md`.

use std::time::Duration;

use async_trait::async_trait;

use crate::model::Sample;
use crate::pipeline::BatchSender;

pub mod modbus;
pub mod mqtt;
pub mod registers;
pub mod scale;
pub mod schedule;
pub mod shard;
pub mod snmp;

pub use shard::Shard;

/// Errors crossing the seam: each collector's own `thiserror` type, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a running source is handed.
pub struct SourceContext {
    /// Into the rules stage; bounded, so a full pipeline is backpressure on the source.
    pub tx: BatchSender,
    /// Cancelled at shutdown: stop taking new data, hand over what is in hand, return.
    pub stop: tokio_util::sync::CancellationToken,
}

/// Options from the command line (and `[cluster]`) that apply to collectors.
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// `--shard i/n`: poll only the devices this shard owns.
    pub shard: Option<Shard>,
    /// Cluster mode: what this member owns now (`crate::cluster`); every unit without it.
    pub cluster: Option<crate::cluster::Ownership>,
}

/// A collector, built from its config table by [`crate::registry::build_sources`].
#[async_trait]
pub trait Source: Send {
    /// Short name for logs and `check` (`snmp`, `mqtt`, `modbus`).
    fn name(&self) -> &'static str;
    /// One line for `sitewatch check`: what it will collect.
    fn describe(&self) -> String;
    /// Deployment warnings for `check` (a positional JSON path a reordering would break).
    fn check_warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Every measurement this source can write, health rows included, for `check`'s warning
    /// on a rule or silence that can never match. `None`: it cannot tell (a payload that names
    /// its own measurement), and then `check` warns about nothing. The default is `None`, so
    /// a new collector never causes a false warning.
    fn measurements(&self) -> Option<Vec<String>> {
        None
    }
    /// Whether batches carry acks, i.e. the source waits for the sinks before letting go of
    /// the data upstream (MQTT QoS 1). `check` warns when such a source has no spool behind it.
    fn acknowledges(&self) -> bool {
        false
    }
    /// Resolves secrets and binds what must be bound before the service reports ready (the
    /// trap port). An error stops start-up.
    async fn open(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
    /// Collects until `ctx.stop`. An `Err` means the source cannot go on (unreadable
    /// certificate, ...): the service stops so supervision and the operator see it.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError>;
    /// One collection cycle for `sitewatch once` (`listen_for` bounds push sources).
    async fn collect_once(&mut self, listen_for: Duration) -> Result<Vec<Sample>, BoxError>;
}
