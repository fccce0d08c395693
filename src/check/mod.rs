//! `sitewatch check`: what it proves beyond the config building.
//!
//! - [`unmatched`]: warnings for rules and silences that match nothing the config produces.
//! - [`connect`]: `check --connect`, one bounded probe per server the config names.
//!
//! Nothing here is used by `run`; the topology calls in for its `check` summary.

pub mod connect;
pub mod unmatched;
