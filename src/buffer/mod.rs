//! Memory and disk buffers any sink can use, so every sink gets the same guarantees: a
//! bounded memory buffer of encoded records with the acks of the batches they came from
//! ([`memory`]), and an on-disk spool for outages, replayed in order ([`spool`]). A sink
//! supplies how records are encoded ([`RecordEncoder`]) and counted ([`SpoolOwner`]).

pub(crate) mod memory;
pub(crate) mod spool;

pub(crate) use memory::{Buffer, Encoded, Flight, Lane, RecordEncoder};
pub(crate) use spool::{count_lines, Cursor, Spool, SpoolOwner};
pub use spool::{FsyncPolicy, SpoolError};
