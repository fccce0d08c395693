//! InfluxDB writer: line-protocol encoding, an in-memory buffer with acks, and one batching,
//! retrying HTTP writer for the v1 (`/write`), v2 (`/api/v2/write`) and v3
//! (`/api/v3/write_lp`) APIs.
//!
//! - [`encode_sample`] / [`encode_line`]: one sample to one line (escaping policy in
//!   [`line_protocol`]).
//! - [`InfluxConfig`]: the `[influx]` table.
//! - [`InfluxWriter`]: `new(&cfg)` then `run(series_rx, events_rx, shutdown)`.

mod buffer;
pub mod config;
pub mod line_protocol;
mod writer;

pub use config::{InfluxApi, InfluxConfig, InfluxError};
pub use line_protocol::{encode_line, encode_sample, EncodeOptions};
pub use writer::InfluxWriter;
