//! The one InfluxDB HTTP client: endpoint URL per API (v1, v2, v3) and per use (writing line
//! protocol, reading history through the v1 `/query` API), the `Authorization` from the
//! `[influx]` secrets, the reqwest client, and what an answer's status means.
//!
//! Used by the writer ([`super::InfluxWriter`]) and by `sitewatch rules test`
//! (`crate::rules::replay`). TLS follows `[influx.tls]` (`crate::tls`), the same for both.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};

use crate::secret::Secret;

use super::config::{InfluxApi, InfluxConfig, InfluxError};

/// What the client is for: decides the endpoint and the timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `POST` line protocol to `/write`, `/api/v2/write` or `/api/v3/write_lp`; every request
    /// is bounded by `timeout`.
    Write,
    /// `GET` InfluxQL from the v1 `/query` endpoint (2.x: DBRP mapping, 3.x: v1
    /// compatibility API). A big window can take a while in total; what `timeout` bounds is
    /// each wait.
    Query,
}

enum Auth {
    None,
    Basic { user: String, password: String },
    Header(HeaderValue),
}

/// An HTTP client for one InfluxDB endpoint, with its credentials.
pub struct InfluxClient {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    auth: Auth,
}

fn config_err(key: &'static str, problem: String, fix: &'static str) -> InfluxError {
    InfluxError::Config { key, problem, fix }
}

fn secret(key: &'static str, s: &Secret) -> Result<String, InfluxError> {
    s.resolve()
        .map_err(|source| InfluxError::Secret { key, source })
}

impl InfluxClient {
    /// Validates the config, builds the endpoint, resolves the secrets and builds the HTTP
    /// client. Fails on a missing key, an unreadable secret or a bad URL, naming the key.
    pub fn new(cfg: &InfluxConfig, purpose: Purpose) -> Result<InfluxClient, InfluxError> {
        cfg.validate()?;
        let endpoint = endpoint(cfg, purpose)?;
        let auth = auth(cfg)?;
        let builder = crate::tls::http_client_builder(
            cfg.tls.as_ref(),
            "influx.tls",
            &super::config::redacted_url_text(&cfg.url),
        )?
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)));
        let builder = match purpose {
            Purpose::Write => builder
                .timeout(cfg.timeout)
                .user_agent(concat!("sitewatch/", env!("CARGO_PKG_VERSION"))),
            Purpose::Query => builder
                .read_timeout(cfg.timeout.max(Duration::from_secs(30)))
                .user_agent(concat!(
                    "sitewatch/",
                    env!("CARGO_PKG_VERSION"),
                    " rules-test"
                )),
        };
        let http = builder.build().map_err(InfluxError::Client)?;
        Ok(InfluxClient {
            http,
            endpoint,
            auth,
        })
    }

    /// The endpoint URL (for writing, with its query parameters). May carry a password: show
    /// it through [`super::config::redacted_url`].
    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }

    /// A request to `url` (the endpoint, perhaps with more parameters) with the credentials.
    pub fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Header(v) => req.header(AUTHORIZATION, v.clone()),
        }
    }
}

/// The endpoint for `purpose` below `[influx] url` (a path in the URL is kept, for proxies).
fn endpoint(cfg: &InfluxConfig, purpose: Purpose) -> Result<reqwest::Url, InfluxError> {
    let bad_url =
        |problem: String| config_err("url", problem, "write it like \"http://127.0.0.1:8086\"");
    let mut endpoint =
        reqwest::Url::parse(&cfg.url).map_err(|e| bad_url(format!("{:?}: {e}", cfg.url)))?;
    let path: &[&str] = match (purpose, cfg.api) {
        (Purpose::Query, _) => &["query"],
        (Purpose::Write, InfluxApi::V1) => &["write"],
        (Purpose::Write, InfluxApi::V2) => &["api", "v2", "write"],
        (Purpose::Write, InfluxApi::V3) => &["api", "v3", "write_lp"],
    };
    endpoint
        .path_segments_mut()
        .map_err(|()| bad_url(format!("{:?} cannot take a path", cfg.url)))?
        .pop_if_empty()
        .extend(path);
    if purpose == Purpose::Write {
        let mut q = endpoint.query_pairs_mut();
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        match cfg.api {
            InfluxApi::V1 => {
                q.append_pair("db", &text(&cfg.database));
                if let Some(rp) = &cfg.retention_policy {
                    q.append_pair("rp", rp);
                }
                q.append_pair("precision", "ns");
            }
            InfluxApi::V2 => {
                q.append_pair("org", &text(&cfg.org));
                q.append_pair("bucket", &text(&cfg.bucket));
                q.append_pair("precision", "ns");
            }
            InfluxApi::V3 => {
                q.append_pair("db", &text(&cfg.database));
                q.append_pair("precision", "nanosecond");
            }
        }
    }
    Ok(endpoint)
}

