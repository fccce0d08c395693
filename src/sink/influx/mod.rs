//! InfluxDB writer: line-protocol encoding, an in-memory buffer with acks, and one batching,
//! retrying HTTP writer for the v1 (`/write`), v2 (`/api/v2/write`) and v3
//! (`/api/v3/write_lp`) APIs.
//!
//! - [`encode_sample`] / [`encode_line`]: one sample to one line (escaping policy in
//!   [`line_protocol`]).
//! - [`InfluxConfig`]: the `[influx]` table.
//! - [`InfluxWriter`]: `new(&cfg)`, `open_spool(base_dir)`, then
//!   `run(series_rx, events_rx, shutdown)`; [`sink`] wraps it as the topology's
//!   [`crate::sink::Sink`].
//! - [`event_sample`]: how a rule event is stored (the events measurement).
//! - `spool`: the on-disk spool (`spool_dir`) used while the server fails.
//!
//! # Where data waits, and when it is acknowledged
//!
//! | server            | new data goes to                    | when memory is full          |
//! |-------------------|-------------------------------------|------------------------------|
//! | answers (even slowly) | memory                          | backpressure: the writer stops taking series; the rules stage and collectors wait, the MQTT broker queues |
//! | fails (retrying)  | the spool (if `spool_dir`), else memory | memory only: oldest series dropped, counted `buffer_full` |
//! | answers, spool not yet replayed | the spool (keeps order)   | -                            |
//!
//! Events are always taken (never backpressured nor dropped before series) and written
//! before series: memory events, spooled events, memory series, spooled series.
//!
//! A batch's acks (MQTT PUBACKs) complete when its lines are written to InfluxDB, or once
//! they are in the spool and synced per `fsync` (`always`/`batch`: fsync'd; `never`: handed
//! to the OS). Spooled counts as safely buffered: it survives a crash or `kill -9`
//! (`never`: not a power cut) and is replayed at the next start.

pub mod capacity;
pub mod config;
pub mod event;
pub mod line_protocol;
mod sink;
mod writer;

pub use config::{FsyncPolicy, InfluxApi, InfluxConfig, InfluxError, SpoolError};
pub use event::{event_sample, EVENTS_MEASUREMENT};
pub use line_protocol::{encode_line, encode_sample, EncodeOptions};
pub use sink::{sink, InfluxSink};
pub use writer::InfluxWriter;
