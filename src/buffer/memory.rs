//! A sink's in-memory buffer: encoded records ("lines": a line of line protocol for InfluxDB,
//! one encoded series for remote write) waiting to be written, with the acks of the batches
//! they came from. Pure data structure (no I/O, no clock of its own) so the flush, drop and
//! ack rules are unit tested without a server. The sink supplies the [`RecordEncoder`].
//!
//! Lines are kept per incoming [`Batch`] in a [`Chunk`] (one byte buffer plus line ends), in
//! two FIFO queues: events and series. A flight (one write request, retried until resolved)
//! takes lines from the front, events first. Lines leave the buffer only when their flight is
//! resolved (written, or rejected by the server), so a server outage holds them; meanwhile new
//! batches keep arriving behind them (or, with a spool, go there: see the writer). A batch's acks are completed once all its lines are
//! resolved, and dropped (not completed: "not stored", the source may redeliver) if any of its
//! lines was dropped for lack of room.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ack::Ack;
use crate::pipeline::Batch;

/// The two queues of a buffer or spool: events are always written before series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    Events,
    Series,
}

/// Turns a batch into the sink's records. Samples that cannot be encoded are counted in
/// [`Encoded::unencodable`] and left out.
pub(crate) trait RecordEncoder: Send + Sync {
    fn encode(&self, lane: Lane, batch: &Batch) -> Encoded;
}

struct Chunk {
    id: u64,
    buf: Vec<u8>,
    /// End offset (exclusive, including the `\n`) of each line in `buf`.
    ends: Vec<usize>,
    /// Lines before this index are in a flight or dropped.
    next: usize,
    /// Lines resolved (written, rejected or dropped).
    done: usize,
    /// Some line was dropped for lack of room: the acks must not be completed.
    lost: bool,
    acks: Vec<Ack>,
    arrived: Instant,
}

impl Chunk {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// Frees the bytes once every line has been copied into a flight or dropped; returns
    /// how many were freed.
    fn release_if_taken(&mut self) -> usize {
        if self.next == self.len() && !self.buf.is_empty() {
            let freed = self.buf.len();
            self.buf = Vec::new();
            freed
        } else {
            0
        }
    }
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// Id of the next chunk; ids are consecutive within a queue, so a chunk is found by
    /// its distance from the front.
    next_id: u64,
    /// Lines not yet taken by a flight nor dropped.
    pending: usize,
    /// Lines taken or pending but not yet resolved.
    held: usize,
    /// Bytes of encoded lines not yet copied into a flight.
    bytes: usize,
}

impl Queue {
    fn chunk_mut(&mut self, id: u64) -> Option<&mut Chunk> {
        let first = self.chunks.front()?.id;
        let idx = usize::try_from(id.checked_sub(first)?).ok()?;
        self.chunks.get_mut(idx)
    }

    fn oldest_pending(&self) -> Option<Instant> {
        self.chunks
            .iter()
            .find(|c| c.next < c.len())
            .map(|c| c.arrived)
    }

    /// Arrival of the oldest line not yet written (pending or in a flight).
    fn oldest_unresolved(&self) -> Option<Instant> {
        self.chunks
            .iter()
            .find(|c| c.done < c.len())
            .map(|c| c.arrived)
    }

    /// Pops fully resolved chunks from the front, completing or dropping their acks.
    fn pop_resolved(&mut self) {
        while let Some(front) = self.chunks.front() {
            if front.done < front.len() {
                break;
            }
            let mut chunk = self.chunks.pop_front().expect("front exists");
            if chunk.lost {
                // Dropping the acks tells the source the data was not stored.
                chunk.acks.clear();
            } else {
                for ack in chunk.acks.drain(..) {
                    ack.complete();
                }
            }
        }
    }
}

/// Lines of one write request, copied out of the buffer so the request can run while new
/// batches are added.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    pub body: Vec<u8>,
    /// End offset of each line in `body`.
    pub ends: Vec<usize>,
    /// Which chunks the lines came from, in order: (source, chunk id, line count).
    parts: Vec<(Lane, u64, usize)>,
}

