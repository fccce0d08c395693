//! The typed channels between stages and the acknowledgement that travels with data.
//!
//! ```text
//! sources --Batch--> rules stage --Batch (series)-----> each sink (a copy, acks shared)
//!                                 \-EventBatch---------> each sink (events, priority)
//!                                  \-AlertNotice-------> alert router --EventBatch--> sinks
//!                                                                   (escalation steps)
//! ```
//!
//! A source that must not lose data (MQTT QoS 1) attaches an [`Ack`] to its batch. The ack
//! travels with the samples and is completed by each sink once the data is safely stored. A
//! dropped ack means "not stored": the source then lets its broker redeliver.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::ack::Ack;
use crate::model::{Acknowledgement, Event, Sample};

/// Samples moving downstream together, with the acks to complete once they are stored.
#[derive(Debug, Default)]
pub struct Batch {
    pub samples: Vec<Sample>,
    pub acks: Vec<Ack>,
    /// Cluster mode: the unit (`snmp:<target>`, `mqtt:<partition>`) whose collector made the
    /// batch. The rules stage judges it only while it holds the unit's rule state, and keeps
    /// the series it creates with the unit, so the state moves with the unit.
    pub unit: Option<Arc<str>>,
}

impl Batch {
    pub fn new(samples: Vec<Sample>) -> Self {
        Batch {
            samples,
            acks: Vec::new(),
            unit: None,
        }
    }

    /// The batch as the collector of `unit` made it (see [`Batch::unit`]).
    pub fn for_unit(mut self, unit: Option<Arc<str>>) -> Self {
        self.unit = unit;
        self
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

    /// A copy for another sink: the samples cloned, each ack shared, so the source hears
    /// back only when every sink has settled its copy (see [`crate::ack`]).
    pub fn share(&self) -> Batch {
        Batch {
            samples: self.samples.clone(),
            acks: self.acks.iter().map(Ack::share).collect(),
            unit: self.unit.clone(),
        }
    }
}

/// Capacity of the channel from collectors to the rules engine, in batches. Bounded so a
/// stalled sink turns into backpressure on collectors instead of unbounded memory.
pub const COLLECT_CHANNEL_CAPACITY: usize = 1024;
/// Capacity of the channel from the rules engine to each sink, in batches.
pub const SINK_CHANNEL_CAPACITY: usize = 1024;

pub type BatchSender = mpsc::Sender<Batch>;
pub type BatchReceiver = mpsc::Receiver<Batch>;

/// A step in an alert's life on its way to the sinks. Each sink shapes it for its own store.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    /// The alert as it stands (for a rule's change, the change itself).
    pub event: Event,
    /// A silence held back its notification; stored anyway, marked, for the history.
    pub silenced: bool,
    /// What happened: the rule's change (`event.state`), an acknowledgement or an escalation.
    pub action: Action,
    /// The responders' side, once known: who acknowledged, time to acknowledge and (on the
    /// resolve) time to resolve.
    pub response: Option<Response>,
}

impl EventRecord {
    /// A rule's change (firing, change of severity, resolve).
    pub fn change(event: Event, silenced: bool) -> EventRecord {
        EventRecord {
            event,
            silenced,
            action: Action::Change,
            response: None,
        }
    }
}

/// What an [`EventRecord`] records.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The rule fired, changed severity or resolved (`event.state` says which).
    Change,
    /// A responder acknowledged the alert ([`Response::ack`] says who).
    Acknowledged,
    /// Nobody acknowledged in time: the alert went to the next receivers.
    Escalated { step: u32, receivers: Vec<String> },
}

impl Action {
    /// The `state` an events row gets: `firing`/`resolved` for changes, else the action.
    pub fn state_name(&self, event: &Event) -> &'static str {
        match self {
            Action::Change => event.state.as_str(),
            Action::Acknowledged => "acknowledged",
            Action::Escalated { .. } => "escalated",
        }
    }
}

/// How the responders answered an alert, in wall-clock seconds since it first fired.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub ack: Option<Arc<Acknowledgement>>,
    pub time_to_ack_s: Option<f64>,
    /// Set on the resolve.
    pub time_to_resolve_s: Option<f64>,
}

/// What the rules stage tells the alert router.
#[derive(Clone, Debug, PartialEq)]
pub enum AlertNotice {
    /// A rule's change (firing, change of severity, resolve) or a re-announcement.
    Change(Event),
    /// A responder acknowledged the open alert (the event is its latest firing one).
    Acknowledged(Event, Arc<Acknowledgement>),
    /// Cluster mode: an alert open on the member that had its unit before, taken over with
    /// the unit's state. The receivers were told already: no new notification; repeats,
    /// escalation and the resolve go on from here.
    Adopted(Event, Option<Arc<Acknowledgement>>),
    /// Cluster mode: an open alert whose unit went to another member, which carries it on.
    /// Forgotten here without a resolve.
    Forgotten(Event),
}

impl AlertNotice {
    pub fn event(&self) -> &Event {
        match self {
            AlertNotice::Change(ev)
            | AlertNotice::Acknowledged(ev, _)
            | AlertNotice::Adopted(ev, _)
            | AlertNotice::Forgotten(ev) => ev,
        }
    }
}

pub type EventBatch = Vec<EventRecord>;

/// What one sink receives: its copy of every series batch and of every event batch.
pub struct SinkInputs {
    pub series: BatchReceiver,
    pub events: mpsc::Receiver<EventBatch>,
}

impl SinkInputs {
    /// A pair of inputs and the port that feeds them, for tests of one sink.
    pub fn channel(capacity: usize) -> (SinkPort, SinkInputs) {
        let (series_tx, series) = mpsc::channel(capacity);
        let (events_tx, events) = mpsc::channel(capacity);
        (
            SinkPort {
                name: "sink".into(),
                series: series_tx,
                events: events_tx,
                series_gone_logged: false,
                events_gone_logged: false,
            },
            SinkInputs { series, events },
        )
    }
}

