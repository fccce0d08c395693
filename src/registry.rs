//! Which collectors and sinks exist: one line each. Adding a collector or a sink is its
//! folder, its table in `config::Config` and its line here (docs/adding-a-collector.md).
//! Kept apart from the `Source` and `Sink` traits so that a collector's or sink's folder
//! depends on its seam, and only this file depends on every folder.

use crate::collect::{modbus, mqtt, snmp, BoxError, Source, SourceOptions};
use crate::config::LoadedConfig;
use crate::sink::{influx, remote_write, Sink};

/// Every configured collector, in start-up order.
pub fn build_sources(
    cfg: &LoadedConfig,
    opts: SourceOptions,
) -> Result<Vec<Box<dyn Source>>, BoxError> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    sources.extend(mqtt::source(cfg, opts.clone())?);
    sources.extend(snmp::source(cfg, opts.clone())?);
    sources.extend(modbus::source(cfg, opts)?);
    Ok(sources)
}

/// Every configured sink.
pub fn build_sinks(cfg: &LoadedConfig) -> Result<Vec<Box<dyn Sink>>, BoxError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    sinks.extend(influx::sink(cfg)?);
    sinks.extend(remote_write::sink(cfg)?);
    Ok(sinks)
}
