//! The typed channels between stages and the acknowledgement that travels with data.
//!
//! ```text
//! collectors --Batch--> rules engine --Batch (series)--> influx writer
//!                                     \-EventBatch------> influx writer (events, priority)
//!                                      \-Event----------> alert router
//! ```
//!
//! A source that must not lose data (MQTT QoS 1) attaches an [`Ack`] to its batch. The ack
//! travels with the samples and is completed by the sink once the data is safely stored. A
//! dropped ack means "not stored": the source then lets its broker redeliver.

use crate::model::Sample;

/// Called once when the batch it travels with has been stored (or deliberately dropped as
/// permanently invalid, which is counted and logged where it happens).
pub struct Ack(Box<dyn FnOnce() + Send + 'static>);

impl Ack {
    pub fn new(on_stored: impl FnOnce() + Send + 'static) -> Self {
        Ack(Box::new(on_stored))
    }

    pub fn complete(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

/// Samples moving downstream together, with the acks to complete once they are stored.
#[derive(Debug, Default)]
pub struct Batch {
    pub samples: Vec<Sample>,
    pub acks: Vec<Ack>,
}

impl Batch {
    pub fn new(samples: Vec<Sample>) -> Self {
        Batch {
            samples,
            acks: Vec::new(),
        }
    }

    pub fn with_ack(mut self, ack: Ack) -> Self {
        self.acks.push(ack);
        self
    }

    /// Completes every ack; called by the sink when the samples are stored.
    pub fn complete_acks(&mut self) {
        for ack in self.acks.drain(..) {
            ack.complete();
        }
    }
}

/// Capacity of the channel from collectors to the rules engine, in batches. Bounded so a
/// stalled sink turns into backpressure on collectors instead of unbounded memory.
pub const COLLECT_CHANNEL_CAPACITY: usize = 1024;
/// Capacity of the channel from the rules engine to each sink, in batches.
pub const SINK_CHANNEL_CAPACITY: usize = 1024;

pub type BatchSender = tokio::sync::mpsc::Sender<Batch>;
pub type BatchReceiver = tokio::sync::mpsc::Receiver<Batch>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn complete_acks_runs_each_once() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut b = Batch::new(Vec::new());
        for _ in 0..3 {
            let n = n.clone();
            b = b.with_ack(Ack::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }));
        }
        b.complete_acks();
        b.complete_acks();
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }
}
