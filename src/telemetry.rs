//! Self-observability: logs (`tracing`), self-metrics (Prometheus text format), `/health`
//! (liveness) and `/ready` (readiness, from the components' own reports in
//! [`crate::status`]), and the operations API of [`crate::api`] on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

pub mod catalog;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {message} (use e.g. \"info\" or \"sitewatch=debug,rumqttc=warn\")")]
    LogFilter { filter: String, message: String },
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    #[error("cannot listen on {addr} for /metrics and /health: {source} (change [service] listen, or stop what holds the port)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Installs the global `tracing` subscriber. `RUST_LOG`, when set, overrides `level`.
/// Logs go to stderr so `sitewatch once` can print line protocol alone on stdout.
pub fn init_logging(level: &str, json: bool) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => env,
        _ => level.to_string(),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| TelemetryError::LogFilter {
        filter: filter.clone(),
        message: e.to_string(),
    })?;
    // Colour only for a person at a terminal: journald, log files and pipes get plain text
    // (escape sequences there are noise), and NO_COLOR (no-color.org) turns it off anyway.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests, `once` after `check`) is harmless; keep the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

/// Installs the global metrics recorder and returns the handle that renders it.
///
/// Durations are histograms with the buckets of [`catalog`] (a summary's quantiles cannot be
/// aggregated across shards); every family gets its help text; `sitewatch_build_info` and
/// the `process_*` families are there from the first scrape.
pub fn init_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let mut builder = PrometheusBuilder::new();
    for f in catalog::histograms() {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(f.name.to_string()), f.buckets)
            .map_err(|e| TelemetryError::Recorder(format!("{}: {e}", f.name)))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    catalog::describe_all();
    metrics::gauge!(
        "sitewatch_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "arch" => std::env::consts::ARCH,
        "os" => std::env::consts::OS,
    )
    .set(1.0);
    // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
    // (read from /proc on Linux), refreshed at each scrape.
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    Ok(handle)
}

/// Liveness and readiness as seen by `/health`.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    ready: AtomicBool,
    policy: crate::status::ReadyPolicy,
}

impl Health {
    pub fn new(policy: crate::status::ReadyPolicy) -> Arc<Health> {
        Arc::new(Health {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            policy,
        })
    }

    /// Marks the pipeline as started (collectors, rules and writer running).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct EndpointState {
    handle: PrometheusHandle,
    health: Arc<Health>,
    process: metrics_process::Collector,
}

/// Binds the endpoint first (so a port clash is a startup error), then serves `/metrics` and
/// `/health` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    health: Arc<Health>,
    api: Arc<crate::api::Api>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, TelemetryError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = Router::new()
        .route("/metrics", get(metrics_route))
        .route("/health", get(health_route))
        .route("/ready", get(ready_route))
        .with_state(EndpointState {
            handle,
            health,
            process: metrics_process::Collector::default(),
        })
        .merge(crate::api::routes(api));
    tracing::info!(%bound, "serving /metrics, /health, /ready and the API (/api/v1)");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    }))
}

async fn metrics_route(State(state): State<EndpointState>) -> impl IntoResponse {
    // Upkeep drains histogram buckets that would otherwise grow until the next scrape.
    state.handle.run_upkeep();
    state.process.collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.handle.render(),
    )
}

/// Liveness: 200 once started (503 while starting or stopping), with every component's
/// state in the body for people and scripts; it does not fail on a down InfluxDB (a restart
/// would not help: see `/ready`).
async fn health_route(State(state): State<EndpointState>) -> impl IntoResponse {
    let started = state.health.ready.load(Ordering::Relaxed);
    let (ready, components) = crate::status::report(state.health.policy);
    let body = serde_json::json!({
        "status": if started { "ok" } else { "starting" },
        "ready": started && ready,
        "uptime_s": state.health.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "components": components,
    });
    json_response(started, body)
}

/// Readiness: 503 while starting, while the sink has been down longer than
/// `[service] ready_grace`, or while no collector is connected.
async fn ready_route(State(state): State<EndpointState>) -> impl IntoResponse {
    let started = state.health.ready.load(Ordering::Relaxed);
    let (ready, mut body) = crate::status::report(state.health.policy);
    if !started {
        body["ready"] = serde_json::Value::Bool(false);
        if let Some(p) = body["problems"].as_array_mut() {
            p.push("starting or stopping".into());
        }
    }
    json_response(started && ready, body)
}

fn json_response(ok: bool, body: serde_json::Value) -> impl IntoResponse {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
