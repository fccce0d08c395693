//! SNMP polling with data-driven device profiles.
//!
//! - [`config`]: the `[snmp]` table and `[[snmp.target]]` entries.
//! - [`profile`]: profile files (`mappings/snmp/*.toml`, reference in `docs/profiles.md`).
//! - [`decode`]: how one value becomes a field: decimal scale, sentinels, enums, severity.
//! - [`detect`]: which profiles a device gets, by sysObjectID and by what it answers.
//! - [`client`]: one conversation with a device: timeout, retries, batched GET, bulk walks.
//! - [`recording`]: `.snmprec` recordings, read (offline decode) and written (`--record`).
//! - [`poll`]: one poll of one device, against a live agent or a recording.
//! - [`probe`]: `probe`, `probe --record` and `profile test`.
//! - [`rate`]: counter → per-second rate with wrap/reset handling.
//! - [`poller`]: the schedule ([`run`], on [`crate::collect::schedule`]) and one-shot polling
//!   ([`poll_once`]).
//! - [`source`]: the collector as the topology's [`crate::collect::Source`].
//! - [`trap`]: the trap/inform listener (`[snmp.traps]`), started by [`run`] before polling.
//!
//! Every poll emits the profile samples (timestamp = poll start, tags `device`, the target's
//! tags and the table's index/tag columns) plus one `snmp_poll` sample: `up` (bool),
//! `duration_s`, `varbinds`, `requests` (UDP exchanges, including retries and v3 engine
//! discovery), and `error` (string) when the poll failed. A device that does
//! not answer costs its own `timeout × (retries + 1)` and nothing else.
//!
//! Metrics: `sitewatch_snmp_polls_total{result=ok|timeout|error|skipped|config_error}`,
//! per device `sitewatch_snmp_target_polls_total{device,result}` and
//! `sitewatch_snmp_target_poll_duration_seconds{device}` (last poll),
//! `sitewatch_snmp_poll_duration_seconds`, `sitewatch_snmp_varbinds_total`,
//! `sitewatch_snmp_counter_resets_total`; traps: `sitewatch_snmp_traps_received_total{version}`,
//! `sitewatch_snmp_traps_rejected_total{reason}`, `sitewatch_snmp_informs_answered_total`,
//! `sitewatch_snmp_trap_listener_up`.

use std::time::Duration;

pub mod client;
pub mod config;
pub mod decode;
pub mod detect;
mod mib_view;
pub mod poll;
pub mod poller;
pub mod probe;
pub mod profile;
pub mod rate;
pub mod recording;
pub mod security;
mod source;
pub mod trap;
pub mod value;

pub use config::{SnmpConfig, SnmpConfigError, TargetConfig};
pub use poll::{FieldOrigin, POLL_MEASUREMENT};
pub use poller::{poll_once, run, run_with_traps, TargetPoller};
pub use probe::{check_target, probe, profile_test, record, ProbeReport};
pub use profile::{ProfileError, ProfileSet};
pub use recording::{Recording, RecordingError};
pub use source::{source, SnmpSource};
pub use trap::{TrapConfig, TrapError, TrapListener, TRAPS_MEASUREMENT};

#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    #[error("{target}: no response after {attempts} attempt(s) of {timeout:?} each (device down, wrong address/port, or {hint})")]
    Timeout {
        target: String,
        attempts: u32,
        timeout: Duration,
        /// Which credential problem also looks like silence for this SNMP version.
        hint: &'static str,
    },
    #[error("{target}: {detail}")]
    Auth { target: String, detail: String },
    #[error("{target}: {detail}")]
    Io { target: String, detail: String },
    #[error("{target}: SNMP protocol error: {detail}")]
    Protocol { target: String, detail: String },
    #[error("{target}: agent returned error-status {status} for {oid} (see RFC 3416 error codes)")]
    ErrorStatus {
        target: String,
        status: u32,
        oid: String,
    },
    #[error("{target}: configuration: {message}")]
    Config { target: String, message: String },
    /// Internal: the v3 engine state changed and the request must be repeated.
    #[error("SNMPv3 engine state updated; request must be repeated")]
    AuthUpdated,
}
