//! Prometheus remote write (1.0): series and rule events to VictoriaMetrics, Prometheus,
//! Mimir, Thanos Receive or any other receiver of `POST /api/v1/write`.
//!
//! - [`config`]: the `[remote_write]` table (sample: `example.toml` beside this file).
//! - [`proto`]: the 1.0 protobuf messages, declared with `prost`'s derive.
//! - [`encode`]: samples → points (names, labels, values, timestamps) and events →
//!   `sitewatch_alert` points; points → a `WriteRequest` → the snappy body.
//! - [`client`]: one POST and its classification; the retry loop.
//! - [`RemoteWriteSink`]: the [`crate::sink::Sink`]: batching, acks, backpressure, shutdown.
//!
//! # Delivery
//!
//! | receiver                 | what happens                                               |
//! |--------------------------|------------------------------------------------------------|
//! | answers 2xx              | the request's batches are acknowledged (MQTT PUBACK once every sink holds them) |
//! | 429, 5xx, 401/403/404, timeout, down | retried forever (full-jitter backoff 250 ms → `max_retry_delay`, or `Retry-After`); new batches are taken until `max_buffered_samples` are held, then none (backpressure: the broker keeps the unacknowledged messages) |
//! | other 4xx                | rejected: dropped, counted, logged with the server's message; the acks are rejected (the source lets go: a redelivery would be rejected again) |
//! | hung at shutdown         | the topology's `stop` ends the flush; unsent acks are dropped, so the broker redelivers after the restart |
//!
//! There is no disk spool: what waits, waits in memory and, beyond the bound, upstream. With
//! MQTT QoS 1 that is at the broker, which is the durable copy until every sink holds the data.
//!
//! # Why `prost` and `snap` rather than a hand-written encoder
//!
//! The four messages would fit in a hundred lines of hand-rolled varints, but the encoding is
//! where silent corruption hides (a wrong wire type, a negative timestamp as a 10-byte varint,
//! a packed vs unpacked repeated field) and the receiver would then reject or, worse,
//! misread whole batches. `prost` (tokio-rs, the de-facto protobuf crate) derives the encoder
//! from field declarations that read like the spec's `.proto`, and its decoder lets the tests
//! check the round trip; no `protoc` or `build.rs` is needed. `snap` is the maintained pure-Rust
//! snappy (block format, as the spec requires). Together they add three crates to
//! `Cargo.lock` (`prost`, `prost-derive`, `snap`) and nothing else: their dependencies
//! (`bytes`, `syn`, `quote`, `itertools`, ...) are already in the tree.
//!
//! # Metrics
//!
//! - `sitewatch_remote_write_samples_total{result}`: `delivered`, `rejected`, `shutdown`
//!   (held when `stop` ended the sink), `skipped_string` (string fields, which Prometheus
//!   cannot store).
//! - `sitewatch_remote_write_requests_total{status}`: `2xx`, the HTTP status of other
//!   answers, `timeout`, `transport`.
//! - `sitewatch_remote_write_buffered_samples`: points held (waiting and in flight).
//! - `sitewatch_remote_write_failing`: 1 while a request is being retried.
//! - `sitewatch_remote_write_request_duration_seconds`: one histogram per request.
//!
//! `/ready` does not include this sink yet: the status board (`crate::status`) has one sink
//! slot, which the InfluxDB sink owns. Alert on `sitewatch_remote_write_failing` meanwhile.

pub mod client;
pub mod config;
pub mod encode;
pub mod proto;
mod sink;

pub use config::{MetricNaming, RemoteWriteConfig, RemoteWriteError};
pub use encode::{Encoder, Point, ALERT_METRIC};
pub use sink::RemoteWriteSink;

use crate::collect::BoxError;
use crate::config::LoadedConfig;

/// `[remote_write]`, when configured. Secrets are resolved here, so a missing token file is
/// a deployment error `sitewatch check` reports.
pub fn sink(cfg: &LoadedConfig) -> Result<Option<Box<dyn super::Sink>>, BoxError> {
    let Some(rw) = &cfg.config.remote_write else {
        return Ok(None);
    };
    rw.validate().map_err(|e| cfg.invalid(e.to_string()))?;
    Ok(Some(Box::new(RemoteWriteSink::opened(rw.clone())?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn loaded(text: &str) -> LoadedConfig {
        LoadedConfig {
            path: PathBuf::from("site.toml"),
            base_dir: PathBuf::from("."),
            state_dir: PathBuf::from("."),
            config: crate::config::parse(text, Path::new("site.toml")).expect("config parses"),
        }
    }

    #[test]
    fn the_table_is_registered_and_optional() {
        let cfg = loaded("[remote_write]\nurl = \"http://127.0.0.1:8428/api/v1/write\"\n");
        let sinks = crate::registry::build_sinks(&cfg).unwrap();
        assert_eq!(
            sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            vec!["remote_write"]
        );
        assert!(sink(&loaded("")).unwrap().is_none());
        let err = sink(&loaded("[remote_write]\nurl = \"ftp://x\"\n"))
            .err()
            .expect("bad url")
            .to_string();
        assert!(err.starts_with("site.toml: [remote_write] url:"), "{err}");
        let err = sink(&loaded(
            "[remote_write]\nurl = \"http://x/\"\nbearer_token = { env = \"SITEWATCH_TEST_RW_NOPE\" }\n",
        ))
        .err()
        .expect("unset secret")
        .to_string();
        assert!(err.contains("bearer_token"), "{err}");
    }
}
