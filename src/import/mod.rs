//! `sitewatch import`: configs of other collectors turned into a sitewatch config.
//!
//! - [`telegraf`]: `telegraf.conf` (`inputs.snmp`, `inputs.mqtt_consumer`,
//!   `outputs.influxdb`, `outputs.influxdb_v2`, `[agent]`, `[global_tags]`).

pub mod telegraf;
