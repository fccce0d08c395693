//! Sinks: where samples and events are stored.
//!
//! Each sink lives in a folder of its own (`influx/`, ...) with a `README.md` and a sample
//! config, implements [`Sink`], and is registered by one line in [`crate::registry::build_sinks`]. Every sink
//! is optional; the topology requires at least one. Each gets its own copy of every batch and
//! every event ([`crate::pipeline::SinkSenders`]); a batch's acks complete only when every
//! sink has settled its copy ([`crate::ack`]).

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::collect::BoxError;
use crate::pipeline::SinkInputs;

pub mod influx;
pub mod remote_write;
pub mod url;

/// A storage backend, built from its config table by [`crate::registry::build_sinks`].
#[async_trait]
pub trait Sink: Send {
    /// Short name for logs, metrics labels and `check` (`influx`, `remote_write`).
    fn name(&self) -> &'static str;
    /// One line for `sitewatch check`: where it writes (credentials redacted).
    fn describe(&self) -> String;
    /// Deployment warnings for `check`; `acking_sources` is true when a source waits for
    /// the sinks before releasing data upstream (MQTT QoS 1).
    fn check_warnings(&self, acking_sources: bool) -> Vec<String> {
        let _ = acking_sources;
        Vec::new()
    }
    /// Opens what running needs (spool directory and its lock, ...). An error stops start-up.
    async fn open(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
    /// Stores series and events until both inputs close and everything taken is stored or
    /// spooled; `stop` ends a flush that cannot finish (server hung at shutdown).
    async fn run(self: Box<Self>, inputs: SinkInputs, stop: CancellationToken);
}
