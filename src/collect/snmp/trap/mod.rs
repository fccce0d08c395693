//! SNMP trap and inform receiver (`[snmp.traps]`).
//!
//! ```toml
//! [snmp.traps]
//! listen = "127.0.0.1:9162"     # ops: "0.0.0.0:162" (needs CAP_NET_BIND_SERVICE or root)
//! communities = [{ env = "SITEWATCH_TRAP_COMMUNITY" }, "public"]
//! measurement = "snmp_traps"
//! max_varbinds_chars = 2048
//! receive_buffer = "4MiB"       # SO_RCVBUF: what a burst can queue in the kernel
//! ```
//!
//! Every accepted SNMPv1 Trap, SNMPv2c Trap and InformRequest becomes one [`Sample`] at
//! receive time:
//!
//! - tags: `source` (v1 agent-addr, else the UDP sender), `trap_oid` (v1 traps mapped to the
//!   SNMPv2 OID per RFC 3584 §3.1), `trap_name` for well-known traps, and `device` when the
//!   source is the address of exactly one configured `[[snmp.target]]`;
//! - fields: `event` (the trap name, or its OID when unknown, so a rule can say
//!   `equals = { critical = "upsTrapOnBattery" }`), `varbinds` (`oid=value; ...`, bounded by
//!   `max_varbinds_chars`), `uptime_s` (the agent's sysUpTime) and `count` = 1.
//!
//! A trap is an edge, not a level, so a rule on `event` fires when the trap arrives and
//! resolves when its series next carries another event. Where a later trap ends the
//! condition for the whole device (APC `powerRestored` after `upsOnBattery`), the listener
//! also writes that later event onto the first trap's series (`count` = 0), so
//! `equals = { critical = "upsOnBattery" }` resolves on power return. Other trap alarms stay
//! firing until acknowledged elsewhere; pair them with a polled value (e.g. UPS-MIB
//! `upsOutputSource`) where one exists.
//!
//! An inform is answered with a Response echoing its request id and varbinds once it is
//! decoded and accepted, so the sender stops retrying; an inform repeated by the sender
//! (same source and request id within a minute) is answered again but not recorded twice.
//!
//! Bad input never stops the listener: a wrong community, an undecodable datagram or a PDU
//! that is not a notification is counted in
//! `sitewatch_snmp_traps_rejected_total{reason}`, logged at most once per 10 s per reason,
//! and dropped. Accepted traps count in `sitewatch_snmp_traps_received_total{version}`.
//!
//! # Bursts
//!
//! A power event makes every UPS, PDU and sensor on a feed send at once. Three things keep
//! such a burst whole:
//!
//! - The socket asks the kernel for a `receive_buffer` (SO_RCVBUF, default 4 MiB) instead of
//!   the system default (`net.core.rmem_default`, usually 208 KiB: about 250 small traps). The
//!   size granted is logged at start and shown as `sitewatch_snmp_trap_receive_buffer_bytes`;
//!   Linux caps the request at `net.core.rmem_max` and reports twice the value it accepted
//!   (socket(7)). A privileged process (CAP_NET_ADMIN, e.g. root) then gets the full size
//!   with SO_RCVBUFFORCE; otherwise a warning names `net.core.rmem_max`, the limit to raise.
//! - A dedicated thread (`sitewatch-traps`, not a tokio worker) does nothing but `recv` into
//!   memory, stamping each datagram with its receive time. Decoding, inform answers and the
//!   hand-off to the pipeline run in the listener's task, so neither slow decoding (SNMPv3
//!   key checks) nor a pipeline that is momentarily full stops the reading. The queue between
//!   them holds up to [`QUEUE_BYTES`]; only when it is full does the reader wait, and the
//!   kernel buffer takes the rest.
//! - Datagrams the kernel still had to drop are counted in
//!   `sitewatch_snmp_trap_kernel_drops_total` and logged. The count is the socket's `drops`
//!   column in `/proc/net/udp` (or `udp6`), found by the socket's inode and read off the
//!   receive path (`spawn_blocking`) every 5 s and shortly after each burst. It is the same
//!   kernel counter `SO_RXQ_OVFL` reports, but `SO_RXQ_OVFL` only delivers it as ancillary
//!   data of the *next* datagram: drops at the end of a burst would stay invisible until
//!   another trap arrives, and it would need `recvmsg` with control-message parsing on every
//!   datagram. Linux only; elsewhere the counter stays 0.
//!
//! SNMPv3 traps are accepted from the users listed as `[[snmp.traps.user]]` (authNoPriv or
//! authPriv; several users are fine). Keys are localized per sending engine the first time
//! it authenticates and cached. There is no replay protection for v3 traps (RFC 3414
//! timeliness applies to the authoritative engine, which for a trap is the sender), and
//! v3 informs are rejected (`reason="v3_inform"`): answering them needs an authoritative
//! engine of our own.
//!
//! ```toml
//! [[snmp.traps.user]]
//! name = "trapuser"
//! security_level = "authPriv"          # default; authNoPriv also accepted
//! auth_protocol = "SHA"
//! auth_password = { env = "SITEWATCH_TRAP_AUTH" }
//! priv_protocol = "AES"
//! priv_password = { env = "SITEWATCH_TRAP_PRIV" }
//! ```

mod config;
mod decode;
mod listener;
mod names;

pub use config::{ByteSize, TrapConfig, TrapError, TrapUser, TRAPS_MEASUREMENT};
pub use decode::{Notification, Reject, TrapDecoder};
pub use listener::{TrapListener, QUEUE_BYTES};
pub use names::{trap_name, v1_trap_oid};
