//! The etcd conversation: a lease of `failover_after`, renewed every third of it; this
//! member's key `<prefix>/members/<name>` attached to it; a watch on `<prefix>/members/`.
//! Every renewal etcd confirms and every member joining or leaving goes to [`Member`].
//!
//! A session ends on any error (etcd unreachable, the lease gone, a renewal unanswered for
//! two periods) and a new one starts after a pause, with a new lease; meanwhile the fence
//! clock ([`super::fencing`]) decides, from the last confirmed renewal alone, when the units
//! are released. etcd drops a dead member's key when its lease expires; the watch then
//! tells the others, which is what moves its units.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use tokio_util::sync::CancellationToken;

use super::config::ClusterConfig;
use super::fencing::keep_alive_period;
use super::member::{lock, Member};
use super::session::{Session, SessionSlot};

/// Pause between a failed session and the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("etcd {endpoints}: {what}: {source}")]
    Etcd {
        endpoints: String,
        what: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {endpoints}: {what}: no answer within {after:?}")]
    Timeout {
        endpoints: String,
        what: &'static str,
        after: Duration,
    },
    #[error("etcd {endpoints}: {message}")]
    Config { endpoints: String, message: String },
    #[error("etcd {endpoints}: the lease expired (etcd did not see a renewal in time); registering again with a new lease")]
    LeaseGone { endpoints: String },
    #[error("etcd {endpoints}: the member name {name:?} is registered under another lease ({lease:x}): another member has the same [cluster] name, or this member's previous run crashed and its lease expires within failover_after; waiting (as a standby) until that key is gone")]
    NameTaken {
        endpoints: String,
        name: String,
        lease: i64,
    },
    #[error("etcd {endpoints}: the {what} stream closed")]
    Closed {
        endpoints: String,
        what: &'static str,
    },
}

/// Connects to `cfg.etcd` within `timeout`.
pub async fn connect(cfg: &ClusterConfig, timeout: Duration) -> Result<Client, MembershipError> {
    let endpoints = cfg.etcd.join(",");
    let options =
        super::access::connect_options(cfg, timeout).map_err(|e| MembershipError::Config {
            endpoints: endpoints.clone(),
            message: e.to_string(),
        })?;
    bounded(
        &endpoints,
        "connect",
        timeout,
        Client::connect(&cfg.etcd, Some(options)),
    )
    .await
}

impl MembershipError {
    /// What to fix when etcd answered but refused (credentials, permissions, TLS), as
    /// opposed to being unreachable.
    pub fn refusal(&self) -> Option<&'static str> {
        let text = match self {
            MembershipError::Etcd { source, .. } => source.to_string(),
            MembershipError::Config { .. } => {
                return Some("fix [cluster] (see the error), then restart")
            }
            _ => return None,
        };
        if text.contains("authentication failed") || text.contains("invalid user") {
            Some("check [cluster] username and password against the etcd user")
        } else if text.contains("permission denied") {
            Some("grant the etcd user's role read and write on the cluster's prefix (etcdctl role grant-permission --prefix ROLE readwrite PREFIX/)")
        } else if text.contains("certificate") || text.contains("tls") || text.contains("handshake")
        {
            Some("check [cluster.tls]: ca_file must hold the CA that signs etcd's certificate, client_cert/client_key a certificate etcd's --trusted-ca-file accepts")
        } else {
            None
        }
    }
}

/// `fut` within `after`, its error named.
async fn bounded<T>(
    endpoints: &str,
    what: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, MembershipError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(MembershipError::Etcd {
            endpoints: endpoints.to_string(),
            what,
            source,
        }),
        Err(_) => Err(MembershipError::Timeout {
            endpoints: endpoints.to_string(),
            what,
            after,
        }),
    }
}

/// The member name in a key under `members_prefix`.
pub fn member_of<'a>(key: &'a [u8], members_prefix: &str) -> Option<&'a str> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(members_prefix)
        .filter(|n| !n.is_empty())
}

