//! The running graph, built from one config file: sources → rules stage → every sink and
//! the alert router. It owns start-up order, shutdown and rule reloads; `run`, `once` and
//! `check` share it, so what `check` accepts is exactly what `run` starts.
//!
//! ```text
//! sources (registry::build_sources) ──Batch──> rules stage ──copy per sink──> sinks (registry::build_sinks)
//!                                               └──Event──> notifier (alert router)
//! ```
//!
//! Start-up: sinks are opened first (a bad spool directory stops start-up before anything is
//! collected), then sources are opened (secrets, the trap port), then tasks start and the
//! service reports ready. Shutdown runs the other way: sources stop and hand over what they
//! hold; the rules stage drains and saves its state; the notifier gets its grace period; the
//! sinks flush (bounded by [`SINK_FLUSH_DEADLINE`], after which they are told to stop and
//! what they could not store stays un-acknowledged, or in their spool).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::collect::{BoxError, Source, SourceContext, SourceOptions};
use crate::config::{ConfigError, LoadedConfig, LogFormat};
use crate::global_tags::GlobalTags;
use crate::model::{Event, Sample};
use crate::notify::Notifier;
use crate::pipeline::{SinkSenders, COLLECT_CHANNEL_CAPACITY, SINK_CHANNEL_CAPACITY};
use crate::registry::{build_sinks, build_sources};
use crate::rules::{self, Engine, RuleSet};
use crate::sink::Sink;
use crate::telemetry;

/// The rules stage ticks every second; this long without a tick means it is stuck.
const STAGE_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

/// How long sinks may take to flush at shutdown before they are told to stop.
pub const SINK_FLUSH_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {message}")]
    Incomplete {
        path: PathBuf,
        message: &'static str,
    },
    #[error("{stage}: {source}")]
    Stage {
        stage: String,
        #[source]
        source: BoxError,
    },
    #[error("a collector failed (see the log above); buffered data was flushed")]
    SourceFailed,
}

fn stage(name: impl Into<String>) -> impl FnOnce(BoxError) -> TopologyError {
    let stage = name.into();
    move |source| TopologyError::Stage { stage, source }
}

/// Everything the config describes, validated and built but not started.
pub struct Topology {
    pub cfg: LoadedConfig,
    pub rules: RuleSet,
    sources: Vec<Box<dyn Source>>,
    sinks: Vec<Box<dyn Sink>>,
    notifier: Notifier,
    global_tags: GlobalTags,
    api: crate::api::Api,
    acks: rules::acknowledge::AckReceiver,
    /// `[cluster]`: started before the collectors, stopped (lease revoked) after them.
    cluster: Option<crate::cluster::Plan>,
}

/// Every unit the config has for a cluster to share: one per SNMP target (`snmp:<name>`),
/// one per Modbus device (`modbus:<name>`), one per MQTT partition (`mqtt:<name>`).
pub fn cluster_units(config: &crate::config::Config) -> Vec<String> {
    use crate::cluster::assignment::{modbus_unit, snmp_unit};
    let snmp = config
        .snmp
        .iter()
        .flat_map(|s| &s.targets)
        .map(|t| snmp_unit(&t.name));
    let modbus = config
        .modbus
        .iter()
        .flat_map(|m| &m.devices)
        .map(|d| modbus_unit(d.name.get_ref()));
    let mqtt = config
        .mqtt
        .iter()
        .flat_map(crate::collect::mqtt::partition_units);
    snmp.chain(modbus).chain(mqtt).collect()
}

/// `[cluster]` validated, and the collectors' options given its [`crate::cluster::Ownership`].
fn plan_cluster(
    cfg: &LoadedConfig,
    mut opts: SourceOptions,
) -> Result<(SourceOptions, Option<crate::cluster::Plan>), ConfigError> {
    let Some(cc) = &cfg.config.cluster else {
        return Ok((opts, None));
    };
    if let Some(shard) = opts.shard {
        return Err(cfg.invalid(format!(
            "--shard {shard} and [cluster] are both set: a cluster shares the units by itself;              drop --shard (static shards) or the [cluster] table"
        )));
    }
    let units = cluster_units(&cfg.config);
    let (plan, ownership) =
        crate::cluster::Plan::new(cc, units).map_err(|e| cfg.invalid(e.to_string()))?;
    opts.cluster = Some(ownership);
    Ok((opts, Some(plan)))
}

/// Rule files named by `[rules]`, loaded and validated.
pub fn load_rules(cfg: &LoadedConfig) -> Result<RuleSet, rules::RulesError> {
    let rule_files = match &cfg.config.rules {
        Some(rc) => rc.resolve(&cfg.base_dir)?,
        None => Vec::new(),
    };
    rules::load_rule_files(&rule_files)
}