/// v1: basic auth from `username`/`password`; v2: `Token`, v3: `Bearer` with `token`.
fn auth(cfg: &InfluxConfig) -> Result<Auth, InfluxError> {
    let header = |scheme: &str| -> Result<Auth, InfluxError> {
        let Some(token) = &cfg.token else {
            return Ok(Auth::None);
        };
        let token = secret("token", token)?;
        let mut value = HeaderValue::from_str(&format!("{scheme} {token}")).map_err(|_| {
            config_err(
                "token",
                "contains characters not allowed in an HTTP header".into(),
                "check the token file for stray bytes",
            )
        })?;
        value.set_sensitive(true);
        Ok(Auth::Header(value))
    };
    Ok(match cfg.api {
        InfluxApi::V1 => match (&cfg.username, &cfg.password) {
            (Some(user), Some(password)) => Auth::Basic {
                user: user.clone(),
                password: secret("password", password)?,
            },
            _ => Auth::None,
        },
        InfluxApi::V2 => header("Token")?,
        InfluxApi::V3 => header("Bearer")?,
    })
}

/// What an answer's status says to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Ok,
    /// Worth trying again later (the server, its credentials or its database may be fixed
    /// meanwhile); `kind` names why, for metrics and logs: `throttled` (429), `auth`
    /// (401/403), `not_found` (404), `server` (5xx and anything else).
    Retry { kind: &'static str },
    /// Another 4xx: the request itself is bad; sending it again does not help.
    Reject,
}

/// Classifies an answer's HTTP status.
pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Ok,
        429 => Class::Retry { kind: "throttled" },
        401 | 403 => Class::Retry { kind: "auth" },
        404 => Class::Retry { kind: "not_found" },
        400..=499 => Class::Reject,
        _ => Class::Retry { kind: "server" },
    }
}

/// The server's message in an error answer: the `error` of InfluxDB's JSON
/// (`{"error":"database not found: \"x\""}`), else the body as it is.
pub fn server_message(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => v
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string()),
        Err(_) => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> InfluxConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn query_endpoint_is_v1_query_for_every_api() {
        for text in [
            "url = \"http://h:1/proxy/\"\ndatabase = \"d\"",
            "url = \"http://h:1/proxy/\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"",
            "url = \"http://h:1/proxy/\"\napi = \"v3\"\ndatabase = \"d\"\ntoken = \"t\"",
        ] {
            let c = InfluxClient::new(&cfg(text), Purpose::Query).unwrap();
            assert_eq!(c.endpoint().as_str(), "http://h:1/proxy/query", "{text}");
        }
    }

    #[test]
    fn statuses_classify_and_messages_unwrap() {
        assert_eq!(classify(204), Class::Ok);
        assert_eq!(classify(429), Class::Retry { kind: "throttled" });
        assert_eq!(classify(403), Class::Retry { kind: "auth" });
        assert_eq!(classify(404), Class::Retry { kind: "not_found" });
        assert_eq!(classify(400), Class::Reject);
        assert_eq!(classify(413), Class::Reject);
        assert_eq!(classify(503), Class::Retry { kind: "server" });
        assert_eq!(classify(302), Class::Retry { kind: "server" });
        assert_eq!(
            server_message(r#"{"error":"database not found"}"#),
            "database not found"
        );
        assert_eq!(server_message(r#"{"code":"x"}"#), r#"{"code":"x"}"#);
        assert_eq!(server_message("bad gateway"), "bad gateway");
    }
}