impl Flight {
    /// A flight of complete lines that did not come from the buffer (the spool).
    pub fn from_body(body: Vec<u8>) -> Flight {
        let ends = body
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Flight {
            body,
            ends,
            parts: Vec::new(),
        }
    }

    pub fn lines(&self) -> usize {
        self.ends.len()
    }

    /// Line ranges of the flight per source, in order (to move a flight to the spool).
    pub fn source_ranges(&self) -> Vec<(Lane, std::ops::Range<usize>)> {
        let mut at = 0;
        self.parts
            .iter()
            .map(|&(source, _, n)| {
                let r = at..at + n;
                at += n;
                (source, r)
            })
            .collect()
    }

    /// Byte range of lines `range` in `body`.
    pub fn byte_range(&self, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let start = if range.start == 0 {
            0
        } else {
            self.ends[range.start - 1]
        };
        let end = if range.end == 0 {
            0
        } else {
            self.ends[range.end - 1]
        };
        start..end
    }
}

/// A batch encoded to records: complete records in `buf`, `ends` their end offsets.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub buf: Vec<u8>,
    pub ends: Vec<usize>,
    /// Samples without an encodable field (counted, not stored).
    pub unencodable: usize,
}

/// What [`Buffer::push`] did with a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PushOutcome {
    /// Samples that produced a line.
    pub accepted: usize,
    /// Samples without an encodable field (counted, not stored).
    pub unencodable: usize,
    /// Older series lines dropped to make room.
    pub dropped_for_room: usize,
}

pub(crate) struct Buffer {
    events: Queue,
    series: Queue,
    batch_size: usize,
    flush_interval: Duration,
    limit: usize,
    encoder: Box<dyn RecordEncoder>,
    /// Whether going over `limit` drops the oldest pending series lines. The writer turns it
    /// off while the server answers (it stops taking new batches instead) and when a spool
    /// takes the overflow.
    pub drop_oldest: bool,
}

