//! Cluster mode: several `sitewatch run` members with the same config share the work,
//! coordinated by etcd (`[cluster]`). See docs/cluster.md for topology and failure modes.
//!
//! - [`config`]: the `[cluster]` table; [`access`]: how etcd is reached (TLS, credentials).
//! - [`membership`]: the etcd lease, this member's key and the watch on the others.
//! - [`assignment`]: which member owns which unit (rendezvous hashing over the live members).
//! - [`fencing`]: when this member must release its units (before etcd expires its lease).
//! - [`ownership`]: the watch the collectors read before each poll.
//! - [`member`]: the member's state, its log lines and metrics.
//! - [`service`]: [`run`], the etcd session and the fence clock together.
//! - [`plan`]: cluster mode as the topology sets it up and starts it.
//! - [`status`]: `sitewatch cluster status`.
//!
//! - [`handover`]: a unit's rule state moving with it ([`checkpoint`]s in etcd, written
//!   under the etcd [`session`]).
//!
//! Units: SNMP targets (polling and traps) and MQTT partitions.

pub mod access;
pub mod assignment;
pub mod checkpoint;
pub mod config;
pub mod fencing;
pub mod handover;
pub mod member;
pub mod membership;
pub mod ownership;
pub mod plan;
pub mod service;
pub mod session;
pub mod status;

pub use config::{ClusterConfig, ClusterConfigError};
pub use member::Member;
pub use ownership::{Ownership, Publisher, RunningGuard, UnitGate};
pub use plan::Plan;
pub use service::run;