impl Topology {
    /// Loads the config and builds every stage; any error names the file and the table.
    pub fn build(path: &Path, opts: SourceOptions) -> Result<Topology, TopologyError> {
        let cfg = LoadedConfig::load(path)?;
        let (opts, cluster) = plan_cluster(&cfg, opts)?;
        let sources = build_sources(&cfg, opts).map_err(stage("collectors"))?;
        if sources.is_empty() {
            return Err(TopologyError::Incomplete {
                path: cfg.path.clone(),
                message: "no collector configured: add an [mqtt], [snmp] or [modbus] table",
            });
        }
        let sinks = build_sinks(&cfg).map_err(stage("sinks"))?;
        if sinks.is_empty() {
            return Err(TopologyError::Incomplete {
                path: cfg.path.clone(),
                message: "no sink configured: add an [influx] or [remote_write] table",
            });
        }
        let notifier = match &cfg.config.notify {
            Some(n) => {
                n.validate()
                    .map_err(|e| cfg.invalid(format!("[notify]: {e}")))?;
                Notifier::new(n).map_err(|e| stage("[notify]")(e.into()))?
            }
            None => Notifier::new(&Default::default()).map_err(|e| stage("[notify]")(e.into()))?,
        };
        let rules = load_rules(&cfg).map_err(|e| stage("rules")(e.into()))?;
        let global_tags = GlobalTags::from_service(&cfg.config.service)
            .map_err(|e| cfg.invalid(e.to_string()))?;
        let (acks_tx, acks) = mpsc::channel(rules::acknowledge::ACK_CHANNEL_CAPACITY);
        let silences_file = cfg.resolve_writable(
            cfg.config
                .api
                .as_ref()
                .and_then(|a| a.silences_file.as_deref())
                .unwrap_or(Path::new(crate::api::silence_store::DEFAULT_FILE)),
        );
        let silences = crate::api::silence_store::SilenceStore::load(
            silences_file,
            rules::live_silences::LiveSilences::default(),
        )
        .map_err(|e| stage("[api] silences_file")(e.into()))?;
        let api = crate::api::Api::new(
            cfg.config.api.as_ref(),
            Some(acks_tx),
            std::sync::Arc::new(silences),
        )
        .map_err(|e| stage("[api]")(e.into()))?;
        Ok(Topology {
            cfg,
            rules,
            sources,
            sinks,
            notifier,
            global_tags,
            api,
            acks,
            cluster,
        })
    }

