//! The SNMP collector (poller and trap listener) as a [`Source`]: built from `[snmp]`.

use std::time::Duration;

use async_trait::async_trait;

use crate::collect::shard::retain_owned;
use crate::collect::{BoxError, Source, SourceContext, SourceOptions};
use crate::config::LoadedConfig;
use crate::model::Sample;

use super::config::SnmpConfig;
use super::poller::{poll_once, run_with_traps};
use super::profile::ProfileSet;
use super::trap::TrapListener;

/// `[snmp]`, when configured: profiles loaded from `profiles_dir` and every target checked
/// against them.
pub fn source(
    cfg: &LoadedConfig,
    opts: SourceOptions,
) -> Result<Option<Box<dyn Source>>, BoxError> {
    let Some(snmp) = &cfg.config.snmp else {
        return Ok(None);
    };
    let dir = crate::paths::find_mappings("snmp", &snmp.profiles_dir, &cfg.base_dir)
        .map_err(|e| cfg.invalid(format!("[snmp] profiles_dir: {e}")))?;
    let profiles = ProfileSet::load_dir(&dir)?;
    snmp.validate(&profiles)
        .map_err(|e| cfg.invalid(format!("[snmp]: {e}")))?;
    Ok(Some(Box::new(SnmpSource {
        cfg: snmp.clone(),
        profiles,
        opts,
        traps: None,
    })))
}

pub struct SnmpSource {
    cfg: SnmpConfig,
    profiles: ProfileSet,
    opts: SourceOptions,
    traps: Option<TrapListener>,
}

#[async_trait]
impl Source for SnmpSource {
    fn name(&self) -> &'static str {
        "snmp"
    }

    fn describe(&self) -> String {
        format!(
            "{} target(s), {} profile(s){}",
            self.cfg.targets.len(),
            self.profiles.len(),
            if self.cfg.traps.is_some() {
                ", trap listener"
            } else {
                ""
            }
        )
    }

    /// Any target with no `profiles` list may be detected as any loaded profile, so all of
    /// them count then; otherwise only the listed ones. Plus `snmp_poll` and the trap rows.
    fn measurements(&self) -> Option<Vec<String>> {
        let detects = self.cfg.targets.iter().any(|t| t.profiles.is_empty());
        let mut out = vec![super::POLL_MEASUREMENT.to_string()];
        for p in self.profiles.iter() {
            if detects
                || self
                    .cfg
                    .targets
                    .iter()
                    .any(|t| t.profiles.contains(&p.name))
            {
                let scalars = p.scalars.iter().map(|s| &s.measurement);
                let tables = p.tables.iter().map(|t| &t.measurement);
                out.extend(scalars.chain(tables).map(|m| m.to_string()));
            }
        }
        if let Some(t) = &self.cfg.traps {
            out.push(t.measurement.clone());
        }
        Some(out)
    }

    async fn open(&mut self) -> Result<(), BoxError> {
        // Bound before polling and before the shard filter (the trap decoder maps source
        // addresses to all configured devices): a taken or privileged port stops start-up
        // instead of silently losing the trap path. With --shard only shard 1 listens; in
        // cluster mode every member listens and keeps the traps of the devices it owns.
        let listens = self.opts.shard.is_none_or(|s| s.index() == 1);
        if let (Some(tc), true) = (&self.cfg.traps, listens) {
            let listener = TrapListener::bind(tc, &self.cfg.targets)
                .await
                .map_err(|e| format!("[snmp.traps]: {e}"))?;
            self.traps = Some(listener);
        }
        if let Some(shard) = self.opts.shard {
            let skipped = retain_owned(&mut self.cfg.targets, shard, |t| t.name.as_str());
            tracing::info!(%shard, polled = self.cfg.targets.len(), left_to_other_shards = skipped, "SNMP shard");
        }
        Ok(())
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError> {
        let SnmpSource {
            cfg,
            profiles,
            traps,
            opts,
        } = *self;
        run_with_traps(cfg, profiles, traps, opts.cluster, ctx.tx, ctx.stop).await;
        Ok(())
    }

    async fn collect_once(&mut self, _listen_for: Duration) -> Result<Vec<Sample>, BoxError> {
        Ok(poll_once(&self.cfg, &self.profiles).await)
    }
}
