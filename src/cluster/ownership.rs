//! What this member owns, as a [`tokio::sync::watch`] the collectors read: the coordinator
//! ([`super::member`]) publishes a [`View`] (this member, the live members, whether it may
//! hold units at all), and each poller holds a [`UnitGate`] for its unit that it asks before
//! each poll and that wakes it the moment the unit becomes its own.
//!
//! Without `[cluster]` there is no [`Ownership`] and every unit is polled (collectors take an
//! `Option<Ownership>`).

use std::sync::Arc;

use tokio::sync::watch;

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

/// The read side, cloned into every collector.
#[derive(Clone, Debug)]
pub struct Ownership {
    rx: watch::Receiver<Arc<View>>,
}

/// The write side, held by the coordinator.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Arc<View>>,
}

/// A publisher and its first reader; the view starts empty (nothing owned).
pub fn channel() -> (Publisher, Ownership) {
    let (tx, rx) = watch::channel(Arc::new(View::default()));
    (Publisher { tx }, Ownership { rx })
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

    pub fn subscribe(&self) -> Ownership {
        Ownership {
            rx: self.tx.subscribe(),
        }
    }
}

impl Ownership {
    pub fn owns(&self, unit: &str) -> bool {
        self.rx.borrow().owns(unit)
    }

    /// A gate for one unit (`snmp:<target>`, see [`super::assignment`]).
    pub fn gate(&self, unit: impl Into<Arc<str>>) -> UnitGate {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        let unit = unit.into();
        let owned = rx.borrow().owns(&unit);
        UnitGate { unit, rx, owned }
    }
}

/// One unit's ownership, as its poller sees it.
#[derive(Clone, Debug)]
pub struct UnitGate {
    unit: Arc<str>,
    rx: watch::Receiver<Arc<View>>,
    /// As last seen by [`UnitGate::owns`] or [`UnitGate::gained`].
    owned: bool,
}

impl UnitGate {
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// Whether this member owns the unit now.
    pub fn owns(&mut self) -> bool {
        self.owned = self.rx.borrow_and_update().owns(&self.unit);
        self.owned
    }

    /// Resolves when the unit becomes this member's (from not owned to owned); never when the
    /// coordinator is gone. Cancel-safe: the state is updated only after a change is seen.
    pub async fn gained(&mut self) {
        loop {
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let was = self.owned;
            self.owned = self.rx.borrow_and_update().owns(&self.unit);
            if self.owned && !was {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view(me: &str, members: &[&str], holding: bool) -> View {
        View {
            me: me.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            holding,
        }
    }

    #[tokio::test]
    async fn a_gate_wakes_when_its_unit_is_gained_and_not_before() {
        let (publisher, ownership) = channel();
        // A unit that "a" owns when alone and "b" owns when both are members.
        let unit = (0..100)
            .map(|i| format!("snmp:t{i}"))
            .find(|u| owner(u, &["a".into(), "b".into()]) == Some("b"))
            .unwrap();
        let mut gate = ownership.gate(unit.as_str());
        assert!(!gate.owns());
        publisher.publish(view("a", &["a", "b"], true));
        let waited = tokio::time::timeout(Duration::from_millis(50), gate.gained()).await;
        assert!(waited.is_err(), "woke for a unit it does not own");
        assert!(!gate.owns());
        publisher.publish(view("a", &["a"], true));
        tokio::time::timeout(Duration::from_secs(1), gate.gained())
            .await
            .expect("woke when b left");
        assert!(gate.owns());
        // Fenced: holds nothing, whoever the members are.
        publisher.publish(view("a", &["a"], false));
        assert!(!gate.owns());
        assert!(!ownership.owns(&unit));
        // Publishing the same view again is not a change.
        assert_eq!(publisher.publish(view("a", &["a"], false)), None);
    }
}
