//! Alert receivers for tests: a real Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`) on a free loopback port, and a tiny recording HTTP server that
//! stands in for webhooks, PagerDuty and Slack and can fail or stall on demand.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use serde_json::Value;

use super::pki::{https, TestPki};
use super::{free_tcp_port, require_binary, ServiceProcess};

/// Blocking HTTP/1.0 GET on 127.0.0.1; returns (status, body). HTTP/1.0 makes the server
/// close the connection after answering, so reading to EOF reads the whole body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// A running Alertmanager with clustering off and a single `null` receiver.
pub struct Alertmanager {
    pub port: u16,
    proc: ServiceProcess,
    /// Set for [`Alertmanager::start_mutual_tls`]: the harness's own requests present the
    /// test client certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
}

const CONFIG: &str = "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n";

impl Alertmanager {
    pub fn start() -> Alertmanager {
        Self::start_with(None)
    }

    /// HTTPS only, with `pki`'s server certificate, and every client must present a
    /// certificate `pki`'s CA signed (`RequireAndVerifyClientCert`, `--web.config.file`).
    pub fn start_mutual_tls(pki: &TestPki) -> Alertmanager {
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<&TestPki>) -> Alertmanager {
        let bin = require_binary("prometheus-alertmanager", "prometheus-alertmanager");
        let mut last_log = String::new();
        // A free port can be taken between picking and binding: retry with a new one.
        for _ in 0..3 {
            let port = free_tcp_port();
            let dir = tempfile::Builder::new()
                .prefix("sitewatch-alertmanager")
                .tempdir()
                .expect("temp dir for alertmanager");
            let config = dir.path().join("alertmanager.yml");
            std::fs::write(&config, CONFIG).expect("write alertmanager.yml");
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // Empty disables clustering; otherwise it binds 0.0.0.0:9094.
                .arg("--cluster.listen-address=")
                .arg("--log.level=warn");
            if let Some(pki) = pki {
                let web = dir.path().join("web.yml");
                let text = format!(
                    "tls_server_config:\n  cert_file: {:?}\n  key_file: {:?}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {:?}\n",
                    pki.server_cert.display().to_string(),
                    pki.server_key.display().to_string(),
                    pki.ca_file.display().to_string()
                );
                std::fs::write(&web, text).expect("write web.yml");
                cmd.arg(format!("--web.config.file={}", web.display()));
            }
            let proc = ServiceProcess::spawn("alertmanager", cmd, dir);
            let tls = pki.map(|p| p.client_config(true));
            let mut am = Alertmanager { port, proc, tls };
            match am.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return am,
                Err(log) => last_log = log,
            }
        }
        panic!("alertmanager did not become ready on 3 ports; last log:\n{last_log}");
    }

    /// Waits for `/-/ready`; on failure returns the log (the process may have lost a port race).
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.proc.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}:\n{}", self.proc.log()));
                }
            }
            if let Ok((200, _)) = self.get("/-/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.proc.log();
                self.proc.kill();
                return Err(format!("not ready within {timeout:?}:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path`, over mutual TLS when the server demands it.
    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        match &self.tls {
            Some(tls) => https(tls, self.port, "GET", path, b""),
            None => http_get(self.port, path),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts?active=true`: alerts not yet resolved (Alertmanager leaves out
    /// those whose `endsAt` has passed).
    pub fn active_alerts(&self) -> Vec<Value> {
        let (status, body) = self
            .get("/api/v2/alerts?active=true")
            .expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "GET /api/v2/alerts: {body}");
        match serde_json::from_str(&body) {
            Ok(Value::Array(a)) => a,
            other => panic!("/api/v2/alerts is not a JSON array ({other:?}): {body}"),
        }
    }

    /// Active alerts named `alertname`.
    pub fn active_named(&self, alertname: &str) -> Vec<Value> {
        self.active_alerts()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == alertname)
            .collect()
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// One request the [`WebhookReceiver`] got.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Value::Null` if it was not JSON; see `raw`).
    pub body: Value,
    pub raw: String,
    /// What the receiver answered.
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

#[derive(Default)]
struct HookState {
    requests: Mutex<Vec<Recorded>>,
    fail_next: AtomicUsize,
    fail_status: AtomicU16,
    delay_ms: AtomicU64,
}

/// A recording HTTP server on a free loopback port, answering 200 unless told to fail
/// (`fail_next`) or stall (`set_delay`). Runs on the test's tokio runtime.
pub struct WebhookReceiver {
    pub port: u16,
    state: Arc<HookState>,
    task: tokio::task::JoinHandle<()>,
}

async fn handle(
    State(st): State<Arc<HookState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let at = Instant::now();
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = st
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail {
        st.fail_status.load(Ordering::SeqCst)
    } else {
        200
    };
    let raw = String::from_utf8_lossy(&body).into_owned();
    st.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        status,
        at,
    });
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, format!("test receiver answered {status}"))
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook receiver");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(HookState {
            fail_status: AtomicU16::new(500),
            ..Default::default()
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { port, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers the next `n` requests with `status` (e.g. 500, 429, 400).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state.fail_status.store(status, Ordering::SeqCst);
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests answered with 2xx.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until at least `n` requests were accepted; panics with what arrived otherwise.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "webhook receiver on port {}: {} of {n} requests accepted within {timeout:?}; all requests: {:#?}",
                    self.port,
                    got.len(),
                    self.requests()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
