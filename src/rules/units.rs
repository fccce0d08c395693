//! Rule state by cluster unit (`snmp:<target>`, `mqtt:<partition>`): the engine keeps each
//! series with the unit whose collector feeds it ([`Engine::observe_from`]), so a member
//! handing a unit to another can give exactly that unit's state away
//! ([`Engine::unit_snapshot`], [`Engine::forget_unit`]) and the next owner can take it up
//! ([`Engine::restore_unit`]) before its collector starts: an alarm firing before the
//! handover is still firing after it, with no resolve, no second page and no false stale.

use std::sync::Arc;

use crate::model::Event;

use super::engine::Engine;
use super::open_alerts::SavedOpen;
use super::state::{self, DecodeError, Snapshot};

/// What a unit's checkpoint brought back.
#[derive(Debug, Default)]
pub struct UnitRestore {
    /// (series, rule) states and field tracks restored.
    pub records: usize,
    /// Alerts that were open (notified, not silenced) on the previous owner: taken over, not
    /// announced again.
    pub open: Vec<Event>,
    /// Their first-firing times and acknowledgements.
    pub desk: Vec<SavedOpen>,
}

impl Engine {
    /// The unit a series is kept with, if any.
    pub fn unit_of(&self, series: &crate::model::SeriesKey) -> Option<&Arc<str>> {
        self.series.get(series).and_then(|slot| slot.unit.as_ref())
    }

    /// The state of `unit`'s series, as a checkpoint (the state file's form, without the
    /// devices known to be down: the next poll tells the new owner again).
    pub fn unit_snapshot(&self, unit: &str) -> Snapshot {
        self.snapshot_where(|slot| slot.unit.as_deref() == Some(unit), false)
    }

    /// Drops `unit`'s series (no events: the next owner carries on from the checkpoint);
    /// returns how many.
    pub fn forget_unit(&mut self, unit: &str) -> usize {
        let of_unit = |slot: &super::series::SeriesSlot| slot.unit.as_deref() == Some(unit);
        let gone: crate::rules::series::FastSet<crate::model::SeriesKey> = self
            .series
            .iter()
            .filter(|(_, slot)| of_unit(slot))
            .map(|(k, _)| k.clone())
            .collect();
        self.series.retain(|_, slot| !of_unit(slot));
        self.silencer.forget(|series| gone.contains(series));
        self.recount();
        gone.len()
    }

    /// Takes up `unit`'s state from its checkpoint ([`Engine::unit_snapshot`]'s bytes).
    /// Rules changed since are re-judged and removed ones resolved, as after a restart (those
    /// events come out of the next tick).
    pub fn restore_unit(
        &mut self,
        unit: &Arc<str>,
        bytes: &[u8],
    ) -> Result<UnitRestore, DecodeError> {
        let saved = state::decode(bytes)?;
        // Whatever a restart left to announce stays the stage's; keep it apart.
        let earlier_alerts = std::mem::take(&mut self.restored_alerts);
        let earlier_open = std::mem::take(&mut self.restored_open);
        let records = self.restore(saved, Some(unit));
        let open = self.take_restored_alerts();
        let desk = std::mem::replace(&mut self.restored_open, earlier_open);
        self.restored_alerts = earlier_alerts;
        self.recount();
        Ok(UnitRestore {
            records,
            open,
            desk,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventState, Severity};
    use crate::test_support::{rack_sample as sample, ruleset};

    const RULES: &str = r#"
[[rule]]
name = "hot"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { critical = 30.0 }
message = "{rack} at {value}"
"#;

    fn engine() -> Engine {
        Engine::new(ruleset(RULES))
    }

    #[test]
    fn a_firing_alarm_moves_with_its_unit_and_nothing_else_does() {
        let (a, b): (Arc<str>, Arc<str>) = ("mqtt:a".into(), "mqtt:b".into());
        let mut first = engine();
        let mut out = Vec::new();
        first.observe_from(&sample("r1", 1_000, 35.0), Some(&a), &mut out);
        first.observe_from(&sample("r2", 1_000, 35.0), Some(&b), &mut out);
        assert_eq!(out.len(), 2, "both fire");
        assert_eq!(first.firing_count(), 2);

        let bytes = first.unit_snapshot("mqtt:a").to_bytes();
        assert_eq!(first.forget_unit("mqtt:a"), 1);
        assert_eq!(first.firing_count(), 1, "b stays");

        let mut second = engine();
        let restored = second.restore_unit(&a, &bytes).unwrap();
        assert!(restored.records >= 1);
        assert_eq!(restored.open.len(), 1);
        assert_eq!(restored.open[0].state, EventState::Firing);
        assert_eq!(restored.open[0].severity, Severity::Critical);
        assert_eq!(second.firing_count(), 1);
        assert_eq!(second.unit_of(&sample("r1", 0, 0.0).series), Some(&a));
        // Still breaching on the new owner: no new event; cooling down resolves it there.
        let mut out = Vec::new();
        second.observe_from(&sample("r1", 2_000, 36.0), Some(&a), &mut out);
        assert!(out.is_empty(), "{out:?}");
        second.observe_from(&sample("r1", 3_000, 20.0), Some(&a), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, EventState::Resolved);
        // Nothing the new owner did not have comes along, and a restart's own
        // re-announcements are not mixed in.
        assert!(second.take_restored_alerts().is_empty());
        assert!(second.unit_snapshot("mqtt:b").is_empty());
    }

    #[test]
    fn a_broken_checkpoint_is_an_error_not_a_panic() {
        let mut e = engine();
        let unit: Arc<str> = "snmp:t".into();
        assert!(e.restore_unit(&unit, b"{").is_err());
        assert!(e.restore_unit(&unit, br#"{"version": 99}"#).is_err());
        assert_eq!(e.series_count(), 0);
    }
}