/// The rules stage's end of one sink.
pub struct SinkPort {
    name: Arc<str>,
    pub series: BatchSender,
    pub events: mpsc::Sender<EventBatch>,
    series_gone_logged: bool,
    events_gone_logged: bool,
}

/// The rules stage's end of every sink: a batch goes to each (the last one gets the
/// original, the others a [`Batch::share`]d copy), in the order the sinks were added.
#[derive(Default)]
pub struct SinkSenders {
    ports: Vec<SinkPort>,
}

impl SinkSenders {
    /// Adds a sink called `name` and returns the inputs it reads.
    pub fn add(&mut self, name: &str) -> SinkInputs {
        let (mut port, inputs) = SinkInputs::channel(SINK_CHANNEL_CAPACITY);
        port.name = name.into();
        self.ports.push(port);
        inputs
    }

    /// Senders for tests and tools that feed the stage's outputs themselves.
    pub fn from_ports(ports: Vec<SinkPort>) -> SinkSenders {
        SinkSenders { ports }
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Sends `batch` to every sink, waiting while a sink's queue is full (backpressure). A
    /// sink that has stopped drops its copy, and with it its acks: the source is not told
    /// the data was stored, so an acknowledging source lets its broker redeliver.
    pub async fn send_series(&mut self, batch: Batch) {
        let last = self.ports.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, port) in self.ports.iter_mut().enumerate() {
            let copy = if i == last {
                batch.take().expect("the original goes to the last sink")
            } else {
                batch.as_ref().expect("kept until the last sink").share()
            };
            let n = copy.samples.len() as u64;
            if port.series.send(copy).await.is_err() {
                metrics::counter!("sitewatch_rules_forward_dropped_samples_total", "sink" => port.name.to_string())
                    .increment(n);
                if !port.series_gone_logged {
                    port.series_gone_logged = true;
                    tracing::error!(sink = %port.name, "sink has stopped; samples are no longer forwarded to it");
                }
            }
        }
    }

    /// Sends `events` to every sink (events are few; each sink gets a clone).
    pub async fn send_events(&mut self, events: EventBatch) {
        let n = events.len() as u64;
        for port in &mut self.ports {
            if port.events.send(events.clone()).await.is_err() {
                metrics::counter!("sitewatch_rules_events_dropped_total", "sink" => port.name.to_string())
                    .increment(n);
                if !port.events_gone_logged {
                    port.events_gone_logged = true;
                    tracing::error!(sink = %port.name, "sink has stopped; rule events are no longer stored in it");
                }
            }
        }
    }
}

impl SinkSenders {
    /// The events inputs of every sink, for a later stage that writes history of its own
    /// (the alert router's escalation steps).
    pub fn event_senders(&self) -> EventSenders {
        EventSenders {
            ports: self
                .ports
                .iter()
                .map(|p| (p.name.clone(), p.events.clone()))
                .collect(),
        }
    }
}

/// Writes events to every sink's events input (see [`SinkSenders::event_senders`]). The
/// sinks finish once these are dropped too.
#[derive(Clone, Default)]
pub struct EventSenders {
    ports: Vec<(Arc<str>, mpsc::Sender<EventBatch>)>,
}

impl EventSenders {
    /// Hands `events` to every sink without waiting: a full sink queue (InfluxDB down for
    /// long) costs this record, counted, never the caller's time.
    pub fn try_send(&self, events: EventBatch) {
        for (name, tx) in &self.ports {
            if tx.try_send(events.clone()).is_err() {
                metrics::counter!("sitewatch_rules_events_dropped_total", "sink" => name.to_string())
                    .increment(events.len() as u64);
                tracing::warn!(sink = %name, "sink queue full or stopped; an escalation record is not stored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_sink_gets_the_batch_and_the_source_hears_once_all_stored() {
        let mut senders = SinkSenders::default();
        let mut a = senders.add("a");
        let mut b = senders.add("b");
        let acked = Arc::new(AtomicUsize::new(0));
        let n = acked.clone();
        let batch = Batch::new(vec![Sample::new(
            crate::model::SeriesKey::new("m", crate::model::TagSet::empty()),
            1,
        )])
        .with_ack(Ack::new(move |d| {
            assert_eq!(d, crate::ack::Delivery::Delivered);
            n.fetch_add(1, Ordering::SeqCst);
        }));
        senders.send_series(batch).await;
        let mut got_a = a.series.recv().await.unwrap();
        let mut got_b = b.series.recv().await.unwrap();
        assert_eq!(got_a.samples, got_b.samples);
        got_a.complete_acks();
        assert_eq!(acked.load(Ordering::SeqCst), 0, "b has not stored it yet");
        got_b.complete_acks();
        assert_eq!(acked.load(Ordering::SeqCst), 1);

        // A stopped sink drops its copy: the source is told "not stored".
        drop(b);
        let failed = Arc::new(AtomicUsize::new(0));
        let f = failed.clone();
        senders
            .send_series(Batch::new(Vec::new()).with_ack(Ack::new(move |d| {
                if !d.releases() {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            })))
            .await;
        a.series.recv().await.unwrap().complete_acks();
        assert_eq!(failed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn complete_acks_runs_each_once() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut b = Batch::new(Vec::new());
        for _ in 0..3 {
            let n = n.clone();
            b = b.with_ack(Ack::new(move |_| {
                n.fetch_add(1, Ordering::SeqCst);
            }));
        }
        b.complete_acks();
        b.complete_acks();
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }
}
