//! Collectors: turn outside telemetry into [`crate::model::Sample`] batches.
//! A collector knows nothing of rules or sinks; it only sends on its channel.

pub mod mqtt;
pub mod snmp;
