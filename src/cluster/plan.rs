//! Cluster mode as the topology sets it up: validated at build time (so `sitewatch check`
//! catches a bad `[cluster]` without reaching etcd), started by `run` before the collectors.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{ClusterConfig, ClusterConfigError};
use super::member::Member;
use super::ownership::{channel, Ownership, Publisher};
use super::service::run;

pub struct Plan {
    cfg: ClusterConfig,
    me: String,
    units: Vec<String>,
    publisher: Publisher,
}

impl Plan {
    /// The plan and the [`Ownership`] the collectors are built with; `units` are every unit
    /// the config has (`snmp:<target>`, ...), for the owned counts and the log lines.
    pub fn new(
        cfg: &ClusterConfig,
        units: Vec<String>,
    ) -> Result<(Plan, Ownership), ClusterConfigError> {
        cfg.validate()?;
        let me = cfg.member_name()?;
        let (publisher, ownership) = channel();
        let plan = Plan {
            cfg: cfg.clone(),
            me,
            units,
            publisher,
        };
        Ok((plan, ownership))
    }

    /// One line for `sitewatch check`.
    pub fn describe(&self) -> String {
        format!(
            "member {:?} of cluster {:?} (etcd {}, prefix {}, failover_after {:?}), {} unit(s) shared",
            self.me,
            self.cfg.cluster,
            self.cfg.etcd.join(","),
            self.cfg.prefix(),
            self.cfg.failover_after,
            self.units.len()
        )
    }

    /// Starts the member (metrics are registered now, after the recorder is installed).
    pub fn start(self, stop: CancellationToken) -> JoinHandle<()> {
        let member = Member::new(&self.cfg, self.me, self.units, self.publisher);
        tokio::spawn(run(self.cfg, member, stop))
    }
}
