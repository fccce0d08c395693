//! The handover: turns the [`View`] (which units rendezvous hashing gives this member) into
//! the [`super::ownership::Active`] units the collectors run.
//!
//! A unit the view takes away stops being active at once; a unit it gives becomes active.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::ownership::{ActivePublisher, View, ViewReader};

/// Follows the view until `stop`; at `stop` every unit is made inactive.
pub async fn run(
    mut view: ViewReader,
    active: ActivePublisher,
    units: Vec<String>,
    stop: CancellationToken,
) {
    let units: Vec<Arc<str>> = units.into_iter().map(Arc::from).collect();
    loop {
        let current: Arc<View> = view.borrow_and_update().clone();
        for unit in &units {
            active.set(unit, current.owns(unit));
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = view.changed() => if changed.is_err() { break },
        }
    }
    for unit in &units {
        active.set(unit, false);
    }
}
