//! Sinks: where samples and events are stored.

pub mod influx;
