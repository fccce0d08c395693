//! Acknowledgements shared by every sink.
//!
//! A source that must not lose data (MQTT QoS 1) attaches an [`Ack`] to its batch. When the
//! batch is handed to several sinks, each gets its own copy ([`Ack::share`]); the source's
//! callback runs once, when the last copy is gone, with the worst outcome of all copies:
//!
//! | every copy was …                          | the source hears  | MQTT does                |
//! |-------------------------------------------|-------------------|--------------------------|
//! | completed (stored, or spooled and synced) | [`Delivery::Delivered`] | PUBACK               |
//! | completed or rejected (permanently invalid, counted where it happened) | [`Delivery::Rejected`] | PUBACK (a redelivery would be rejected again) |
//! | any copy dropped without either           | [`Delivery::Failed`]    | no PUBACK: the broker redelivers |
//!
//! So a batch is acknowledged only once every durable sink holds it: a hung InfluxDB or a
//! dead VictoriaMetrics each keep the broker's copy alive on their own.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// The combined outcome of every copy of an ack, ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delivery {
    Delivered = 0,
    Rejected = 1,
    Failed = 2,
}

impl Delivery {
    fn from_u8(v: u8) -> Delivery {
        match v {
            0 => Delivery::Delivered,
            1 => Delivery::Rejected,
            _ => Delivery::Failed,
        }
    }

    /// Whether the source may let go of the data (acknowledge it upstream).
    pub fn releases(self) -> bool {
        self != Delivery::Failed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Rejected => "rejected",
            Delivery::Failed => "failed",
        }
    }
}

type Callback = Box<dyn FnOnce(Delivery) + Send + 'static>;

struct Shared {
    worst: AtomicU8,
    on_done: Mutex<Option<Callback>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last copy is gone: every sink has had its say.
        let callback = self
            .on_done
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(callback) = callback {
            callback(Delivery::from_u8(self.worst.load(Ordering::Acquire)));
        }
    }
}

/// One copy of a batch's acknowledgement. Complete it when the data is safely stored, reject
/// it when the data can never be stored; dropping it means "not stored".
pub struct Ack {
    shared: Arc<Shared>,
    settled: bool,
}

impl Ack {
    pub fn new(on_done: impl FnOnce(Delivery) + Send + 'static) -> Self {
        Ack {
            shared: Arc::new(Shared {
                worst: AtomicU8::new(Delivery::Delivered as u8),
                on_done: Mutex::new(Some(Box::new(on_done))),
            }),
            settled: false,
        }
    }

    /// Another copy for another sink; the source hears back once both are settled.
    pub fn share(&self) -> Ack {
        Ack {
            shared: self.shared.clone(),
            settled: false,
        }
    }

    /// This copy's data is stored.
    pub fn complete(mut self) {
        self.settled = true;
    }

    /// This copy's data can never be stored (counted and logged by the caller).
    pub fn reject(mut self) {
        self.settled = true;
        self.record(Delivery::Rejected);
    }

    fn record(&self, outcome: Delivery) {
        self.shared.worst.fetch_max(outcome as u8, Ordering::AcqRel);
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.settled {
            self.record(Delivery::Failed);
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> (Ack, Arc<Mutex<Vec<Delivery>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (Ack::new(move |d| s.lock().unwrap().push(d)), seen)
    }

    #[test]
    fn one_copy_completed_is_delivered_once() {
        let (ack, seen) = probe();
        ack.complete();
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
    }

    #[test]
    fn the_source_hears_only_when_every_copy_is_settled() {
        let (ack, seen) = probe();
        let second = ack.share();
        ack.complete();
        assert!(
            seen.lock().unwrap().is_empty(),
            "the second sink still holds it"
        );
        second.complete();
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Delivered]);
    }

    #[test]
    fn worst_outcome_wins() {
        let (ack, seen) = probe();
        let rejected = ack.share();
        let dropped = ack.share();
        ack.complete();
        rejected.reject();
        drop(dropped);
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Failed]);

        let (ack, seen) = probe();
        let rejected = ack.share();
        rejected.reject();
        ack.complete();
        assert_eq!(*seen.lock().unwrap(), vec![Delivery::Rejected]);
        assert!(Delivery::Rejected.releases());
        assert!(!Delivery::Failed.releases());
    }
}
