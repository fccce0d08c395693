//! The command line's side of the API (`sitewatch ack`, `sitewatch silence`): where the
//! instance is, which token to send, and errors that say what the server answered.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Environment variable the command line reads the API token from.
pub const TOKEN_ENV: &str = "SITEWATCH_API_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url} is not a valid URL: {problem} (use e.g. http://127.0.0.1:9273)")]
    Url { url: String, problem: String },
    #[error("cannot reach sitewatch at {url}: {source} (is it running? is --url or [service] listen right?)")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("sitewatch at {url} answered {status}: {message}")]
    Refused {
        url: String,
        status: StatusCode,
        message: String,
    },
    #[error("sitewatch at {url} sent an answer that is not JSON: {problem}")]
    Decode { url: String, problem: String },
}

/// `http://host:port` of an instance listening on `listen` (a wildcard address, as in a
/// container, is reached on loopback).
pub fn base_url_of(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

/// Which instance the command line talks to, and with what token.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    /// `--url`; else `[service] listen` of `config`; else the default listen address.
    pub url: Option<String>,
    pub config: Option<std::path::PathBuf>,
    /// `--token` / `SITEWATCH_API_TOKEN`; else `[api] token` of `config`.
    pub token: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: [api] token: {source}")]
    Token {
        path: std::path::PathBuf,
        #[source]
        source: crate::secret::SecretError,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Instance {
    pub fn client(&self) -> Result<ApiClient, InstanceError> {
        let loaded = match &self.config {
            Some(p) => Some(crate::config::LoadedConfig::load(Path::new(p))?),
            None => None,
        };
        let base = match (&self.url, &loaded) {
            (Some(u), _) => u.clone(),
            (None, Some(l)) => base_url_of(l.config.service.listen),
            (None, None) => base_url_of(crate::config::ServiceConfig::default().listen),
        };
        let token = match (&self.token, &loaded) {
            (Some(t), _) if !t.trim().is_empty() => Some(t.trim().to_string()),
            (_, Some(l)) => match &l.config.api {
                Some(api) => api.token().map_err(|source| InstanceError::Token {
                    path: l.path.clone(),
                    source,
                })?,
                None => None,
            },
            _ => None,
        };
        Ok(ApiClient::new(&base, token, self.timeout)?)
    }
}

/// A client for one instance's API.
pub struct ApiClient {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// `base` such as `http://127.0.0.1:9273`; `token` for writes.
    pub fn new(
        base: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<ApiClient, ClientError> {
        let mut base = reqwest::Url::parse(base).map_err(|e| ClientError::Url {
            url: base.to_string(),
            problem: e.to_string(),
        })?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("sitewatch-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Url {
                url: base.to_string(),
                problem: e.to_string(),
            })?;
        Ok(ApiClient { base, token, http })
    }

    /// Sends `body` (if any) to `path` (relative, e.g. `api/v1/alerts`) and returns the JSON
    /// answer of a 2xx; any other status becomes [`ClientError::Refused`] with the server's
    /// `error` text.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = self.base.join(path).map_err(|e| ClientError::Url {
            url: format!("{}{path}", self.base),
            problem: e.to_string(),
        })?;
        let shown = url.to_string();
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|source| ClientError::Connect {
            url: shown.clone(),
            source: source.without_url(),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|source| ClientError::Connect {
            url: shown.clone(),
            source: source.without_url(),
        })?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| crate::notify::payload::truncate_chars(&text, 300));
            return Err(ClientError::Refused {
                url: shown,
                status,
                message,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            url: shown,
            problem: e.to_string(),
        })
    }
}
