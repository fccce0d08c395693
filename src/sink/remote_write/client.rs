//! One remote-write request, and the retry loop around it.
//!
//! Each request is `POST <url>` with the snappy-compressed protobuf body and the headers the
//! 1.0 spec requires (`Content-Encoding: snappy`, `Content-Type: application/x-protobuf`,
//! `X-Prometheus-Remote-Write-Version: 0.1.0`). Answers:
//!
//! - 2xx: delivered.
//! - 429 and 5xx, timeouts and transport errors (refused, reset, DNS): retried forever with
//!   full-jitter exponential backoff (250 ms doubling up to `max_retry_delay`), or after the
//!   server's `Retry-After` seconds when it sends them.
//! - 401, 403 and 404: retried like a 5xx. They say the deployment is wrong (an expired
//!   token, a wrong URL), not the data; releasing the acks would lose every sample until an
//!   operator notices, while retrying keeps them (in memory, then at the MQTT broker) and turns
//!   `/ready` 503 after `ready_grace`. The InfluxDB sink does the same.
//! - Any other 4xx: rejected, never retried (the spec: the data is invalid and resending it
//!   cannot help). Logged with the server's message and counted.
//! - Anything else (a 3xx that was not followed, 1xx): retried like a 5xx.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use super::config::{Auth, RemoteWriteConfig, RemoteWriteError};
use crate::retry::{retry_after_value, Backoff};

/// First backoff step; doubles per failed attempt up to `max_retry_delay`.
const BASE_DELAY: Duration = Duration::from_millis(250);
/// Least wait between attempts, so a dead receiver is not hammered in a tight loop.
const MIN_DELAY: Duration = Duration::from_millis(10);
/// Upper bound for an honoured `Retry-After`, so a confused proxy cannot park the sink.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Longest server message kept for logs.
const MAX_LOGGED_BODY: usize = 512;

/// How one request went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Permanently invalid (4xx other than 429).
    Rejected {
        status: u16,
        message: String,
    },
    /// Worth another try: `status` is the metric label (`503`, `timeout`, `transport`).
    Retry {
        status: String,
        after: Option<Duration>,
        detail: String,
    },
}

/// How a whole delivery (all its retries) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered { attempts: u32 },
    Rejected { status: u16, message: String },
}

