//! The rules stage's side of a cluster handover (`crate::cluster::handover` is the other):
//! which units' rule state the stage holds, the commands that move a unit's state in and out
//! ([`UnitCommand`]), and the checkpoints it sends so a member that dies suddenly leaves its
//! state behind ([`UnitCheckpoint`]).
//!
//! A batch of a unit the stage does not hold (its last samples after a release, or samples
//! before the state is restored) is written, not judged: judging it would make state for a
//! series that another member is judging, which would page twice or go stale here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A unit's full checkpoint is sent at least this often; a unit whose alerts changed is sent
/// at once (an acknowledgement: at the next tick, within a second).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// Commands and checkpoints in flight between the stage and the handover.
const LINK_CAPACITY: usize = 1024;

/// What the handover asks the stage.
#[derive(Debug)]
pub enum UnitCommand {
    /// Take up the unit's state from its checkpoint (none: start fresh) and judge its
    /// batches from now on; the answer is the records restored, or why the checkpoint could
    /// not be read (the unit then starts fresh).
    Restore {
        unit: Arc<str>,
        checkpoint: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Give the unit's state away: the answer is its checkpoint; the stage forgets it and
    /// stops judging the unit's batches.
    Release {
        unit: Arc<str>,
        reply: oneshot::Sender<Vec<u8>>,
    },
}

/// A unit's state as the stage holds it now.
#[derive(Debug)]
pub struct UnitCheckpoint {
    pub unit: Arc<str>,
    pub bytes: Vec<u8>,
    /// The stage's last word at shutdown: the unit is released with it.
    pub last: bool,
}

/// The stage's end of the link.
pub struct UnitLink {
    pub commands: mpsc::Receiver<UnitCommand>,
    pub checkpoints: mpsc::Sender<UnitCheckpoint>,
}

/// The handover's end of the link.
pub struct UnitPort {
    pub commands: mpsc::Sender<UnitCommand>,
    pub checkpoints: mpsc::Receiver<UnitCheckpoint>,
}

/// A connected pair.
pub fn link() -> (UnitPort, UnitLink) {
    let (commands_tx, commands) = mpsc::channel(LINK_CAPACITY);
    let (checkpoints, checkpoints_rx) = mpsc::channel(LINK_CAPACITY);
    (
        UnitPort {
            commands: commands_tx,
            checkpoints: checkpoints_rx,
        },
        UnitLink {
            commands,
            checkpoints,
        },
    )
}

/// The units whose state the stage holds, and which of them to checkpoint next.
pub struct HeldUnits {
    held: HashSet<Arc<str>>,
    /// Units whose alerts changed since their last checkpoint.
    dirty: HashSet<Arc<str>>,
    last_full: Instant,
}

impl Default for HeldUnits {
    fn default() -> Self {
        HeldUnits {
            held: HashSet::new(),
            dirty: HashSet::new(),
            last_full: Instant::now(),
        }
    }
}

impl HeldUnits {
    /// Whether a batch of `unit` is judged (always without a unit).
    pub fn judges(&self, unit: Option<&Arc<str>>) -> bool {
        unit.is_none_or(|u| self.held.contains(u))
    }

    pub fn hold(&mut self, unit: Arc<str>) {
        self.dirty.insert(unit.clone());
        self.held.insert(unit);
    }

    pub fn release(&mut self, unit: &str) {
        self.held.remove(unit);
        self.dirty.remove(unit);
    }

    /// An alert of `unit` changed (fired, resolved, acknowledged).
    pub fn touched(&mut self, unit: Option<&Arc<str>>) {
        if let Some(u) = unit.filter(|u| self.held.contains(*u)) {
            if !self.dirty.contains(u) {
                self.dirty.insert(u.clone());
            }
        }
    }

    /// The units to checkpoint at this tick: every held one each [`CHECKPOINT_EVERY`], else
    /// those touched.
    pub fn due(&mut self, now: Instant) -> Vec<Arc<str>> {
        if now.duration_since(self.last_full) >= CHECKPOINT_EVERY {
            self.last_full = now;
            self.dirty.clear();
            return self.held.iter().cloned().collect();
        }
        self.dirty.drain().collect()
    }

    /// The units touched since the last checkpoint, now (an alert change).
    pub fn take_touched(&mut self) -> Vec<Arc<str>> {
        self.dirty.drain().collect()
    }

    pub fn all(&self) -> Vec<Arc<str>> {
        self.held.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_held_units_are_judged_and_touched_ones_are_due_first() {
        let mut h = HeldUnits::default();
        let (a, b): (Arc<str>, Arc<str>) = ("snmp:a".into(), "snmp:b".into());
        assert!(h.judges(None));
        assert!(!h.judges(Some(&a)));
        h.hold(a.clone());
        h.hold(b.clone());
        assert!(h.judges(Some(&a)));
        let start = Instant::now();
        let mut first = h.due(start);
        first.sort();
        assert_eq!(
            first,
            vec![a.clone(), b.clone()],
            "new units are checkpointed at once"
        );
        assert!(h.due(start).is_empty());
        h.touched(Some(&b));
        assert_eq!(h.due(start), vec![b.clone()]);
        assert_eq!(h.due(start + CHECKPOINT_EVERY * 2).len(), 2, "a full round");
        h.release(&a);
        assert!(!h.judges(Some(&a)));
        h.touched(Some(&a));
        assert!(
            h.due(start).is_empty(),
            "a released unit is not checkpointed"
        );
    }
}
