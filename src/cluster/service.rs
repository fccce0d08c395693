//! The running member: the etcd session ([`super::membership`]) and the fence clock, which
//! looks at the [`super::fencing::Fence`] between etcd events, both feeding one [`Member`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::ClusterConfig;
use super::member::{lock, Member};
use super::session::SessionSlot;

/// How often the fence is looked at between etcd events. Fencing has one renewal period
/// (a third of `failover_after`, at least 1 s) of margin, so 100 ms is plenty.
const FENCE_CHECK: Duration = Duration::from_millis(100);

/// Runs the member until `stop`: the etcd session ([`super::membership::run`]) and the
/// fence clock. At `stop` the lease is revoked, so the others take the units at once.
pub async fn run(
    cfg: ClusterConfig,
    member: Member,
    session: SessionSlot,
    stop: CancellationToken,
) {
    let member = Arc::new(Mutex::new(member));
    let clock = {
        let (member, stop) = (member.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FENCE_CHECK);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => lock(&member).refresh(),
                }
            }
        })
    };
    super::membership::run(&cfg, &member, &session, &stop).await;
    let _ = clock.await;
}
