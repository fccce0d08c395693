//! Cluster mode as the topology sets it up: validated at build time (so `sitewatch check`
//! catches a bad `[cluster]` without reaching etcd), started by `run` before the collectors.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{ClusterConfig, ClusterConfigError};
use super::handover::Handover;
use super::member::Member;
use super::ownership::{
    active_channel, channel, ActivePublisher, Ownership, Publisher, ViewReader,
};
use super::service::run;
use super::session::SessionSlot;
use crate::rules::handover::UnitPort;

pub struct Plan {
    cfg: ClusterConfig,
    me: String,
    units: Vec<String>,
    publisher: Publisher,
    view: ViewReader,
    active: ActivePublisher,
}

impl Plan {
    /// The plan and the [`Ownership`] the collectors are built with; `units` are every unit
    /// the config has (`snmp:<target>`, ...), for the owned counts and the log lines.
    pub fn new(
        cfg: &ClusterConfig,
        units: Vec<String>,
    ) -> Result<(Plan, Ownership), ClusterConfigError> {
        cfg.validate()?;
        // TLS files and the password read now: `sitewatch check` names a bad one.
        super::access::check(cfg)?;
        let me = cfg.member_name()?;
        let (publisher, view) = channel();
        let (active, ownership) = active_channel(view.clone(), &units);
        let plan = Plan {
            cfg: cfg.clone(),
            me,
            units,
            publisher,
            view,
            active,
        };
        Ok((plan, ownership))
    }

    /// One line for `sitewatch check`.
    pub fn describe(&self) -> String {
        format!(
            "member {:?} of cluster {:?} (etcd {}{}, prefix {}, failover_after {:?}), {} unit(s) shared",
            self.me,
            self.cfg.cluster,
            self.cfg.etcd.join(","),
            match (self.cfg.uses_tls(), &self.cfg.username) {
                (true, Some(u)) => format!(" over TLS as user {u:?}"),
                (true, None) => " over TLS".to_string(),
                (false, Some(u)) => format!(" as user {u:?}"),
                (false, None) => String::new(),
            },
            self.cfg.prefix(),
            self.cfg.failover_after,
            self.units.len()
        )
    }

    /// What the cluster does not share, for `sitewatch check` and the start-up log.
    pub fn warnings(config: &crate::config::Config) -> Vec<String> {
        config
            .mqtt
            .iter()
            .flat_map(crate::collect::mqtt::cluster_warnings)
            .collect()
    }

    /// Starts the member (metrics are registered now, after the recorder is installed);
    /// `rules` is the rules stage's end of the handover. At `stop` the units' last state is
    /// written first, then the lease is revoked.
    pub fn start(self, stop: CancellationToken, rules: Option<UnitPort>) -> JoinHandle<()> {
        let session = SessionSlot::default();
        let handover = Handover {
            cfg: self.cfg.clone(),
            me: self.me.clone(),
            units: self.units.clone(),
            view: self.view,
            active: self.active,
            session: session.clone(),
            port: rules,
        };
        let leave = CancellationToken::new();
        let handover = {
            let leave = leave.clone();
            tokio::spawn(async move {
                handover.run(stop).await;
                leave.cancel();
            })
        };
        let member = Member::new(&self.cfg, self.me, self.units, self.publisher);
        tokio::spawn(async move {
            run(self.cfg, member, session, leave).await;
            let _ = handover.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_about_what_the_cluster_does_not_share() {
        let parse = |t: &str| crate::config::parse(t, std::path::Path::new("t.toml")).unwrap();
        let cluster = "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n";
        assert!(Plan::warnings(&parse(cluster)).is_empty());
        let mqtt = "[mqtt]\nhost = \"127.0.0.1\"\n[[mqtt.subscription]]\ntopic = \"site/#\"\nformat = \"number\"\nmeasurement = \"m\"\n";
        let w = Plan::warnings(&parse(&format!("{cluster}{mqtt}")));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("no [[mqtt.partition]]") && w[0].contains("docs/cluster.md"));
        let partitioned =
            format!("{cluster}{mqtt}[[mqtt.partition]]\nname = \"a\"\ntopics = [\"site/#\"]\n");
        assert!(Plan::warnings(&parse(&partitioned)).is_empty());
    }
}
