//! Modbus TCP collector: polls power meters, genset controllers, chillers and other devices
//! that speak Modbus, data-driven by register maps (`mappings/modbus/*.toml`), the way the
//! SNMP collector is driven by its profiles. A Modbus RTU device behind a TCP gateway is
//! polled the same way, with its `unit_id`.
//!
//! - [`config`]: the `[modbus]` table and its `[[modbus.device]]` entries.
//! - [`map`]: register map files (schema in `README.md` beside this file), validated at load
//!   with `file:line` errors (overlapping registers, wrong types, names against
//!   `docs/naming.md`).
//! - [`decode`]: register words → typed value (int16 .. uint64, float32, bool, bit of a
//!   register; word and byte order), decimal `scale` and `offset`.
//! - [`plan`]: batches adjacent points of one table into one read (125 registers / 2000 bits
//!   per read at most, `max_gap` unused registers spanned).
//! - [`poll`]: one poll of one device: timeout, retries, reconnect; an exception answer for a
//!   read is a gap and a counted error, never a failed poll.
//! - [`source`]: [`ModbusSource`], the [`crate::collect::Source`] the topology runs; each
//!   device on the shared schedule ([`crate::collect::schedule::run_device`]), `--shard` honoured.
//!
//! # What is written
//!
//! Each point of the map becomes a field of its `measurement`, tagged `device` (the device's
//! `name`), the device's `tags` and the point's own `tags` (`phase`, ...). Points with the same
//! measurement and tags share one sample. Numbers are floats after `scale`/`offset`; enum
//! points (`states`) write `X` (the code, integer), `X_state` and `X_severity` where the map
//! knows them; bits and coils are booleans. A sentinel (`invalid`), NaN or an exception
//! answer leaves the field out: a gap, never a made-up value.
//!
//! Every poll also writes `modbus_poll` (tags: `device` and the device's tags) with `up`
//! (bool), `duration_s`, `registers` (registers and bits read), `requests`, `read_errors`
//! (reads answered with an exception) and, when `up` is false, `error` (what failed, where).
//!
//! # Metrics
//!
//! - `sitewatch_modbus_polls_total{result}`: `ok`, `timeout`, `error`, and `skipped` (ticks
//!   missed because a poll outlasted its interval).
//! - `sitewatch_modbus_device_polls_total{device,result}` and
//!   `sitewatch_modbus_device_up{device}`: which device went silent.
//! - `sitewatch_modbus_errors_total{reason}`: `connect`, `timeout`, `transport`, `gateway`
//!   (the poll failed), `illegal_address`, `illegal_function`, `illegal_value`,
//!   `device_failure`, `busy`, `exception` (one read failed, the rest of the poll stands).
//! - `sitewatch_modbus_poll_duration_seconds` (histogram), `sitewatch_modbus_requests_total`.
//!
//! # Why `tokio-modbus`
//!
//! It is the maintained async Modbus client for tokio (the runtime sitewatch already runs
//! on), with exception codes kept apart from transport errors in its result type, which is
//! what turns an illegal address into a gap rather than a dead device. It is built with
//! `default-features = false, features = ["tcp"]`: no RTU serial stack (serial devices are
//! reached through a TCP gateway), no server side.

pub mod config;
pub mod map;
pub mod plan;
pub mod poll;
pub mod source;

pub use config::{DeviceConfig, ModbusConfig};
pub use map::{MapError, RegisterMap};
pub use poll::POLL_MEASUREMENT;
pub use source::{source, ModbusError, ModbusSource};
