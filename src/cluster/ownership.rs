//! What this member owns, in two steps.
//!
//! 1. The coordinator ([`super::member`]) publishes a [`View`]: this member, the live
//!    members, whether it may hold units at all. Which units the view gives this member is
//!    rendezvous hashing ([`super::assignment`]).
//! 2. The handover ([`super::handover`]) turns the view into the [`Active`] units: a unit the
//!    view gives this member becomes active once its rule state is restored (and, while the
//!    previous owner still lives, once that owner has released it); a unit the view takes
//!    away stops being active at once, and its release finishes when its collector has
//!    stopped ([`UnitGate::running`]).
//!
//! Collectors read the second step through [`Ownership`]: each poller or MQTT partition
//! holds a [`UnitGate`] it asks before each poll, that wakes it the moment the unit becomes
//! its own ([`UnitGate::gained`]) and when it is taken away ([`UnitGate::lost`]). Units that
//! are not configured (traps from an address no target has) follow the view directly: they
//! carry no state to move.
//!
//! Without `[cluster]` there is no [`Ownership`] and every unit is collected (collectors
//! take an `Option<Ownership>`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::assignment::owner;

/// One member's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// This member's name.
    pub me: String,
    /// The live members (registered in etcd under a lease), sorted; `me` among them when it is
    /// registered.
    pub members: Vec<String>,
    /// False while fenced (its lease may be gone) or before it first registered: it owns
    /// nothing then.
    pub holding: bool,
}

impl View {
    pub fn owns(&self, unit: &str) -> bool {
        self.holding && owner(unit, &self.members) == Some(self.me.as_str())
    }
}

/// The units this member collects now (restored, not released).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Active {
    pub units: HashSet<Arc<str>>,
}

/// The write side of the view, held by the coordinator.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Arc<View>>,
}

/// The view as the handover reads it.
pub type ViewReader = watch::Receiver<Arc<View>>;

/// A view publisher and its reader; the view starts empty (nothing owned).
pub fn channel() -> (Publisher, ViewReader) {
    let (tx, rx) = watch::channel(Arc::new(View::default()));
    (Publisher { tx }, rx)
}

impl Publisher {
    /// Publishes `view` when it differs from the current one; returns the previous view
    /// then, `None` when nothing changed.
    pub fn publish(&self, view: View) -> Option<Arc<View>> {
        let mut previous = None;
        self.tx.send_if_modified(|cur| {
            if **cur == view {
                return false;
            }
            previous = Some(std::mem::replace(cur, Arc::new(view)));
            true
        });
        previous
    }

    pub fn current(&self) -> Arc<View> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> ViewReader {
        self.tx.subscribe()
    }
}

/// Collectors still running each unit, so a release waits for the last sample of the unit
/// to be handed downstream before its rule state is taken.
#[derive(Debug, Default)]
struct Running {
    counts: Mutex<HashMap<Arc<str>, usize>>,
    changed: Notify,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The write side of the active units, held by the handover.
#[derive(Debug)]
pub struct ActivePublisher {
    tx: watch::Sender<Arc<Active>>,
    running: Arc<Running>,
}

/// The read side, cloned into every collector.
#[derive(Clone, Debug)]
pub struct Ownership {
    active: watch::Receiver<Arc<Active>>,
    view: ViewReader,
    /// The configured units (the handover's); others follow the view.
    managed: Arc<HashSet<String>>,
    running: Arc<Running>,
}

/// The handover's publisher and the collectors' reader; `managed` are the configured units.
pub fn active_channel(view: ViewReader, managed: &[String]) -> (ActivePublisher, Ownership) {
    let (tx, active) = watch::channel(Arc::new(Active::default()));
    let running = Arc::new(Running::default());
    (
        ActivePublisher {
            tx,
            running: running.clone(),
        },
        Ownership {
            active,
            view,
            managed: Arc::new(managed.iter().cloned().collect()),
            running,
        },
    )
}

impl ActivePublisher {
    /// Makes `unit` active or not; returns whether that changed anything.
    pub fn set(&self, unit: &Arc<str>, active: bool) -> bool {
        self.tx.send_if_modified(|cur| {
            if cur.units.contains(unit) == active {
                return false;
            }
            let mut next = (**cur).clone();
            if active {
                next.units.insert(unit.clone());
            } else {
                next.units.remove(unit);
            }
            *cur = Arc::new(next);
            true
        })
    }

    pub fn is_active(&self, unit: &str) -> bool {
        self.tx.borrow().units.contains(unit)
    }

    pub fn active_count(&self) -> usize {
        self.tx.borrow().units.len()
    }