/// Classifies a response by its status code (see the module docs).
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Verdict {
    let message = truncate(body.trim());
    match status {
        200..=299 => Verdict::Delivered,
        429 | 401 | 403 | 404 => Verdict::Retry {
            status: status.to_string(),
            after: retry_after,
            detail: message,
        },
        400..=499 => Verdict::Rejected { status, message },
        _ => Verdict::Retry {
            status: status.to_string(),
            after: retry_after,
            detail: message,
        },
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_LOGGED_BODY {
        return s.to_string();
    }
    let mut end = MAX_LOGGED_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The HTTP side of the sink: shared by the in-flight delivery and the run loop.
pub struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    /// The URL as logs show it (password `***`).
    pub shown: String,
    auth: Auth,
    max_retry_delay: Duration,
    /// True while a request is being retried.
    failing: AtomicBool,
    /// Since when requests have been failing (None while they succeed).
    down_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// The last failure while retrying; cleared by a delivery.
    last_error: std::sync::Mutex<Option<String>>,
}

impl Client {
    /// Validates the config, resolves the secrets and builds the HTTP client.
    pub fn new(cfg: &RemoteWriteConfig) -> Result<Client, RemoteWriteError> {
        let url = cfg.validate()?;
        let auth = cfg.auth()?;
        let http = crate::tls::http_client_builder(
            cfg.tls.as_ref(),
            "remote_write.tls",
            &cfg.shown_url(),
        )?
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(RemoteWriteError::Client)?;
        Ok(Client {
            http,
            url,
            shown: cfg.shown_url(),
            auth,
            max_retry_delay: cfg.max_retry_delay,
            failing: AtomicBool::new(false),
            down_since: std::sync::Mutex::new(None),
            last_error: std::sync::Mutex::new(None),
        })
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Logs the transitions only: one warning when requests start failing, one info line
    /// when one is delivered again (the retries in between are debug lines).
    fn set_failing(&self, failing: bool) {
        if self.failing.swap(failing, Ordering::AcqRel) != failing {
            metrics::gauge!("sitewatch_remote_write_failing").set(f64::from(u8::from(failing)));
            let mut since = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
            if failing {
                tracing::warn!(
                    sink = "remote_write", url = %self.shown,
                    error = self.last_error().as_deref().unwrap_or("unknown"),
                    "remote write sink failing: holding the samples in memory and retrying"
                );
            } else if let Some(t) = *since {
                tracing::info!(
                    sink = "remote_write", url = %self.shown,
                    down_for_s = t.elapsed().as_secs_f64(),
                    "remote write sink recovered: requests are delivered again"
                );
            }
            *since = failing.then(std::time::Instant::now);
            self.publish_status(*since);
        }
    }

    /// The sink's line on `/health` and `/ready` (not ready once failing past
    /// `[service] ready_grace`). Data waits in memory while failing: there is no spool.
    pub fn publish_status(&self, down_since: Option<std::time::Instant>) {
        crate::status::set_sink(crate::status::SinkStatus {
            name: "remote_write",
            state: if down_since.is_some() {
                crate::status::SinkState::Failing
            } else {
                crate::status::SinkState::Writing
            },
            down_since,
            oldest_unwritten: None,
            spooled_samples: 0,
            last_error: self.last_error(),
        });
    }

    /// One POST of an already compressed body.
    pub async fn post(&self, body: Bytes) -> Verdict {
        let mut req = self
            .http
            .post(self.url.clone())
            .header(CONTENT_ENCODING, "snappy")
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(USER_AGENT, concat!("sitewatch/", env!("CARGO_PKG_VERSION")))
            .body(body);
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Bearer(token) => req.bearer_auth(token),
        };
        let started = Instant::now();
        let verdict = match req.send().await {
            Err(e) => {
                let (kind, detail) = crate::tls::send_failure(&e, "remote_write.tls");
                Verdict::Retry {
                    status: kind.into(),
                    after: None,
                    detail,
                }
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let after = retry_after_value(resp.headers().get(RETRY_AFTER))
                    .map(|d| d.min(MAX_RETRY_AFTER));
                let body = resp.text().await.unwrap_or_default();
                classify(status, after, &body)
            }
        };
        metrics::histogram!("sitewatch_remote_write_request_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let status = match &verdict {
            Verdict::Delivered => "2xx".to_string(),
            Verdict::Rejected { status, .. } => status.to_string(),
            Verdict::Retry { status, .. } => status.clone(),
        };
        metrics::counter!("sitewatch_remote_write_requests_total", "status" => status).increment(1);
        verdict
    }

    /// Sends `body` until it is delivered or rejected. Only ends otherwise when the future is
    /// dropped (the `stop` token at shutdown).
    pub async fn deliver(self: Arc<Self>, body: Bytes, samples: usize) -> Outcome {
        let mut attempt: u32 = 0;
        loop {
            let verdict = self.post(body.clone()).await;
            match verdict {
                Verdict::Delivered => {
                    if attempt > 0 {
                        tracing::debug!(attempts = attempt + 1, url = %self.shown, "remote write delivered after retries");
                    }
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.set_failing(false);
                    return Outcome::Delivered {
                        attempts: attempt + 1,
                    };
                }
                Verdict::Rejected { status, message } => {
                    self.set_failing(false);
                    return Outcome::Rejected { status, message };
                }
                Verdict::Retry {
                    status,
                    after,
                    detail,
                } => {
                    let delay = after.unwrap_or_else(|| {
                        Backoff::full_jitter(BASE_DELAY, self.max_retry_delay)
                            .with_floor(MIN_DELAY)
                            .delay(attempt)
                    });
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("{status}: {detail}"));
                    self.set_failing(true);
                    tracing::debug!(
                        url = %self.shown, status, attempt, ?delay, samples, error = %detail,
                        "remote write failed; holding the samples and retrying"
                    );
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_spec_says() {
        assert_eq!(classify(204, None, ""), Verdict::Delivered);
        assert_eq!(classify(200, None, "ok"), Verdict::Delivered);
        assert_eq!(
            classify(400, None, " out of order sample \n"),
            Verdict::Rejected {
                status: 400,
                message: "out of order sample".into()
            }
        );
        for s in [400, 413, 422] {
            assert!(
                matches!(classify(s, None, ""), Verdict::Rejected { .. }),
                "{s}"
            );
        }
        // Deployment errors, not bad data: held and retried until someone fixes them.
        for s in [401, 403, 404] {
            assert!(
                matches!(classify(s, None, ""), Verdict::Retry { .. }),
                "{s}"
            );
        }
        let after = Some(Duration::from_secs(2));
        assert!(matches!(classify(429, after, ""), Verdict::Retry { after: a, .. } if a == after));
        for s in [500, 502, 503, 504, 302, 100] {
            assert!(
                matches!(classify(s, None, ""), Verdict::Retry { .. }),
                "{s}"
            );
        }
        let long = "é".repeat(400);
        match classify(400, None, &long) {
            Verdict::Rejected { message, .. } => assert!(message.len() <= MAX_LOGGED_BODY + 3),
            v => panic!("{v:?}"),
        }
    }
}
