//! The `sitewatch` command line: `run`, `check`, `once`, `probe`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use sitewatch::collect::snmp::config::{AuthProtocol, PrivProtocol, SecurityLevel, SnmpVersion};
use sitewatch::collect::snmp::{ProfileSet, TargetConfig};
use sitewatch::collect::{mqtt, snmp};
use sitewatch::config::Secret;
use sitewatch::config::{LoadedConfig, LogFormat};
use sitewatch::model::Sample;
use sitewatch::notify::Notifier;
use sitewatch::pipeline::{COLLECT_CHANNEL_CAPACITY, SINK_CHANNEL_CAPACITY};
use sitewatch::rules::{self, Engine, RuleSet};
use sitewatch::sink::influx::{encode_sample, InfluxWriter};
use sitewatch::telemetry;
use sitewatch::text::anyhow_error_chain as error_chain;

#[derive(Parser)]
#[command(
    name = "sitewatch",
    version,
    about = "Facility telemetry: SNMP and MQTT in, threshold rules, InfluxDB and alerts out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the service until SIGINT/SIGTERM.
    Run {
        #[arg(long, short, env = "SITEWATCH_CONFIG")]
        config: PathBuf,
        /// Scale-out: poll only the SNMP targets shard INDEX of COUNT owns (rendezvous hash
        /// of the target name), e.g. `--shard 2/3` on the second of three instances sharing
        /// one config. MQTT is split with `[mqtt] share_group` instead.
        #[arg(long, env = "SITEWATCH_SHARD", value_name = "INDEX/COUNT")]
        shard: Option<snmp::Shard>,
    },
    /// Validate the config, profiles and rules; exit 0 when valid, 1 with file:line errors.
    Check {
        #[arg(long, short, env = "SITEWATCH_CONFIG")]
        config: PathBuf,
    },
    /// One collection cycle: print InfluxDB line protocol to stdout instead of writing it.
    Once {
        #[arg(long, short, env = "SITEWATCH_CONFIG")]
        config: PathBuf,
        /// How long to listen to MQTT subscriptions.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        mqtt_duration: Duration,
    },
    /// Read an SNMP device's identity, pick matching profiles and print one poll
    /// (`--record FILE` also saves a walk of the whole agent as `.snmprec`).
    Probe(ProbeArgs),
    /// Ask a running instance whether it is ready (`/ready`) or alive (`/health`): prints the
    /// JSON report; exit 0 when it answers 200, 1 otherwise. For scripts and container
    /// health checks.
    Health {
        /// The endpoint, e.g. http://127.0.0.1:9273/ready (the `[service] listen` address).
        #[arg(long, default_value = "http://127.0.0.1:9273/ready")]
        url: String,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Profile tools: `profile test` decodes a `.snmprec` recording offline.
    Profile {
        #[command(subcommand)]
        cmd: ProfileCommand,
    },
    /// Rule tools: `rules test` replays stored history through the rules.
    Rules {
        #[command(subcommand)]
        cmd: RulesCommand,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sitewatch: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run { config, shard } => run(&config, shard).await,
            Command::Check { config } => check(&config),
            Command::Once {
                config,
                mqtt_duration,
            } => once(&config, mqtt_duration).await,
            Command::Probe(args) => probe(args).await,
            Command::Health { url, timeout } => health(&url, timeout).await,
            Command::Profile {
                cmd: ProfileCommand::Test(args),
            } => profile_test(args).await,
            Command::Rules {
                cmd: RulesCommand::Test(args),
            } => rules_test(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sitewatch: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Everything `check` validates, loaded once so `run` and `once` share it.
struct Loaded {
    cfg: LoadedConfig,
    rules: RuleSet,
    profiles: Option<ProfileSet>,
}

fn load(path: &Path) -> Result<Loaded> {
    let cfg = LoadedConfig::load(path)?;
    let c = &cfg.config;
    let at = |what: &str| format!("{}: {what}", cfg.path.display());
    c.influx.validate().with_context(|| at("[influx]"))?;
    if let Some(m) = &c.mqtt {
        m.validate().with_context(|| at("[mqtt]"))?;
    }
    if let Some(n) = &c.notify {
        n.validate().with_context(|| at("[notify]"))?;
    }
    let rules = load_rules(&cfg)?;
    let profiles = match &c.snmp {
        Some(sc) => {
            let dir = sc.profiles_path(&cfg.base_dir);
            let profiles = ProfileSet::load_dir(&dir)?;
            sc.validate(&profiles).with_context(|| at("[snmp]"))?;
            Some(profiles)
        }
        None => None,
    };
    if cfg.config.mqtt.is_none() && cfg.config.snmp.is_none() {
        bail!(
            "{}: no collector configured: add an [mqtt] or [snmp] table",
            cfg.path.display()
        );
    }
    Ok(Loaded {
        cfg,
        rules,
        profiles,
    })
}

fn load_rules(cfg: &LoadedConfig) -> Result<RuleSet> {
    let rule_files = match &cfg.config.rules {
        Some(rc) => rc.resolve(&cfg.base_dir)?,
        None => Vec::new(),
    };
    Ok(rules::load_rule_files(&rule_files)?)
}

fn check(path: &Path) -> Result<()> {
    let loaded = load(path)?;
    // Secrets are resolved too: a missing token file is a deployment error worth catching here.
    let writer = InfluxWriter::new(&loaded.cfg.config.influx)?;
    let c = &loaded.cfg.config;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: OK", loaded.cfg.path.display())?;
    writeln!(out, "  influx: {}", writer.endpoint())?;
    if let Some(m) = &c.mqtt {
        if let Some(password) = &m.password {
            password.resolve().context("[mqtt] password")?;
        }
        writeln!(out, "  mqtt: {} subscription(s)", m.subscriptions.len())?;
    }
    if let (Some(s), Some(p)) = (&c.snmp, &loaded.profiles) {
        writeln!(
            out,
            "  snmp: {} target(s), {} profile(s)",
            s.targets.len(),
            p.len()
        )?;
    }
    writeln!(out, "  rules: {}", loaded.rules.len())?;
    let influx = &c.influx;
    let qos1 = c
        .mqtt
        .as_ref()
        .is_some_and(|m| m.subscriptions.iter().any(|s| s.qos >= 1));
    if qos1 && influx.spool_dir.is_none() {
        writeln!(
            out,
            "  warning: [influx] has no spool_dir: while InfluxDB is down or hung, MQTT QoS 1 messages wait unacknowledged in memory and a full broker queue drops them; set spool_dir"
        )?;
    }
    if let Some(rate) = influx.expected_rate {
        let plan =
            sitewatch::sink::influx::capacity::OutagePlan::new(influx, rate, influx.hold_outage);
        for w in plan.warnings() {
            writeln!(out, "  warning: {w}")?;
        }
        if qos1 {
            writeln!(out, "  {}", plan.broker_advice())?;
        }
    }
    if let Some(n) = &c.notify {
        let notifier = Notifier::new(n)?;
        writeln!(out, "  notify: {}", notifier.receiver_names().join(", "))?;
    }
    Ok(())
}

async fn run(path: &Path, shard: Option<snmp::Shard>) -> Result<()> {
    let Loaded {
        cfg,
        rules,
        profiles,
    } = load(path)?;
    let service = &cfg.config.service;
    telemetry::init_logging(&service.log_level, service.log_format == LogFormat::Json)?;
    let handle = telemetry::init_metrics()?;
    sitewatch::notify::describe_metrics();
    let health = telemetry::Health::new(sitewatch::status::ReadyPolicy {
        sink_grace: service.ready_grace,
    });

    let collectors_stop = CancellationToken::new();
    let writer_stop = CancellationToken::new();
    let endpoint_stop = CancellationToken::new();
    let endpoint = telemetry::serve(
        service.listen,
        handle,
        health.clone(),
        endpoint_stop.clone(),
    )
    .await?;

    // Opened here so a bad or busy spool_dir stops start-up; relative to the config file.
    let writer = InfluxWriter::new(&cfg.config.influx)?.open_spool(&cfg.base_dir)?;
    let events_measurement: Arc<str> = cfg.config.influx.events_measurement.as_str().into();
    let (collect_tx, collect_rx) = mpsc::channel(COLLECT_CHANNEL_CAPACITY);
    let (series_tx, series_rx) = mpsc::channel(SINK_CHANNEL_CAPACITY);
    let (events_tx, events_rx) = mpsc::channel(SINK_CHANNEL_CAPACITY);

    let notifier = match &cfg.config.notify {
        Some(n) => Notifier::new(n)?,
        None => Notifier::new(&Default::default())?,
    };
    let (alerts_tx, alerts_rx) = mpsc::channel(SINK_CHANNEL_CAPACITY);
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let notify_stop = CancellationToken::new();
    let rules_stop = CancellationToken::new();

    let writer_task = tokio::spawn(writer.run(series_rx, events_rx, writer_stop.clone()));
    let notify_task = tokio::spawn(notifier.run(alerts_rx, notify_stop.clone()));
    sitewatch::status::set_rules(sitewatch::status::RulesStatus {
        rules: rules.len(),
        last_reload_ok: true,
        last_reload_error: None,
    });
    let rules_task = tokio::spawn(rules::stage::run_with_reload(
        rules::reload::prepare_engine(rules, cfg.config.rules.as_ref(), &cfg.base_dir),
        collect_rx,
        series_tx,
        events_tx,
        Some(alerts_tx),
        events_measurement,
        reload_rx,
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

    let mut collectors = tokio::task::JoinSet::new();
    // A collector that cannot go on (unreadable secret or certificate) stops the service with
    // an error, so systemd restarts it and the operator sees it, instead of a half-working
    // process that silently collects nothing from that source.
    let fatal = CancellationToken::new();
    if let Some(mqtt_cfg) = cfg.config.mqtt.clone() {
        let tx = collect_tx.clone();
        let stop = collectors_stop.clone();
        let fatal = fatal.clone();
        collectors.spawn(async move {
            if let Err(e) = mqtt::run(mqtt_cfg, tx, stop).await {
                tracing::error!(error = %e, "MQTT collector stopped; shutting down");
                fatal.cancel();
            }
        });
    }
    if let (Some(mut snmp_cfg), Some(profiles)) = (cfg.config.snmp.clone(), profiles) {
        // Bound here, before polling and before the shard filter (the trap decoder maps source
        // addresses to all configured devices): a taken or privileged port stops start-up
        // instead of silently losing the trap path. With --shard only shard 1 listens.
        let traps = match &snmp_cfg.traps {
            Some(tc) if shard.is_none_or(|s| s.index() == 1) => Some(
                snmp::TrapListener::bind(tc, &snmp_cfg.targets)
                    .await
                    .context("[snmp.traps]")?,
            ),
            _ => None,
        };
        if let Some(shard) = shard {
            let skipped = snmp::shard::retain_owned(&mut snmp_cfg.targets, shard);
            tracing::info!(%shard, polled = snmp_cfg.targets.len(), left_to_other_shards = skipped, "SNMP shard");
        }
        let tx = collect_tx.clone();
        let stop = collectors_stop.clone();
        collectors.spawn(async move {
            snmp::run_with_traps(snmp_cfg, profiles, traps, tx, stop).await;
        });
    }
    // Only collectors hold senders now: when they stop, the rules stage sees the channel
    // close, forwards what it has, and the writer flushes and returns.
    drop(collect_tx);
    health.set_ready(true);
    tracing::info!(config = %cfg.path.display(), "sitewatch running");

    tokio::select! {
        _ = wait_for_shutdown_signal() => {}
        _ = fatal.cancelled() => {}
    }
    tracing::info!("shutting down: stopping collectors, flushing buffered data");
    health.set_ready(false);
    collectors_stop.cancel();
    while collectors.join_next().await.is_some() {}
    let _ = reload_task.await;
    let _ = watch_task.await;
    let _ = rules_task.await;
    // The rules stage has handed every event over; give receivers their grace period.
    notify_stop.cancel();
    let _ = notify_task.await;
    // The writer finishes on its own once its inputs close; the token bounds a stuck server.
    let flush_deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(flush_deadline);
    let mut writer_task = writer_task;
    tokio::select! {
        _ = &mut writer_task => {}
        _ = &mut flush_deadline => {
            tracing::warn!("InfluxDB flush did not finish in 30 s; forcing the writer to stop");
            writer_stop.cancel();
            let _ = writer_task.await;
        }
    }
    endpoint_stop.cancel();
    let _ = endpoint.await;
    tracing::info!("sitewatch stopped");
    if fatal.is_cancelled() {
        bail!("a collector failed (see the log above); buffered data was flushed");
    }
    Ok(())
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
            let loaded = LoadedConfig::load(&config_path)
                .map_err(anyhow::Error::from)
                .and_then(|cfg| load_rules(&cfg));
            let loaded = loaded.map_err(|e| format!("{e:#}"));
            if !rules::reload::publish_reload(rules::reload::Trigger::Sighup, loaded, &reload_tx)
                .await
            {
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

async fn wait_for_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops sitewatch");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn once(path: &Path, mqtt_duration: Duration) -> Result<()> {
    let Loaded {
        cfg,
        rules,
        profiles,
    } = load(path)?;
    let service = &cfg.config.service;
    telemetry::init_logging(&service.log_level, service.log_format == LogFormat::Json)?;
    let mut samples: Vec<Sample> = Vec::new();
    if let (Some(snmp_cfg), Some(profiles)) = (&cfg.config.snmp, &profiles) {
        samples.extend(snmp::poll_once(snmp_cfg, profiles).await);
    }
    if let Some(mqtt_cfg) = &cfg.config.mqtt {
        let got = mqtt::collect_for(mqtt_cfg, mqtt_duration)
            .await
            .context("MQTT collection")?;
        samples.extend(got);
    }
    let mut engine = Engine::new(rules);
    let events = rules::stage::evaluate_batch(&mut engine, &samples);
    let measurement = cfg.config.influx.events_measurement.as_str();
    let mut buf = Vec::with_capacity(samples.len() * 96);
    for s in &samples {
        encode_sample(&mut buf, s);
    }
    for e in &events {
        encode_sample(&mut buf, &e.to_sample(measurement));
    }
    std::io::stdout().lock().write_all(&buf)?;
    tracing::info!(
        samples = samples.len(),
        events = events.len(),
        "one collection cycle done"
    );
    Ok(())
}

async fn health(url: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("building the HTTP client")?;
    let resp = client.get(url).send().await.with_context(|| {
        format!(
            "no answer from {url} (is sitewatch running, and is [service] listen this address?)"
        )
    })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    writeln!(std::io::stdout().lock(), "{body}")?;
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(())
}

/// `sitewatch probe`: onboard a device model.
#[derive(clap::Args)]
struct ProbeArgs {
    /// Device address: HOST or HOST:PORT (UDP, default port 161).
    target: String,
    /// SNMP version: 1, 2c or 3 (3 when --user is given).
    #[arg(long, short = 'v')]
    version: Option<String>,
    /// v1/v2c community; prefer --community-env so it stays out of shell history.
    #[arg(long, short = 'c', conflicts_with = "community_env")]
    community: Option<String>,
    /// Environment variable holding the community.
    #[arg(long)]
    community_env: Option<String>,
    /// v3 user name.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// v3 security level: noAuthNoPriv, authNoPriv or authPriv.
    #[arg(long, short = 'l', default_value = "authPriv")]
    level: String,
    /// v3 auth protocol: MD5, SHA, SHA224, SHA256, SHA384, SHA512.
    #[arg(long, short = 'a', default_value = "SHA")]
    auth_protocol: String,
    /// Environment variable holding the v3 auth password.
    #[arg(long, short = 'A')]
    auth_password_env: Option<String>,
    /// v3 privacy protocol: DES, AES, AES192, AES256.
    #[arg(long, short = 'x', default_value = "AES")]
    priv_protocol: String,
    /// Environment variable holding the v3 privacy password.
    #[arg(long, short = 'X')]
    priv_password_env: Option<String>,
    /// Use this profile instead of auto-detecting by sysObjectID.
    #[arg(long)]
    profile: Option<String>,
    /// Folder of profile files.
    #[arg(long, default_value = "mappings/snmp")]
    profiles_dir: PathBuf,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[arg(long, default_value_t = 1)]
    retries: u32,
    /// Also walk the whole agent and save it to FILE in snmpsim's `.snmprec` format (for a
    /// support request, or `sitewatch profile test`). It holds what the agent answers, not
    /// the community or passwords used to ask.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Decode a `.snmprec` recording offline (no agent, no snmpsim) and print what each
    /// profile would write, with the OID behind each field.
    Test(ProfileTestArgs),
}

/// `sitewatch profile test [PROFILE] FILE.snmprec`
#[derive(clap::Args)]
struct ProfileTestArgs {
    /// A profile to force (default: detect as `run` would), then the recording.
    #[arg(num_args = 1..=2, value_names = ["PROFILE", "FILE"], required = true)]
    args: Vec<String>,
    /// Folder of profile files.
    #[arg(long, default_value = "mappings/snmp")]
    profiles_dir: PathBuf,
    /// The `device` tag to write (default: the file name without extension).
    #[arg(long)]
    device: Option<String>,
}

/// Parses a TOML-spelled enum value ("authPriv", "SHA256") with the config's own rules, so
/// the CLI accepts exactly what the config file does.
fn parse_config_word<T: serde::de::DeserializeOwned>(flag: &str, word: &str) -> Result<T> {
    #[derive(serde::Deserialize)]
    struct Holder<T> {
        v: T,
    }
    let doc = format!("v = {}", toml::Value::String(word.to_string()));
    toml::from_str::<Holder<T>>(&doc)
        .map(|h| h.v)
        .map_err(|e| anyhow::anyhow!("--{flag} {word:?}: {}", e.message().trim()))
}

async fn probe(args: ProbeArgs) -> Result<()> {
    telemetry::init_logging("warn", false)?;
    let profiles = load_profiles(&args.profiles_dir)?;
    let version: SnmpVersion = match (&args.version, &args.user) {
        (Some(v), _) => parse_config_word("version", v)?,
        (None, Some(_)) => SnmpVersion::V3,
        (None, None) => SnmpVersion::V2c,
    };
    let mut target = TargetConfig::v2c(&args.target, &args.target, "");
    target.version = version;
    target.timeout = Some(args.timeout);
    target.retries = Some(args.retries);
    if version == SnmpVersion::V3 {
        let Some(user) = &args.user else {
            bail!(
                "SNMPv3 needs --user (and -A/-X with the names of variables holding the passwords)"
            );
        };
        target.community = None;
        target.user = Some(user.clone());
        let level: SecurityLevel = parse_config_word("level", &args.level)?;
        target.security_level = Some(level);
        if level != SecurityLevel::NoAuthNoPriv {
            let env = args.auth_password_env.clone().context(
                "--level needs an auth password: pass -A VARIABLE naming an environment variable",
            )?;
            target.auth_protocol = Some(parse_config_word::<AuthProtocol>(
                "auth-protocol",
                &args.auth_protocol,
            )?);
            target.auth_password = Some(Secret::Env { env });
        }
        if level == SecurityLevel::AuthPriv {
            let env = args
                .priv_password_env
                .clone()
                .context("authPriv needs a privacy password: pass -X VARIABLE naming an environment variable")?;
            target.priv_protocol = Some(parse_config_word::<PrivProtocol>(
                "priv-protocol",
                &args.priv_protocol,
            )?);
            target.priv_password = Some(Secret::Env { env });
        }
    } else {
        target.community = Some(match (&args.community, &args.community_env) {
            (Some(c), _) => Secret::Inline(c.clone()),
            (None, Some(env)) => Secret::Env { env: env.clone() },
            (None, None) => bail!("SNMP v1/v2c needs --community or --community-env"),
        });
    }
    if let Some(path) = &args.record {
        let recording = snmp::record(target.clone()).await?;
        std::fs::write(path, recording.to_snmprec())
            .with_context(|| format!("writing the recording to {}", path.display()))?;
        eprintln!(
            "recorded {} objects to {} (check it offline: sitewatch profile test {})",
            recording.len(),
            path.display(),
            path.display()
        );
    }
    let report = snmp::probe(target, &profiles, args.profile.as_deref()).await?;
    print_report(&report)
}

fn load_profiles(dir: &Path) -> Result<ProfileSet> {
    ProfileSet::load_dir(dir).with_context(|| {
        format!(
            "loading profiles from {} (run from the repository root or pass --profiles-dir)",
            dir.display()
        )
    })
}

async fn profile_test(args: ProfileTestArgs) -> Result<()> {
    telemetry::init_logging("warn", false)?;
    let profiles = load_profiles(&args.profiles_dir)?;
    let (force, file) = match args.args.as_slice() {
        [file] => (None, PathBuf::from(file)),
        [profile, file] => (Some(profile.as_str()), PathBuf::from(file)),
        _ => bail!("usage: sitewatch profile test [PROFILE] FILE.snmprec"),
    };
    let recording = snmp::Recording::read(&file)?;
    let device = args.device.clone().unwrap_or_else(|| {
        file.file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.trim_end_matches(".snmprec").to_string())
            .unwrap_or_else(|| "recording".into())
    });
    let report = snmp::profile_test(&recording, &profiles, force, &device).await?;
    print_report(&report)
}

/// What `probe` and `profile test` print: identity, profiles, notes, one poll as line
/// protocol, and the OID behind each field.
fn print_report(report: &snmp::ProbeReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "# sysObjectID: {}", report.sys_object_id)?;
    writeln!(out, "# sysDescr: {}", report.sys_descr.replace('\n', " "))?;
    if report.profiles.is_empty() {
        writeln!(out, "# profiles: (none)")?;
    } else {
        writeln!(out, "# profiles: {}", report.profiles.join(", "))?;
    }
    if !report.empty_profiles.is_empty() {
        writeln!(
            out,
            "# matched but empty: {}",
            report.empty_profiles.join(", ")
        )?;
    }
    for note in &report.notes {
        writeln!(out, "# note: {note}")?;
    }
    let mut buf = Vec::new();
    for s in &report.samples {
        encode_sample(&mut buf, s);
    }
    out.write_all(&buf)?;
    if !report.origins.is_empty() {
        writeln!(out, "# field origins (series field <- OID [profile]):")?;
        for o in &report.origins {
            writeln!(
                out,
                "#   {} {} <- {} [{}]",
                o.series, o.field, o.oid, o.profile
            )?;
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Replay stored history from InfluxDB through the rules and report what would have fired.
    Test(RulesTestArgs),
}

/// `sitewatch rules test`: tune thresholds on history before they page anyone.
#[derive(clap::Args)]
struct RulesTestArgs {
    #[arg(long, short, env = "SITEWATCH_CONFIG")]
    config: PathBuf,
    /// How much history to replay, ending at --until (default now): 7d, 12h, ...
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "from", required_unless_present = "from")]
    since: Option<Duration>,
    /// Start of the range, RFC 3339 (2026-11-01T00:00:00Z, ...+02:00) or a date.
    #[arg(long)]
    from: Option<String>,
    /// End of the range (exclusive), RFC 3339 or a date; default now.
    #[arg(long)]
    until: Option<String>,
    /// Only this rule (repeat for several).
    #[arg(long = "rule", value_name = "NAME")]
    rule: Vec<String>,
    /// Try these rule files instead of the ones the config names.
    #[arg(long = "rules", value_name = "FILE", num_args = 1..)]
    rules: Vec<PathBuf>,
    /// Length of one query window; lower it to bound memory on sites with many series.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Step of the engine's clock for time-driven rules (stale data), as in the live service.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    tick: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

async fn rules_test(args: RulesTestArgs) -> Result<()> {
    use sitewatch::rules::replay;
    telemetry::init_logging("warn", false)?;
    let cfg = LoadedConfig::load(&args.config)?;
    let all = if args.rules.is_empty() {
        load_rules(&cfg)?
    } else {
        rules::load_rule_files(&args.rules)?
    };
    let set = replay::select_rules(&all, &args.rule)?;
    let mut opts = replay::ReplayOptions::from_args(
        args.since,
        args.from.as_deref(),
        args.until.as_deref(),
        sitewatch::model::now_ns(),
    )?;
    opts.window = args.window;
    opts.tick = args.tick;
    let report = replay::replay(&cfg.config.influx, set, &opts).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(())
}