    /// What `sitewatch check` prints before `<file>: OK`: one line per stage, then warnings.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.sources {
            out.push(format!("{}: {}", s.name(), s.describe()));
        }
        for s in &self.sinks {
            out.push(format!("{}: {}", s.name(), s.describe()));
        }
        if let Some(c) = &self.cluster {
            out.push(format!("cluster: {}", c.describe()));
        }
        if !self.global_tags.is_empty() {
            out.push(format!("global tags: {}", self.global_tags));
        }
        out.push(format!("rules: {}", self.rules.len()));
        if self.cfg.config.notify.is_some() {
            out.push(format!(
                "notify: {}",
                self.notifier.describe_receivers().join(", ")
            ));
        }
        for s in &self.sources {
            for w in s.check_warnings() {
                out.push(format!("warning: {w}"));
            }
        }
        if self.cluster.is_some() {
            for w in crate::cluster::Plan::warnings(&self.cfg.config) {
                out.push(format!("warning: {w}"));
            }
        }
        for w in self.notifier.check_warnings() {
            out.push(format!("warning: {w}"));
        }
        let produced =
            crate::check::unmatched::produced(self.sources.iter().map(|s| s.measurements()));
        for w in crate::check::unmatched::warnings(produced.as_ref(), &self.rules) {
            out.push(format!("warning: {w}"));
        }
        let acking = self.sources.iter().any(|s| s.acknowledges());
        for s in &self.sinks {
            for w in s.check_warnings(acking) {
                out.push(format!("warning: {w}"));
            }
        }
        out
    }

    /// One collection cycle: every source once, then the rules over the result.
    pub async fn once(
        mut self,
        listen_for: Duration,
    ) -> Result<(Vec<Sample>, Vec<Event>), TopologyError> {
        let mut samples = Vec::new();
        for s in &mut self.sources {
            let name = s.name();
            samples.extend(
                s.collect_once(listen_for)
                    .await
                    .map_err(stage(format!("{name} collection")))?,
            );
        }
        self.global_tags.apply(&mut samples);
        let mut engine = Engine::new(self.rules);
        let events = rules::stage::evaluate_batch(&mut engine, &samples);
        Ok((samples, events))
    }

    /// Runs until `shutdown` resolves (SIGINT/SIGTERM in the binary) or a source fails.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), TopologyError> {
        let Topology {
            cfg,
            rules,
            sources,
            sinks,
            notifier,
            global_tags,
            api,
            acks: acks_rx,
            cluster,
        } = self;
        let service = &cfg.config.service;
        telemetry::init_logging(&service.log_level, service.log_format == LogFormat::Json)
            .map_err(|e| stage("logging")(e.into()))?;
        crate::tls::log_deferred_warnings();
        let handle = telemetry::init_metrics().map_err(|e| stage("metrics")(e.into()))?;
        let health = telemetry::Health::new(crate::status::ReadyPolicy {
            sink_grace: service.ready_grace,
        });
        let endpoint_stop = CancellationToken::new();
        let silences = api.silences.clone();
        tokio::spawn(silences.clone().maintain(endpoint_stop.clone()));
        let endpoint = telemetry::serve(
            service.listen,
            handle,
            health.clone(),
            std::sync::Arc::new(api),
            endpoint_stop.clone(),
        )
        .await
        .map_err(|e| stage("[service] listen")(e.into()))?;

        // Sinks first: a bad or busy spool directory stops start-up before anything is taken.
        let mut senders = SinkSenders::default();
        let sinks_stop = CancellationToken::new();
        let mut sink_tasks = tokio::task::JoinSet::new();
        let mut sink_alive = Vec::with_capacity(sinks.len());
        let mut opened = Vec::with_capacity(sinks.len());
        for mut sink in sinks {
            let name = sink.name();
            sink.open().await.map_err(stage(format!("[{name}]")))?;
            opened.push(sink);
        }
        for sink in opened {
            let inputs = senders.add(sink.name());
            sink_alive.push(sink_tasks.spawn(sink.run(inputs, sinks_stop.clone())));
        }

        let mut started_sources = Vec::with_capacity(sources.len());
        for mut source in sources {
            let name = source.name();
            source.open().await.map_err(stage(format!("[{name}]")))?;
            started_sources.push(source);
        }

        // Before the collectors, so they find their units owned as soon as etcd answers.
        let cluster_stop = CancellationToken::new();
        if cluster.is_some() {
            for w in crate::cluster::Plan::warnings(&cfg.config) {
                tracing::warn!("{w}");
            }
        }
        // The rules stage's end of the handover: rule state moves with the units.
        let (unit_port, unit_link) = match cluster.is_some() {
            true => {
                let (port, link) = rules::handover::link();
                (Some(port), Some(link))
            }
            false => (None, None),
        };
        let cluster_mode = cluster.is_some();
        let cluster_task = cluster.map(|c| c.start(cluster_stop.clone(), unit_port));

        let collectors_stop = CancellationToken::new();
        let (collect_tx, mut collect_rx) = mpsc::channel(COLLECT_CHANNEL_CAPACITY);
        // Global tags: one hop between every collector and the rules stage. Capacity 1, so
        // the backpressure a stalled sink puts on collectors stays what it is without them.
        let relay_task = (!global_tags.is_empty()).then(|| {
            let (relay_tx, relay_rx) = mpsc::channel(1);
            let from_sources = std::mem::replace(&mut collect_rx, relay_rx);
            tokio::spawn(crate::global_tags::relay(
                global_tags,
                from_sources,
                relay_tx,
            ))
        });
        let (alerts_tx, alerts_rx) = mpsc::channel(SINK_CHANNEL_CAPACITY);
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let notify_stop = CancellationToken::new();
        let rules_stop = CancellationToken::new();
        // Escalation steps are history too: the router writes them to every sink's events.
        let notifier = notifier.with_history(senders.event_senders());
        let notify_task = tokio::spawn(notifier.run(alerts_rx, notify_stop.clone()));
        let rules_len = rules.len();
        crate::status::set_rules(crate::status::RulesStatus {
            rules: rules_len,
            last_reload_ok: true,
            last_reload_error: None,
        });
        let rules_task = tokio::spawn(rules::stage::run_with_reload(
            {
                // The state file is written: under $STATE_DIRECTORY when systemd runs the service.
                // In a cluster the units' state lives in etcd checkpoints: a local file would
                // bring back state of units another member owns now.
                let mut engine = rules::reload::prepare_engine(
                    rules,
                    cfg.config.rules.as_ref(),
                    &cfg.state_dir,
                    !cluster_mode,
                );
                engine.share_silences(silences.live());
                engine
            },
            collect_rx,
            senders,
            Some(alerts_tx),
            rules::stage::StageInputs {
                reload: reload_rx,
                acks: acks_rx,
                units: unit_link,
            },
            rules_stop.clone(),
        ));
        let watch_task = tokio::spawn(rules::reload::watch_rule_files(
            cfg.config.rules.clone().unwrap_or_default(),
            cfg.base_dir.clone(),
            reload_tx.clone(),
            collectors_stop.clone(),
        ));
        let reload_task = tokio::spawn(reload_rules_on_sighup(
            cfg.path.clone(),
            reload_tx,
            collectors_stop.clone(),
        ));

        // A source that cannot go on (unreadable secret or certificate) stops the service with
        // an error, so systemd restarts it and the operator sees it, instead of a half-working
        // process that silently collects nothing from that source.
        let failed = CancellationToken::new();
        let source_names: Vec<&'static str> = started_sources.iter().map(|s| s.name()).collect();
        let mut source_tasks = tokio::task::JoinSet::new();
        for source in started_sources {
            let ctx = SourceContext {
                tx: collect_tx.clone(),
                stop: collectors_stop.clone(),
            };
            let failed = failed.clone();
            source_tasks.spawn(async move {
                let name = source.name();
                if let Err(e) = source.run(ctx).await {
                    tracing::error!(source = name, error = %e, "collector stopped; shutting down");
                    failed.cancel();
                }
            });
        }
        // Only sources hold senders now: when they stop, the rules stage sees the channel
        // close, forwards what it has, and the sinks flush and return.
        drop(collect_tx);
        health.set_ready(true);
        tracing::info!(config = %cfg.path.display(), "sitewatch running");
        crate::service_notify::ready(&format!(
            "running: collectors {}, {} sink(s), {rules_len} rule(s)",
            source_names.join(", "),
            sink_alive.len()
        ));

        // The watchdog is fed while the rules stage, every sink and the metrics endpoint
        // still run (and this task is scheduled), and the rules stage keeps ticking (a stage
        // stuck in a loop or on a send that never returns stops ticking): see
        // docs/packaging.md.
        let alive = || {
            crate::rules::stage::since_last_tick().is_none_or(|d| d < STAGE_STUCK_AFTER)
                && !rules_task.is_finished()
                && !endpoint.is_finished()
                && sink_alive.iter().all(|s| !s.is_finished())
        };
        tokio::select! {
            _ = shutdown => {}
            _ = failed.cancelled() => {}
            _ = crate::service_notify::watchdog(alive) => {}
        }
        crate::service_notify::stopping();
        tracing::info!("shutting down: stopping collectors, flushing buffered data");
        health.set_ready(false);
        collectors_stop.cancel();
        while source_tasks.join_next().await.is_some() {}
        // The collectors are stopped: leave the cluster, so the others take over at once.
        cluster_stop.cancel();
        if let Some(c) = cluster_task {
            let _ = c.await;
        }
        if let Some(relay) = relay_task {
            let _ = relay.await;
        }
        let _ = reload_task.await;
        let _ = watch_task.await;
        let _ = rules_task.await;
        // The rules stage has handed every event over; give receivers their grace period.
        notify_stop.cancel();
        let _ = notify_task.await;
        // Sinks finish on their own once their inputs close; the token bounds a stuck server.
        let all_flushed = async { while sink_tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SINK_FLUSH_DEADLINE, all_flushed)
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_s = SINK_FLUSH_DEADLINE.as_secs(),
                "sink flush did not finish in time; forcing the sinks to stop"
            );
            sinks_stop.cancel();
            while sink_tasks.join_next().await.is_some() {}
        }
        endpoint_stop.cancel();
        let _ = endpoint.await;
        tracing::info!("sitewatch stopped");
        if failed.is_cancelled() {
            return Err(TopologyError::SourceFailed);
        }
        Ok(())
    }
}

/// Reloads rule files on SIGHUP. An invalid file is logged with file:line and the running
/// rules stay in force.
async fn reload_rules_on_sighup(
    config_path: PathBuf,
    reload_tx: mpsc::Sender<RuleSet>,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; rule reload disabled");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            crate::service_notify::reloading();
            let loaded = LoadedConfig::load(&config_path)
                .map_err(|e| e.to_string())
                .and_then(|cfg| load_rules(&cfg).map_err(|e| e.to_string()));
            let outcome = match &loaded {
                Ok(set) => format!("running; SIGHUP reload: {} rules", set.len()),
                Err(_) => "running; SIGHUP reload failed, previous rules in force (see log)".into(),
            };
            let published =
                rules::reload::publish_reload(rules::reload::Trigger::Sighup, loaded, &reload_tx)
                    .await;
            // READY=1 ends the reload either way: a broken file leaves the old rules running.
            crate::service_notify::ready(&outcome);
            if !published {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (config_path, reload_tx);
        stop.cancelled().await;
    }
}