/// Sessions until `stop`; each error is logged once per outage, with what to check.
pub(super) async fn run(
    cfg: &ClusterConfig,
    member: &Mutex<Member>,
    slot: &SessionSlot,
    stop: &CancellationToken,
) {
    let mut failing = false;
    // The lease of the last session, kept across sessions: a session that ends while its
    // lease is still alive (a broken stream) is followed by one that takes the lease up
    // again instead of waiting for it to expire.
    let mut lease = None;
    loop {
        // Not raced against `stop`: the session revokes the lease when it sees `stop`.
        let ended = session(cfg, member, slot, stop, &mut failing, &mut lease).await;
        slot.clear();
        match ended {
            Ok(()) => return,
            Err(e) => {
                match e {
                    MembershipError::LeaseGone { .. } => {
                        lease = None;
                        lock(member).lost_lease();
                    }
                    MembershipError::NameTaken { .. } => lease = None,
                    _ => {}
                }
                if let (MembershipError::NameTaken { .. }, false) = (&e, failing) {
                    tracing::warn!(error = %e, "cluster: not registered");
                    failing = true;
                } else if let (Some(fix), false) = (e.refusal(), failing) {
                    tracing::error!(error = %e, "cluster: etcd refused this member: {fix}; retrying, units are released at the fence deadline");
                    failing = true;
                } else if !failing {
                    tracing::warn!(
                        error = %e,
                        "cluster: lost the etcd session; units are kept until the fence \
                         deadline and released then if etcd stays unreachable (check etcd and \
                         the network to it; [cluster] etcd lists the endpoints)"
                    );
                    failing = true;
                } else {
                    tracing::debug!(error = %e, "cluster: etcd session attempt failed");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
}

/// One lease from grant to loss (or to `stop`, when it is revoked).
async fn session(
    cfg: &ClusterConfig,
    member: &Mutex<Member>,
    slot: &SessionSlot,
    stop: &CancellationToken,
    failing: &mut bool,
    previous: &mut Option<i64>,
) -> Result<(), MembershipError> {
    let endpoints = cfg.etcd.join(",");
    let ep = endpoints.as_str();
    let period = keep_alive_period(cfg.failover_after);
    let prefix = cfg.members_prefix();
    let me = lock(member).me().to_string();
    let key = format!("{prefix}{me}");
    let ttl = i64::try_from(cfg.failover_after.as_secs()).unwrap_or(i64::MAX);
    // Registration, given up at `stop` (a lease granted by then expires on its own).
    let setup = async {
        let mut client = connect(cfg, period).await?;

        let own = bounded(ep, "read own key", period, client.get(key.as_str(), None)).await?;
        let sent = Instant::now();
        let (lease, fresh) = match (own.kvs().first().map(|kv| kv.lease()), *previous) {
            (Some(l), Some(p)) if l == p => (l, false),
            (Some(l), _) => {
                return Err(MembershipError::NameTaken {
                    endpoints: endpoints.clone(),
                    name: me.clone(),
                    lease: l,
                })
            }
            (None, _) => {
                let granted = bounded(ep, "lease grant", period, client.lease_grant(ttl, None));
                (granted.await?.id(), true)
            }
        };
        *previous = Some(lease);
        let value = serde_json::json!({
            "name": me,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
        })
        .to_string();
        bounded(
            ep,
            "register",
            period,
            client.put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        let (keeper, renewals) =
            bounded(ep, "keep-alive", period, client.lease_keep_alive(lease)).await?;
        let listing = bounded(
            ep,
            "list members",
            period,
            client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let revision = listing.header().map_or(0, |h| h.revision());
        let members: BTreeSet<String> = listing
            .kvs()
            .iter()
            .filter_map(|kv| member_of(kv.key(), &prefix).map(str::to_string))
            .collect();
        let watch = bounded(
            ep,
            "watch members",
            period,
            client.watch(
                prefix.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            ),
        )
        .await?;
        Ok::<_, MembershipError>((client, lease, fresh, sent, keeper, renewals, members, watch))
    };
    let (mut client, lease, fresh, sent, mut keeper, mut renewals, members, mut watch) = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        r = setup => r?,
    };
    // Before the view can give units: the handover reads and claims checkpoints with it.
    slot.set(Session {
        client: client.clone(),
        lease,
        member_key: key.clone(),
    });
    {
        let mut m = lock(member);
        // A lease taken up again counts from its first renewal in this session (the tick
        // below sends one at once), not from now.
        if fresh {
            m.renewed(sent);
        }
        m.set_members(members);
    }
    tracing::info!(member = %me, lease = format!("{lease:x}"), ttl_s = ttl, endpoints = ep, "cluster: registered in etcd");
    *failing = false;

    // Send times of renewals not answered yet, oldest first.
    let mut outstanding: VecDeque<Instant> = VecDeque::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                // Revoked, not left to expire: the others take the units now.
                match bounded(ep, "lease revoke", period, client.lease_revoke(lease)).await {
                    Ok(_) => tracing::info!(member = %me, "cluster: left (lease revoked)"),
                    Err(e) => tracing::warn!(error = %e, "cluster: could not revoke the lease; the others take the units when it expires"),
                }
                return Ok(());
            }
            _ = tick.tick() => {
                if outstanding.front().is_some_and(|t| t.elapsed() >= 2 * period) {
                    return Err(MembershipError::Timeout { endpoints, what: "lease renewal", after: 2 * period });
                }
                outstanding.push_back(Instant::now());
                bounded(ep, "lease renewal", period, keeper.keep_alive()).await?;
            }
            r = renewals.message() => match r {
                Ok(Some(resp)) if resp.ttl() > 0 => {
                    if let Some(sent) = outstanding.pop_front() {
                        lock(member).renewed(sent);
                    }
                }
                Ok(Some(_)) => return Err(MembershipError::LeaseGone { endpoints }),
                Ok(None) => return Err(MembershipError::Closed { endpoints, what: "keep-alive" }),
                Err(source) => return Err(MembershipError::Etcd { endpoints, what: "keep-alive", source }),
            },
            w = watch.message() => match w {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        return Err(MembershipError::Closed { endpoints, what: "watch" });
                    }
                    let mut m = lock(member);
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Some(name) = member_of(kv.key(), &prefix) else { continue };
                        match ev.event_type() {
                            // Our name put under another lease: a second member with this
                            // name. Stop renewing; the units go at the fence deadline.
                            EventType::Put if name == me && kv.lease() != lease => {
                                drop(m);
                                return Err(MembershipError::NameTaken { endpoints, name: me, lease: kv.lease() });
                            }
                            EventType::Put => m.member_put(name),
                            EventType::Delete if name == me => {
                                drop(m);
                                return Err(MembershipError::LeaseGone { endpoints });
                            }
                            EventType::Delete => m.member_deleted(name),
                        }
                    }
                }
                Ok(None) => return Err(MembershipError::Closed { endpoints, what: "watch" }),
                Err(source) => return Err(MembershipError::Etcd { endpoints, what: "watch", source }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_come_from_keys_under_the_prefix() {
        let p = "/sitewatch/default/members/";
        assert_eq!(member_of(b"/sitewatch/default/members/a1", p), Some("a1"));
        assert_eq!(member_of(b"/sitewatch/default/members/", p), None);
        assert_eq!(member_of(b"/sitewatch/other/members/a1", p), None);
        assert_eq!(member_of(&[0xff, 0xfe], p), None);
    }
}
