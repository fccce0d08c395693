//! This member's side of the cluster: what it knows (the live members from etcd, its
//! [`Fence`]), what it publishes (the [`View`] the collectors read), and the log lines and
//! metrics of every change. The etcd conversation that feeds it is [`super::membership`].

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use super::assignment::owned_by;
use super::config::ClusterConfig;
use super::fencing::{Fence, Lease};
use super::ownership::{Publisher, View};

/// Names shown in a gained/released log line; the count is always complete.
const LOG_UNITS: usize = 10;

pub struct Member {
    me: String,
    units: Vec<String>,
    fence: Fence,
    /// The live members as etcd last told.
    members: BTreeSet<String>,
    /// The members when the lease was last live: the share held when fail-static.
    last_live: Option<Vec<String>>,
    state: Lease,
    publisher: Publisher,
}

impl Member {
    pub fn new(cfg: &ClusterConfig, me: String, units: Vec<String>, publisher: Publisher) -> Self {
        metrics::gauge!("sitewatch_cluster_members").set(0.0);
        metrics::gauge!("sitewatch_cluster_owned_units").set(0.0);
        metrics::gauge!("sitewatch_cluster_lease_ok").set(0.0);
        for change in ["gained", "released"] {
            metrics::counter!("sitewatch_cluster_ownership_changes_total", "change" => change)
                .increment(0);
        }
        Member {
            me,
            units,
            fence: Fence::new(cfg.failover_after, cfg.fail_static_after(), Instant::now()),
            members: BTreeSet::new(),
            last_live: None,
            state: Lease::Fenced,
            publisher,
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// etcd confirmed the lease; `sent` is when the request that renewed it left, so the
    /// fence never counts from later than etcd did.
    pub fn renewed(&mut self, sent: Instant) {
        self.fence.renewed(sent);
    }

    /// etcd says the lease is gone: release everything now.
    pub fn lost_lease(&mut self) {
        self.fence.lost(Instant::now());
        self.refresh();
    }

    /// The whole member list, from a read of the prefix.
    pub fn set_members(&mut self, members: BTreeSet<String>) {
        for joined in members.difference(&self.members) {
            tracing::info!(member = %joined, "cluster member joined");
        }
        for left in self.members.difference(&members) {
            tracing::info!(member = %left, "cluster member left");
        }
        self.members = members;
        self.refresh();
    }

    pub fn member_put(&mut self, name: &str) {
        let mut m = self.members.clone();
        m.insert(name.to_string());
        self.set_members(m);
    }

    pub fn member_deleted(&mut self, name: &str) {
        let mut m = self.members.clone();
        m.remove(name);
        self.set_members(m);
    }

    /// Recomputes the view from the fence and the members, publishes it when it changed, and
    /// logs and counts what changed.
    pub fn refresh(&mut self) {
        let now = Instant::now();
        let state = self.fence.state(now);
        if state != self.state {
            self.log_transition(state, now);
            self.state = state;
        }
        let live: Vec<String> = self.members.iter().cloned().collect();
        let view = match state {
            Lease::Live => {
                self.last_live = Some(live.clone());
                View {
                    me: self.me.clone(),
                    members: live,
                    holding: true,
                }
            }
            Lease::Fenced => View {
                me: self.me.clone(),
                members: self.last_live.clone().unwrap_or(live),
                holding: false,
            },
            // Never registered: alone, i.e. every unit (see docs/cluster.md).
            Lease::FailStatic => View {
                me: self.me.clone(),
                members: self
                    .last_live
                    .clone()
                    .unwrap_or_else(|| vec![self.me.clone()]),
                holding: true,
            },
        };
        metrics::gauge!("sitewatch_cluster_members").set(self.members.len() as f64);
        metrics::gauge!("sitewatch_cluster_lease_ok").set(if state == Lease::Live {
            1.0
        } else {
            0.0
        });
        let Some(before) = self.publisher.publish(view) else {
            return;
        };
        let after = self.publisher.current();
        let owned = |v: &View| -> BTreeSet<&str> {
            if v.holding {
                owned_by(&self.units, &v.members, &v.me)
                    .into_iter()
                    .collect()
            } else {
                BTreeSet::new()
            }
        };
        let (was, is) = (owned(&before), owned(&after));
        metrics::gauge!("sitewatch_cluster_owned_units").set(is.len() as f64);
        let gained: Vec<&str> = is.difference(&was).copied().collect();
        let released: Vec<&str> = was.difference(&is).copied().collect();
        report("gained", &gained, is.len(), after.members.len());
        report("released", &released, is.len(), after.members.len());
    }

    fn log_transition(&self, to: Lease, now: Instant) {
        let since = self.fence.since_renewal(now).as_secs_f64();
        match (self.state, to) {
            (Lease::Live, Lease::Fenced) => tracing::warn!(
                member = %self.me,
                since_renewal_s = since,
                "cluster fencing: the etcd lease was not renewed in time; releasing every unit \
                 now, before etcd expires the lease and the other members take them"
            ),
            (_, Lease::FailStatic) => tracing::warn!(
                member = %self.me,
                since_renewal_s = since,
                "cluster fail-static: etcd unreachable for too long; polling the last known \
                 share again so the site is not left unwatched (units may be polled twice \
                 until etcd is back)"
            ),
            (_, Lease::Live) => tracing::info!(member = %self.me, "cluster lease live"),
            _ => {}
        }
    }
}

/// Counts and logs one kind of ownership change (`gained`, `released`), when there is one.
fn report(change: &'static str, units: &[&str], owned: usize, members: usize) {
    if units.is_empty() {
        return;
    }
    metrics::counter!("sitewatch_cluster_ownership_changes_total", "change" => change)
        .increment(units.len() as u64);
    tracing::info!(
        count = units.len(),
        owned,
        members,
        units = ?&units[..units.len().min(LOG_UNITS)],
        "cluster units {change}"
    );
}

/// The member's lock; a panic while it was held leaves a usable state (plain data).
pub(super) fn lock(m: &Mutex<Member>) -> std::sync::MutexGuard<'_, Member> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ownership::channel;

    #[test]
    fn the_view_follows_members_and_the_lease() {
        let cfg: ClusterConfig = toml::from_str("etcd = [\"http://127.0.0.1:2379\"]").unwrap();
        let units: Vec<String> = (0..30).map(|i| format!("snmp:t{i}")).collect();
        let (publisher, view) = channel();
        let ownership = |u: &str| view.borrow().owns(u);
        let mut m = Member::new(&cfg, "a".into(), units.clone(), publisher);
        m.set_members(["a", "b"].map(String::from).into());
        // Listed but not renewed yet: fenced, owns nothing.
        assert!(units.iter().all(|u| !ownership(u)));
        m.renewed(Instant::now());
        m.refresh();
        let two: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let mine = owned_by(&units, &two, "a");
        assert!(!mine.is_empty() && mine.len() < units.len());
        assert!(units
            .iter()
            .all(|u| ownership(u) == mine.contains(&u.as_str())));
        // b leaves: a owns everything.
        m.member_deleted("b");
        assert!(units.iter().all(|u| ownership(u)));
        // The lease is gone: nothing, at once.
        m.lost_lease();
        assert!(units.iter().all(|u| !ownership(u)));
    }
}
