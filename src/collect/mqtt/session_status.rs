//! Connection state of the collector's MQTT sessions: the `sitewatch_mqtt_connected` gauge
//! of each and the one MQTT flag of `/health` ([`crate::status::set_mqtt`]) for all.
//!
//! Without partitions there is one session and this is what it always was: the gauge without
//! labels, the flag its state. With partitions each running session (one per partition this
//! member owns) has the gauge with a `partition` label, and the flag is "every running
//! session is connected"; a member running none (a cluster member that owns no partition
//! now) has nothing to be disconnected from and says so in `last_error`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Board {
    /// Running sessions (by partition, "" without partitions): connected or not.
    running: Mutex<BTreeMap<Arc<str>, bool>>,
}

/// One session's handle on the board.
#[derive(Clone, Debug)]
pub(super) struct SessionStatus {
    board: Arc<Board>,
    /// The partition, `None` for the single session without partitions.
    partition: Option<Arc<str>>,
}

/// The board of one collector's sessions.
#[derive(Clone, Debug, Default)]
pub(super) struct Sessions {
    board: Arc<Board>,
}

impl Sessions {
    pub(super) fn session(&self, partition: Option<&str>) -> SessionStatus {
        SessionStatus {
            board: self.board.clone(),
            partition: partition.map(Arc::from),
        }
    }
}

impl SessionStatus {
    fn key(&self) -> Arc<str> {
        self.partition.clone().unwrap_or_else(|| Arc::from(""))
    }

    fn gauge(&self, connected: bool) {
        let v = if connected { 1.0 } else { 0.0 };
        match &self.partition {
            Some(p) => {
                metrics::gauge!("sitewatch_mqtt_connected", "partition" => p.to_string()).set(v)
            }
            None => metrics::gauge!("sitewatch_mqtt_connected").set(v),
        }
    }

    /// The session runs and is (or is not) connected; `error` says why not.
    pub(super) fn set(&self, connected: bool, error: Option<String>) {
        self.gauge(connected);
        let all = {
            let mut running = lock(&self.board);
            running.insert(self.key(), connected);
            running.values().all(|c| *c)
        };
        crate::status::set_mqtt(all, error.map(|e| self.named(e)));
    }

    /// The session stopped: `for_good` at shutdown (MQTT is down then), else because this
    /// member no longer owns its partition (the others' state decides).
    pub(super) fn stopped(&self, for_good: bool) {
        self.gauge(false);
        let (all, none_left) = {
            let mut running = lock(&self.board);
            running.remove(&self.key());
            (running.values().all(|c| *c), running.is_empty())
        };
        if for_good {
            crate::status::set_mqtt(false, Some("stopped".into()));
        } else if none_left {
            crate::status::set_mqtt(
                true,
                Some("no MQTT partition is owned by this member now".into()),
            );
        } else {
            crate::status::set_mqtt(all, None);
        }
    }

    fn named(&self, error: String) -> String {
        match &self.partition {
            Some(p) => format!("partition {p}: {error}"),
            None => error,
        }
    }
}

fn lock(board: &Board) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, bool>> {
    board.running.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_connected(board: &Sessions) -> bool {
        lock(&board.board).values().all(|c| *c)
    }

    #[test]
    fn connected_means_every_running_session() {
        let board = Sessions::default();
        let a = board.session(Some("a"));
        let b = board.session(Some("b"));
        a.set(true, None);
        b.set(false, Some("refused".into()));
        assert!(!all_connected(&board));
        assert_eq!(b.named("x".into()), "partition b: x");
        b.set(true, None);
        assert!(all_connected(&board));
        b.stopped(false);
        assert!(all_connected(&board));
        assert_eq!(lock(&board.board).len(), 1);
    }
}