impl Buffer {
    pub fn new(
        batch_size: usize,
        flush_interval: Duration,
        limit: usize,
        encoder: Box<dyn RecordEncoder>,
    ) -> Self {
        Buffer {
            events: Queue::default(),
            series: Queue::default(),
            batch_size: batch_size.max(1),
            flush_interval,
            limit,
            encoder,
            drop_oldest: true,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn events_pending(&self) -> usize {
        self.events.pending
    }

    fn queue_ref(&self, source: Lane) -> &Queue {
        match source {
            Lane::Events => &self.events,
            Lane::Series => &self.series,
        }
    }

    fn queue(&mut self, source: Lane) -> &mut Queue {
        match source {
            Lane::Events => &mut self.events,
            Lane::Series => &mut self.series,
        }
    }

    /// Samples held (pending or in a flight).
    pub fn held(&self) -> usize {
        self.events.held + self.series.held
    }

    /// Bytes of encoded lines waiting in memory (not yet copied into a request).
    pub fn bytes(&self) -> usize {
        self.events.bytes + self.series.bytes
    }

    /// When the oldest sample not yet written arrived: how long the sink has kept it.
    pub fn oldest_unresolved(&self) -> Option<Instant> {
        match (
            self.events.oldest_unresolved(),
            self.series.oldest_unresolved(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Samples not yet in a flight.
    pub fn pending(&self) -> usize {
        self.events.pending + self.series.pending
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held() == 0
    }

    /// Encodes a batch and queues its lines (see [`Buffer::push_encoded`]).
    #[cfg(test)]
    pub fn push(&mut self, source: Lane, mut batch: Batch, now: Instant) -> PushOutcome {
        let encoded = self.encode(source, &batch);
        let acks = std::mem::take(&mut batch.acks);
        self.push_encoded(source, encoded, acks, now)
    }

    /// Encodes a batch's samples with the sink's encoder.
    pub fn encode(&self, lane: Lane, batch: &Batch) -> Encoded {
        self.encoder.encode(lane, batch)
    }

    /// Queues already encoded lines with the acks of the batch they came from; if that takes
    /// the buffer over its limit and `drop_oldest` is set, drops the oldest pending series
    /// lines. Without lines the acks are completed at once: there is nothing to store, and
    /// holding them would stall the source.
    pub fn push_encoded(
        &mut self,
        source: Lane,
        encoded: Encoded,
        mut acks: Vec<Ack>,
        now: Instant,
    ) -> PushOutcome {
        let Encoded {
            buf,
            ends,
            unencodable,
        } = encoded;
        let mut outcome = PushOutcome {
            accepted: ends.len(),
            unencodable,
            dropped_for_room: 0,
        };
        if ends.is_empty() {
            for ack in acks.drain(..) {
                ack.complete();
            }
            return outcome;
        }
        let n = ends.len();
        let q = self.queue(source);
        q.bytes += buf.len();
        let id = q.next_id;
        q.next_id += 1;
        q.chunks.push_back(Chunk {
            id,
            buf,
            ends,
            next: 0,
            done: 0,
            lost: false,
            acks,
            arrived: now,
        });
        q.pending += n;
        q.held += n;
        if self.drop_oldest {
            outcome.dropped_for_room = self.enforce_limit();
        }
        outcome
    }

    /// Drops the oldest pending series lines while over the limit. Events and lines already
    /// in a flight are never dropped here.
    fn enforce_limit(&mut self) -> usize {
        let mut excess = self.held().saturating_sub(self.limit);
        let mut dropped = 0;
        let q = &mut self.series;
        for chunk in q.chunks.iter_mut() {
            if excess == 0 {
                break;
            }
            let avail = chunk.len() - chunk.next;
            if avail == 0 {
                continue;
            }
            let d = avail.min(excess);
            chunk.next += d;
            chunk.done += d;
            chunk.lost = true;
            q.bytes -= chunk.release_if_taken();
            excess -= d;
            dropped += d;
        }
        q.pending -= dropped;
        q.held -= dropped;
        q.pop_resolved();
        dropped
    }

    /// When the next flight is due: now if a full batch is pending, else when the oldest
    /// pending line has waited `flush_interval`. None when nothing is pending.
    pub fn flush_due(&self) -> Option<Instant> {
        let oldest = match (self.events.oldest_pending(), self.series.oldest_pending()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        if self.pending() >= self.batch_size {
            Some(oldest.min(Instant::now()))
        } else {
            Some(oldest + self.flush_interval)
        }
    }

    pub fn should_flush(&self, now: Instant) -> bool {
        self.flush_due().is_some_and(|due| due <= now)
    }

    /// Copies up to `batch_size` pending lines into a flight, events first.
    pub fn take_flight(&mut self) -> Option<Flight> {
        self.take_flight_from(&[Lane::Events, Lane::Series])
    }

    /// Like [`Buffer::take_flight`], from the given queues only, in that order.
    pub fn take_flight_from(&mut self, sources: &[Lane]) -> Option<Flight> {
        if sources.iter().all(|&s| self.queue_ref(s).pending == 0) {
            return None;
        }
        let mut flight = Flight::default();
        let mut room = self.batch_size;
        for &source in sources {
            let q = self.queue(source);
            for chunk in q.chunks.iter_mut() {
                if room == 0 {
                    break;
                }
                let avail = chunk.len() - chunk.next;
                if avail == 0 {
                    continue;
                }
                let k = avail.min(room);
                for i in chunk.next..chunk.next + k {
                    flight.body.extend_from_slice(chunk.line(i));
                    flight.ends.push(flight.body.len());
                }
                flight.parts.push((source, chunk.id, k));
                chunk.next += k;
                q.bytes -= chunk.release_if_taken();
                q.pending -= k;
                room -= k;
            }
        }
        Some(flight)
    }

    /// Marks every line of `flight` resolved (written or rejected) and completes the acks of
    /// batches now fully stored.
    pub fn resolve(&mut self, flight: &Flight) {
        for &(source, id, count) in &flight.parts {
            let q = self.queue(source);
            if let Some(chunk) = q.chunk_mut(id) {
                chunk.done += count;
            }
            q.held -= count;
        }
        self.events.pop_resolved();
        self.series.pop_resolved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldValue, Sample, SeriesKey, TagSet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn batch(m: &str, from: i64, n: i64) -> Batch {
        Batch::new(
            (from..from + n)
                .map(|i| {
                    Sample::new(SeriesKey::new(m, TagSet::empty()), i)
                        .with_field("v", FieldValue::Int(i))
                })
                .collect(),
        )
    }

    fn counted(b: Batch, n: &Arc<AtomicUsize>) -> Batch {
        let n = n.clone();
        b.with_ack(Ack::new(move |d| {
            if !d.releases() {
                return;
            }
            n.fetch_add(1, Ordering::SeqCst);
        }))
    }

    fn lines(f: &Flight) -> Vec<String> {
        String::from_utf8(f.body.clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn buffer(batch_size: usize, limit: usize) -> Buffer {
        Buffer::new(
            batch_size,
            Duration::from_secs(1),
            limit,
            Box::new(crate::sink::influx::line_protocol::LineEncoder::new(
                "events",
                crate::sink::influx::EncodeOptions::default(),
            )),
        )
    }

    #[test]
    fn flushes_on_size_or_age() {
        let mut b = buffer(3, 100);
        let t0 = Instant::now();
        assert_eq!(b.flush_due(), None);
        b.push(Lane::Series, batch("m", 0, 2), t0);
        assert!(!b.should_flush(t0));
        assert_eq!(b.flush_due(), Some(t0 + Duration::from_secs(1)));
        assert!(b.should_flush(t0 + Duration::from_secs(1)));
        b.push(Lane::Series, batch("m", 2, 1), t0);
        assert!(b.should_flush(t0));
    }

    #[test]
    fn events_go_first_and_order_is_kept() {
        let mut b = buffer(3, 100);
        let t = Instant::now();
        b.push(Lane::Series, batch("s", 0, 2), t);
        b.push(Lane::Events, batch("rule_state", 10, 1), t);
        b.push(Lane::Series, batch("s", 2, 2), t);
        let f = b.take_flight().unwrap();
        assert_eq!(lines(&f), ["events v=10i 10", "s v=0i 0", "s v=1i 1"]);
        // Lines in flight are not offered again; the next flight continues in order.
        let g = b.take_flight().unwrap();
        assert_eq!(lines(&g), ["s v=2i 2", "s v=3i 3"]);
        assert!(b.take_flight().is_none());
        assert_eq!(b.held(), 5);
        b.resolve(&f);
        b.resolve(&g);
        assert!(b.is_empty());
    }

    #[test]
    fn acks_complete_only_when_every_line_is_resolved() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut b = buffer(2, 100);
        let t = Instant::now();
        b.push(Lane::Series, counted(batch("m", 0, 3), &n), t);
        let f = b.take_flight().unwrap();
        b.resolve(&f);
        assert_eq!(
            n.load(Ordering::SeqCst),
            0,
            "one line of the batch is still unwritten"
        );
        let g = b.take_flight().unwrap();
        assert_eq!(g.lines(), 1);
        b.resolve(&g);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn batch_without_encodable_samples_is_acked_at_once() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut b = buffer(2, 100);
        let empty = Batch::new(vec![Sample::new(SeriesKey::new("m", TagSet::empty()), 1)
            .with_field("v", FieldValue::Float(f64::NAN))]);
        let out = b.push(Lane::Series, counted(empty, &n), Instant::now());
        assert_eq!(out.unencodable, 1);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn bytes_and_age_of_the_oldest_unwritten_line() {
        let mut b = buffer(2, 100);
        let t0 = Instant::now();
        assert_eq!(b.bytes(), 0);
        assert_eq!(b.oldest_unresolved(), None);
        b.push(Lane::Series, batch("m", 0, 2), t0);
        let later = t0 + Duration::from_secs(3);
        b.push(Lane::Series, batch("m", 2, 2), later);
        let all = b.bytes();
        assert!(all > 0);
        // The first chunk goes into a request: its bytes leave the buffer, but it stays the
        // oldest unwritten line until the request is resolved.
        let f = b.take_flight().unwrap();
        assert!(b.bytes() < all && b.bytes() > 0, "{} of {all}", b.bytes());
        assert_eq!(b.oldest_unresolved(), Some(t0));
        b.resolve(&f);
        assert_eq!(b.oldest_unresolved(), Some(later));
        let f = b.take_flight().unwrap();
        assert_eq!(b.bytes(), 0);
        b.resolve(&f);
        assert_eq!(b.oldest_unresolved(), None);
    }

    #[test]
    fn over_limit_drops_oldest_pending_series_never_events_nor_in_flight() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut b = buffer(2, 5);
        let t = Instant::now();
        b.push(Lane::Series, counted(batch("s", 0, 3), &n), t);
        let f = b.take_flight().unwrap(); // s0, s1 in flight
        b.push(Lane::Events, batch("e", 100, 2), t);
        assert_eq!(b.held(), 5);
        let out = b.push(Lane::Series, batch("s", 3, 2), t);
        // Over by 2: s2 (pending, oldest) and s3 go; s0/s1 are in flight, events stay.
        assert_eq!(out.dropped_for_room, 2);
        assert_eq!(b.held(), 5);
        b.resolve(&f);
        // The first batch lost s2: its ack is dropped, not completed.
        assert_eq!(n.load(Ordering::SeqCst), 0);
        let g = b.take_flight().unwrap();
        assert_eq!(lines(&g), ["events v=100i 100", "events v=101i 101"]);
        let h = b.take_flight().unwrap();
        assert_eq!(lines(&h), ["s v=4i 4"]);
        b.resolve(&g);
        b.resolve(&h);
        assert!(b.is_empty());
    }

    #[test]
    fn interleaved_sources_resolve_every_chunk() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut b = buffer(1000, 1000);
        let t = Instant::now();
        for k in 0..20 {
            let source = if k % 3 == 0 {
                Lane::Events
            } else {
                Lane::Series
            };
            b.push(source, counted(batch("m", k, 2), &n), t);
        }
        let f = b.take_flight().unwrap();
        b.resolve(&f);
        assert_eq!(n.load(Ordering::SeqCst), 20);
        assert!(b.is_empty());
    }

    #[test]
    fn events_alone_may_exceed_the_limit() {
        let mut b = buffer(2, 2);
        let out = b.push(Lane::Events, batch("e", 0, 4), Instant::now());
        assert_eq!(out.dropped_for_room, 0);
        assert_eq!(b.held(), 4);
    }

    #[test]
    fn without_drop_oldest_the_buffer_grows_past_its_limit() {
        let mut b = buffer(2, 3);
        b.drop_oldest = false;
        let out = b.push(Lane::Series, batch("s", 0, 5), Instant::now());
        assert_eq!(out.dropped_for_room, 0);
        assert_eq!(b.held(), 5);
    }

    #[test]
    fn flights_from_one_source_and_their_ranges() {
        let mut b = buffer(10, 100);
        let t = Instant::now();
        b.push(Lane::Series, batch("s", 0, 2), t);
        b.push(Lane::Events, batch("e", 10, 1), t);
        let e = b.take_flight_from(&[Lane::Events]).unwrap();
        assert_eq!(lines(&e), ["events v=10i 10"]);
        assert!(b.take_flight_from(&[Lane::Events]).is_none());
        b.push(Lane::Events, batch("e", 11, 1), t);
        let f = b.take_flight().unwrap();
        assert_eq!(
            f.source_ranges(),
            vec![(Lane::Events, 0..1), (Lane::Series, 1..3)]
        );
        let g = Flight::from_body(b"a v=1 1\nb v=2 2\n".to_vec());
        assert_eq!(g.lines(), 2);
        assert_eq!(&g.body[g.byte_range(1..2)], b"b v=2 2\n");
    }

    #[test]
    fn flight_byte_ranges_select_lines() {
        let mut b = buffer(10, 100);
        b.push(Lane::Series, batch("m", 0, 3), Instant::now());
        let f = b.take_flight().unwrap();
        assert_eq!(&f.body[f.byte_range(1..3)], b"m v=1i 1\nm v=2i 2\n");
        assert_eq!(&f.body[f.byte_range(0..1)], b"m v=0i 0\n");
    }
}