    /// Waits until no collector runs `unit` any more, at most `timeout`; returns whether it
    /// stopped in time.
    pub async fn stopped(&self, unit: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.running.changed.notified();
            if self.running.lock().get(unit).copied().unwrap_or(0) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

impl Ownership {
    pub fn owns(&self, unit: &str) -> bool {
        if self.managed.contains(unit) {
            self.active.borrow().units.contains(unit)
        } else {
            self.view.borrow().owns(unit)
        }
    }

    /// Whether `unit` is configured (its state moves with it), not a unit of traps from an
    /// address no target has.
    pub fn is_managed(&self, unit: &str) -> bool {
        self.managed.contains(unit)
    }

    /// A gate for one configured unit (`snmp:<target>`, `mqtt:<partition>`, see
    /// [`super::assignment`]).
    pub fn gate(&self, unit: impl Into<Arc<str>>) -> UnitGate {
        let mut rx = self.active.clone();
        rx.mark_unchanged();
        let unit = unit.into();
        let owned = rx.borrow().units.contains(&unit);
        UnitGate {
            unit,
            rx,
            owned,
            running: self.running.clone(),
        }
    }
}

/// One unit's ownership, as its collector sees it.
#[derive(Clone, Debug)]
pub struct UnitGate {
    unit: Arc<str>,
    rx: watch::Receiver<Arc<Active>>,
    /// As last seen by [`UnitGate::owns`], [`UnitGate::gained`] or [`UnitGate::lost`].
    owned: bool,
    running: Arc<Running>,
}

impl UnitGate {
    pub fn unit(&self) -> &str {
        &self.unit
    }

    pub fn unit_arc(&self) -> Arc<str> {
        self.unit.clone()
    }

    /// Whether this member owns the unit now.
    pub fn owns(&mut self) -> bool {
        self.owned = self.rx.borrow_and_update().units.contains(&self.unit);
        self.owned
    }

    /// Resolves when the unit becomes this member's (from not owned to owned); never when the
    /// handover is gone. Cancel-safe: the state is updated only after a change is seen.
    pub async fn gained(&mut self) {
        self.until(true).await
    }

    /// Resolves when the unit stops being this member's (from owned to not owned); never
    /// when the handover is gone. Cancel-safe.
    pub async fn lost(&mut self) {
        self.until(false).await
    }

    async fn until(&mut self, owned: bool) {
        loop {
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let was = self.owned;
            self.owned = self.rx.borrow_and_update().units.contains(&self.unit);
            if self.owned == owned && was != owned {
                return;
            }
        }
    }

    /// Marks the unit as being collected until the guard is dropped: a release of the unit
    /// waits for that (so its last samples reach the rules stage before its state is taken).
    pub fn running(&self) -> RunningGuard {
        *self.running.lock().entry(self.unit.clone()).or_insert(0) += 1;
        RunningGuard {
            unit: self.unit.clone(),
            running: self.running.clone(),
        }
    }
}

/// See [`UnitGate::running`].
#[derive(Debug)]
pub struct RunningGuard {
    unit: Arc<str>,
    running: Arc<Running>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut counts = self.running.lock();
        if let Some(n) = counts.get_mut(&self.unit) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.unit);
            }
        }
        drop(counts);
        self.running.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(me: &str, members: &[&str], holding: bool) -> View {
        View {
            me: me.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            holding,
        }
    }

    #[tokio::test]
    async fn a_gate_wakes_when_its_unit_is_gained_and_lost() {
        let (_view_tx, view_rx) = channel();
        let unit: Arc<str> = "snmp:t1".into();
        let (active, ownership) = active_channel(view_rx, &["snmp:t1".to_string()]);
        let mut gate = ownership.gate(unit.clone());
        assert!(!gate.owns());
        let waited = tokio::time::timeout(Duration::from_millis(50), gate.gained()).await;
        assert!(waited.is_err(), "woke for a unit it does not own");
        assert!(active.set(&unit, true));
        assert!(!active.set(&unit, true), "no change the second time");
        tokio::time::timeout(Duration::from_secs(1), gate.gained())
            .await
            .expect("woke when gained");
        assert!(gate.owns() && ownership.owns(&unit));
        active.set(&unit, false);
        tokio::time::timeout(Duration::from_secs(1), gate.lost())
            .await
            .expect("woke when lost");
        assert!(!gate.owns() && !ownership.owns(&unit));
    }

    #[tokio::test]
    async fn a_release_waits_for_the_collector_to_stop() {
        let (_view_tx, view_rx) = channel();
        let (active, ownership) = active_channel(view_rx, &["mqtt:p".to_string()]);
        let gate = ownership.gate("mqtt:p");
        assert!(active.stopped("mqtt:p", Duration::ZERO).await);
        let guard = gate.running();
        assert!(!active.stopped("mqtt:p", Duration::from_millis(30)).await);
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(guard);
        });
        assert!(active.stopped("mqtt:p", Duration::from_secs(2)).await);
        later.await.unwrap();
    }

    #[test]
    fn units_not_configured_follow_the_view() {
        let (view_tx, view_rx) = channel();
        let (_active, ownership) = active_channel(view_rx, &["snmp:t1".to_string()]);
        view_tx.publish(view("a", &["a"], true));
        assert!(ownership.owns("snmp-trap-source:10.0.0.1"));
        assert!(!ownership.owns("snmp:t1"), "configured: only once active");
        view_tx.publish(view("a", &["a"], false));
        assert!(!ownership.owns("snmp-trap-source:10.0.0.1"));
        // Publishing the same view again is not a change.
        assert_eq!(view_tx.publish(view("a", &["a"], false)), None);
    }
}
