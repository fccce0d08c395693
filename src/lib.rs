//! sitewatch: facility and infrastructure telemetry ingester.
//!
//! Data flows one way: `collect` → `rules` → `sink` / `notify`, through the typed channels in
//! [`pipeline`]. See `docs/ARCHITECTURE.md` for the shape and the reasons behind it.

pub mod ack;
pub mod api;
pub mod blocking;
pub mod buffer;
pub mod check;
pub mod cluster;
pub mod collect;
pub mod config;
pub mod global_tags;
pub mod hostname;
pub mod import;
pub mod model;
pub mod notify;
pub mod paths;
pub mod pipeline;
pub mod registry;
pub mod report;
pub mod retry;
pub mod rules;
pub mod secret;
pub mod select;
pub mod service_notify;
pub mod sink;
pub mod status;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod tls;
pub mod topology;

#[cfg(test)]
mod test_support;
