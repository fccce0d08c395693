//! Fencing: when may this member hold units, judged only by the clock and its last
//! successful lease renewal, never by asking etcd (it may be the one thing it cannot reach).
//!
//! etcd drops the member's key `failover_after` (the lease TTL) after the last renewal etcd
//! saw, and the others take its units when the key is gone. The member stops its units one
//! renewal period (TTL/3) earlier, so it has released them before anyone else starts:
//! no target is polled by two members and no trap is recorded twice across a partition.
//!
//! An etcd outage fences every member at once, and a site left unwatched because its
//! coordinator is down is worse than duplicate rows: after `fail_static_after` more without
//! etcd, the member polls its last known share again ([`Lease::FailStatic`]); see
//! docs/cluster.md for the trade-off.

use std::time::{Duration, Instant};

/// What the member may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Renewed recently: it holds the units the assignment gives it.
    Live,
    /// Not renewed for `failover_after - period`, or not registered yet: it holds nothing.
    Fenced,
    /// Fenced for `fail_static_after`: it holds its last known share without etcd.
    FailStatic,
}

#[derive(Clone, Debug)]
pub struct Fence {
    /// `failover_after - period`.
    fence_after: Duration,
    fail_static_after: Duration,
    started: Instant,
    last_renewal: Option<Instant>,
}

/// How often the lease is renewed: a third of its TTL, so two renewals can be lost before
/// the member fences itself.
pub fn keep_alive_period(failover_after: Duration) -> Duration {
    failover_after / 3
}

impl Fence {
    pub fn new(failover_after: Duration, fail_static_after: Duration, now: Instant) -> Fence {
        Fence {
            fence_after: failover_after.saturating_sub(keep_alive_period(failover_after)),
            fail_static_after,
            started: now,
            last_renewal: None,
        }
    }

    /// A renewal (or the grant) etcd confirmed at `now`.
    pub fn renewed(&mut self, now: Instant) {
        self.last_renewal = Some(now);
    }

    /// etcd said the lease is gone: fenced at once, whatever the clock says.
    pub fn lost(&mut self, now: Instant) {
        if self.is_live(now) {
            self.last_renewal = Some(now - self.fence_after);
        }
    }

    pub fn is_live(&self, now: Instant) -> bool {
        self.state(now) == Lease::Live
    }

    pub fn state(&self, now: Instant) -> Lease {
        let since = match self.last_renewal {
            Some(t) => {
                let since = now.saturating_duration_since(t);
                if since < self.fence_after {
                    return Lease::Live;
                }
                since - self.fence_after
            }
            // Never registered (etcd unreachable since start): fenced from the start.
            None => now.saturating_duration_since(self.started),
        };
        if since < self.fail_static_after {
            Lease::Fenced
        } else {
            Lease::FailStatic
        }
    }

    /// When [`Fence::state`] changes next without a renewal; `None` once fail-static.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let fenced_at = match self.last_renewal {
            Some(t) => t + self.fence_after,
            None => self.started,
        };
        [fenced_at, fenced_at + self.fail_static_after]
            .into_iter()
            .find(|&t| t > now)
    }

    /// How long since the last renewal (since start when there was none).
    pub fn since_renewal(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_renewal.unwrap_or(self.started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn fences_one_period_before_the_lease_expires_then_fails_static() {
        let t0 = Instant::now();
        let mut f = Fence::new(3 * S, 12 * S, t0);
        assert_eq!(f.state(t0), Lease::Fenced, "not registered yet");
        f.renewed(t0);
        assert_eq!(f.state(t0 + S), Lease::Live);
        assert_eq!(f.next_change(t0 + S), Some(t0 + 2 * S));
        // TTL 3 s, renewed every 1 s: fenced at 2 s, the lease expires in etcd at 3 s.
        assert_eq!(f.state(t0 + 2 * S), Lease::Fenced);
        assert_eq!(f.state(t0 + 13 * S), Lease::Fenced);
        assert_eq!(f.state(t0 + 14 * S), Lease::FailStatic);
        assert_eq!(f.next_change(t0 + 14 * S), None);
        f.renewed(t0 + 15 * S);
        assert_eq!(f.state(t0 + 15 * S), Lease::Live);
        f.lost(t0 + 16 * S);
        assert_eq!(f.state(t0 + 16 * S), Lease::Fenced);
        assert_eq!(f.since_renewal(t0 + 16 * S), 2 * S);
    }

    #[test]
    fn never_registered_fails_static_after_the_wait() {
        let t0 = Instant::now();
        let f = Fence::new(15 * S, 60 * S, t0);
        assert_eq!(f.state(t0 + 59 * S), Lease::Fenced);
        assert_eq!(f.state(t0 + 60 * S), Lease::FailStatic);
        assert_eq!(keep_alive_period(15 * S), 5 * S);
    }
}
