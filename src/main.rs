//! The `sitewatch` command line: `run`, `check`, `once`, `probe`, `health`, `profile`,
//! `rules`, `import`. The running service itself is built by `sitewatch::topology`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use sitewatch::collect::snmp;
use sitewatch::collect::snmp::config::{AuthProtocol, PrivProtocol, SecurityLevel, SnmpVersion};
use sitewatch::collect::snmp::{ProfileSet, TargetConfig};
use sitewatch::collect::{Shard, SourceOptions};
use sitewatch::config::Secret;
use sitewatch::config::{LoadedConfig, LogFormat};
use sitewatch::pipeline::EventRecord;
use sitewatch::rules;
use sitewatch::sink::influx::{encode_sample, event_sample, EVENTS_MEASUREMENT};
use sitewatch::telemetry;
use sitewatch::text::anyhow_error_chain as error_chain;
use sitewatch::topology::{load_rules, Topology};

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
        shard: Option<Shard>,
    },
    /// Convert another collector's config into a sitewatch config.
    Import {
        #[command(subcommand)]
        cmd: ImportCommand,
    },
    /// Cluster mode (`[cluster]`, coordinated by etcd): see docs/cluster.md.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCommand,
    },
    /// Validate the config, profiles and rules; exit 0 when valid, 1 with file:line errors.
    /// `OK` is printed last, once everything (secrets, receivers, rules) has resolved.
    Check {
        #[arg(long, short, env = "SITEWATCH_CONFIG")]
        config: PathBuf,
        /// Also reach every server the config names (sinks, broker, SNMP and Modbus devices,
        /// receivers) without storing data or sending an alert, and print a table; exit 1
        /// unless every one answered.
        #[arg(long)]
        connect: bool,
        /// Bound of each `--connect` probe (they run concurrently).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
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
    /// Ask a running instance whether it is alive (`/health`, the default) or ready
    /// (`/ready`): prints one line (status and the JSON report); exit 0 when it answers 200,
    /// 1 otherwise. For scripts and container health checks.
    Health {
        /// The instance, e.g. http://127.0.0.1:9273 (`/health` is added when the URL has no
        /// path) or http://127.0.0.1:9273/ready. Default: `[service] listen` of --config,
        /// else http://127.0.0.1:9273.
        #[arg(long)]
        url: Option<String>,
        /// Take the address from this config's `[service] listen` (--url wins).
        #[arg(long, short, env = "SITEWATCH_CONFIG")]
        config: Option<PathBuf>,
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
    /// Acknowledge an open alert on a running instance: escalation and repeats stop until it
    /// resolves or changes severity. IDs are in `GET /api/v1/alerts` and the alerts table.
    Ack {
        /// The alert id (16 hex digits).
        id: String,
        /// Who acknowledges (default: $USER).
        #[arg(long, env = "USER")]
        by: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Silence alerts on a running instance (kept across its restarts), list the silences
    /// (the API's and the rule files'), or expire one now.
    Silence {
        #[command(subcommand)]
        cmd: SilenceCommand,
    },
    /// Incident report from the InfluxDB history: timelines, related alerts, metric plots,
    /// MTTA/MTTR and alerts per shift, as Markdown or one HTML file (docs/report.md).
    Report(sitewatch::report::ReportArgs),
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Add a silence: what it mutes (--match and/or --rule) and until when (--duration, or
    /// --end with an optional --start); local times are read in --timezone.
    Add {
        #[command(flatten)]
        flags: sitewatch::api::cli::SilenceFlags,
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// Every silence with its state (pending, active, expired).
    List {
        #[command(flatten)]
        instance: InstanceArgs,
    },
    /// End a silence made through the API now (rule-file silences are edited in their file).
    Expire {
        id: String,
        /// Who expires it (default: $USER).
        #[arg(long, env = "USER")]
        by: String,
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

/// Which running instance an API command talks to.
#[derive(clap::Args)]
struct InstanceArgs {
    /// The instance, e.g. http://127.0.0.1:9273. Default: `[service] listen` of --config,
    /// else http://127.0.0.1:9273.
    #[arg(long)]
    url: Option<String>,
    /// Take the address and `[api] token` from this config (--url and --token win).
    #[arg(long, short, env = "SITEWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// The API token (`[api] token` of the instance).
    #[arg(long, env = "SITEWATCH_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the server's JSON answer instead of a line.
    #[arg(long)]
    json: bool,
}

impl InstanceArgs {
    fn instance(&self) -> sitewatch::api::client::Instance {
        sitewatch::api::client::Instance {
            url: self.url.clone(),
            config: self.config.clone(),
            token: self.token.clone(),
            timeout: self.timeout,
        }
    }
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
            Command::Check {
                config,
                connect,
                timeout,
            } => check(&config, connect.then_some(timeout)).await,
            Command::Once {
                config,
                mqtt_duration,
            } => once(&config, mqtt_duration).await,
            Command::Probe(args) => probe(args).await,
            Command::Health {
                url,
                config,
                timeout,
            } => health(url, config.as_deref(), timeout).await,
            Command::Profile {
                cmd: ProfileCommand::Test(args),
            } => profile_test(args).await,
            Command::Rules {
                cmd: RulesCommand::Test(args),
            } => rules_test(args).await,
            Command::Ack {
                id,
                by,
                comment,
                instance,
            } => {
                let line = sitewatch::api::cli::ack(
                    &instance.instance(),
                    &id,
                    &by,
                    &comment,
                    instance.json,
                )
                .await?;
                writeln!(std::io::stdout().lock(), "{line}")?;
                Ok(())
            }
            Command::Silence { cmd } => {
                let line = silence(cmd).await?;
                writeln!(std::io::stdout().lock(), "{line}")?;
                Ok(())
            }
            Command::Import {
                cmd: ImportCommand::Telegraf { file, output },
            } => import_telegraf(&file, output.as_deref()),
            Command::Report(args) => report(args).await,
            Command::Cluster {
                cmd: ClusterCommand::Status { config },
            } => cluster_status(&config).await,
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

async fn silence(cmd: SilenceCommand) -> Result<String> {
    use sitewatch::api::cli;
    Ok(match cmd {
        SilenceCommand::Add { flags, instance } => {
            cli::silence_add(&instance.instance(), &flags, instance.json).await?
        }
        SilenceCommand::List { instance } => {
            cli::silence_list(&instance.instance(), instance.json).await?
        }
        SilenceCommand::Expire { id, by, instance } => {
            cli::silence_expire(&instance.instance(), &id, &by, instance.json).await?
        }
    })
}

/// `OK` comes last: a summary line can never be read as success of a check that then fails.
async fn check(path: &Path, connect: Option<Duration>) -> Result<()> {
    let topology = Topology::build(path, SourceOptions::default())?;
    let summary = topology.summary();
    {
        let mut out = std::io::stdout().lock();
        for line in &summary {
            writeln!(out, "  {line}")?;
        }
    }
    if let Some(timeout) = connect {
        telemetry::init_logging("error", false)?;
        let rows = sitewatch::check::connect::probe_all(&topology.cfg, timeout).await;
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("{} {}", r.component, r.target))
            .collect();
        write!(
            std::io::stdout().lock(),
            "{}",
            sitewatch::check::connect::table(&rows)
        )?;
        if !failed.is_empty() {
            bail!(
                "{}: {} of {} connection check(s) failed: {}",
                topology.cfg.path.display(),
                failed.len(),
                rows.len(),
                failed.join("; ")
            );
        }
    }
    let warnings = summary
        .iter()
        .filter(|l| l.starts_with("warning: "))
        .count();
    let mut out = std::io::stdout().lock();
    match warnings {
        0 => writeln!(out, "{}: OK", topology.cfg.path.display())?,
        n => writeln!(out, "{}: OK ({n} warning(s))", topology.cfg.path.display())?,
    }
    Ok(())
}

async fn run(path: &Path, shard: Option<Shard>) -> Result<()> {
    let topology = Topology::build(
        path,
        SourceOptions {
            shard,
            ..Default::default()
        },
    )?;
    topology.run(wait_for_shutdown_signal()).await?;
    Ok(())
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

/// Prints what one cycle collected as InfluxDB line protocol (events as the InfluxDB sink
/// would store them), whatever sinks are configured.
async fn once(path: &Path, mqtt_duration: Duration) -> Result<()> {
    let topology = Topology::build(path, SourceOptions::default())?;
    let service = &topology.cfg.config.service;
    telemetry::init_logging(&service.log_level, service.log_format == LogFormat::Json)?;
    sitewatch::tls::log_deferred_warnings();
    let measurement = topology
        .cfg
        .config
        .influx
        .as_ref()
        .map_or(EVENTS_MEASUREMENT.to_string(), |i| {
            i.events_measurement.clone()
        });
    let (samples, events) = topology.once(mqtt_duration).await?;
    let mut buf = Vec::with_capacity(samples.len() * 96);
    for s in &samples {
        encode_sample(&mut buf, s);
    }
    for event in events {
        let record = EventRecord::change(event, false);
        encode_sample(&mut buf, &event_sample(&record, &measurement));
    }
    std::io::stdout().lock().write_all(&buf)?;
    tracing::info!(samples = samples.len(), "one collection cycle done");
    Ok(())
}

/// The URL `health` asks: `--url` (`/health` when it has no path or just `/`), else the
/// `[service] listen` address of `--config`, else the default listen address.
fn health_url(url: Option<String>, config: Option<&Path>) -> Result<String> {
    if let Some(url) = url {
        let parsed = reqwest::Url::parse(&url)
            .with_context(|| format!("--url {url:?}: not a URL (e.g. http://127.0.0.1:9273)"))?;
        if parsed.path() == "/" {
            return Ok(parsed.join("/health")?.to_string());
        }
        return Ok(url);
    }
    let listen = match config {
        Some(path) => LoadedConfig::load(path)?.config.service.listen,
        None => sitewatch::config::ServiceConfig::default().listen,
    };
    Ok(format!(
        "{}/health",
        sitewatch::api::client::base_url_of(listen)
    ))
}

async fn health(url: Option<String>, config: Option<&Path>, timeout: Duration) -> Result<()> {
    let url = &health_url(url, config)?;
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
    // One line for `docker inspect` and logs: the report re-serialised without newlines.
    let report = serde_json::from_str::<serde_json::Value>(&body)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| body.split_whitespace().collect::<Vec<_>>().join(" "));
    let verdict = if status.is_success() {
        "healthy"
    } else {
        "unhealthy"
    };
    writeln!(
        std::io::stdout().lock(),
        "{verdict}: {url} {} {report}",
        status.as_u16()
    )?;
    if !status.is_success() {
        // Exit 1; the line above already says why.
        std::process::exit(1);
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
    /// Folder of profile files. Default: mappings/snmp in the working directory, else
    /// $SITEWATCH_HOME/mappings/snmp, /usr/share/sitewatch/mappings/snmp or
    /// ../share/sitewatch/mappings/snmp beside the binary.
    #[arg(long)]
    profiles_dir: Option<PathBuf>,
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
    /// Folder of profile files. Default: mappings/snmp in the working directory, else
    /// $SITEWATCH_HOME/mappings/snmp, /usr/share/sitewatch/mappings/snmp or
    /// ../share/sitewatch/mappings/snmp beside the binary.
    #[arg(long)]
    profiles_dir: Option<PathBuf>,
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
    let profiles = load_profiles(args.profiles_dir.as_deref())?;
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

fn load_profiles(dir: Option<&Path>) -> Result<ProfileSet> {
    let configured = dir.unwrap_or(Path::new("mappings/snmp"));
    let dir = sitewatch::paths::find_mappings("snmp", configured, Path::new("."))
        .context("--profiles-dir")?;
    ProfileSet::load_dir(&dir).with_context(|| format!("loading profiles from {}", dir.display()))
}

async fn profile_test(args: ProfileTestArgs) -> Result<()> {
    telemetry::init_logging("warn", false)?;
    let profiles = load_profiles(args.profiles_dir.as_deref())?;
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
enum ClusterCommand {
    /// Print the members registered in etcd (name, lease, TTL left) and the units each owns,
    /// computed with the members' own assignment; exit 1 when etcd cannot be reached.
    Status {
        #[arg(long, short, env = "SITEWATCH_CONFIG")]
        config: PathBuf,
    },
}

async fn cluster_status(path: &Path) -> Result<()> {
    let cfg = sitewatch::config::LoadedConfig::load(path)?;
    let Some(cc) = &cfg.config.cluster else {
        anyhow::bail!(
            "{}: no [cluster] table: this config runs a single instance",
            path.display()
        );
    };
    cc.validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let units = sitewatch::topology::cluster_units(&cfg.config);
    let members = sitewatch::cluster::status::read(cc, &units)
        .await
        .context("cluster status: etcd cannot be reached (is it running? [cluster] etcd lists the endpoints)")?;
    write!(
        std::io::stdout().lock(),
        "{}",
        sitewatch::cluster::status::render(cc, &members, units.len())
    )?;
    Ok(())
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Convert a Telegraf config (inputs.snmp, inputs.mqtt_consumer, outputs.influxdb,
    /// outputs.influxdb_v2, [agent], [global_tags]); what cannot be converted is listed on
    /// stderr and as comments in the output (docs/telegraf.md).
    Telegraf {
        /// The telegraf.conf to read.
        file: PathBuf,
        /// Write the config here (SNMP profiles go to telegraf-profiles/ beside it); without
        /// it the config is printed.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// `sitewatch import telegraf FILE [-o out.toml]`.
fn import_telegraf(file: &Path, output: Option<&Path>) -> Result<()> {
    use sitewatch::import::telegraf;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let conversion = telegraf::convert(&text, file)?;
    for note in &conversion.notes {
        eprintln!("import note: {note}");
    }
    let Some(output) = output else {
        if !conversion.profiles.is_empty() {
            bail!(
                "{}: the SNMP fields need a generated profile file: pass -o out.toml (the profiles go to {}/ beside it)",
                file.display(),
                telegraf::PROFILES_DIR
            );
        }
        std::io::stdout()
            .lock()
            .write_all(conversion.config.as_bytes())?;
        return Ok(());
    };
    if !conversion.profiles.is_empty() {
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(telegraf::PROFILES_DIR);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, profile) in &conversion.profiles {
            let path = dir.join(name);
            std::fs::write(&path, profile)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    std::fs::write(output, &conversion.config)
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "wrote {} ({} note(s)); next: sitewatch check --connect --config {}",
        output.display(),
        conversion.notes.len(),
        output.display()
    );
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
    let Some(influx) = &cfg.config.influx else {
        bail!(
            "{}: rules test replays history from InfluxDB, but the config has no [influx] table",
            cfg.path.display()
        );
    };
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
    let report = replay::replay(influx, set, &opts).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(())
}

/// `sitewatch report`: the incident report from the InfluxDB history.
async fn report(args: sitewatch::report::ReportArgs) -> Result<()> {
    telemetry::init_logging("warn", false)?;
    let cfg = LoadedConfig::load(&args.config)?;
    let Some(influx) = &cfg.config.influx else {
        bail!(
            "{}: the report reads the alert history from InfluxDB, but the config has no [influx] table",
            cfg.path.display()
        );
    };
    sitewatch::report::run(influx, &args, &mut std::io::stdout().lock()).await?;
    Ok(())
}
