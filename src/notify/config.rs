//! `[notify]` configuration: where alerts go and which ones.
//!
//! ```toml
//! [notify]
//! generator_url_base = "https://grafana.example.net/d/facility"   # optional link in alerts
//!
//! [[notify.receiver]]
//! name = "alertmanager"
//! kind = "alertmanager"
//! url = "http://127.0.0.1:9093"          # base URL; /api/v2/alerts is appended
//! repeat_interval = "1m"                  # default for alertmanager
//!
//! [[notify.receiver]]
//! name = "oncall"
//! kind = "pagerduty"
//! routing_key = { env = "SITEWATCH_PD_ROUTING_KEY" }
//! match = { severity = "critical", site = "dc1" }
//!
//! [[notify.receiver]]
//! name = "ops-chat"
//! kind = "slack"
//! url = { file = "/etc/sitewatch/slack-webhook-url" }   # the URL embeds a token
//!
//! [[notify.receiver]]
//! name = "ticketing"
//! kind = "webhook"
//! url = "https://tickets.example.net/hooks/sitewatch"
//! headers = { Authorization = { env = "SITEWATCH_TICKET_AUTH" } }
//! match = { rack = "r1*" }
//! tls = { ca_file = "/etc/sitewatch/internal-ca.pem" }   # see crate::tls
//!
//! # Escalation: an alert this receiver got and nobody acknowledged within 15 minutes goes
//! # on to "duty-manager" (which gets alerts only by escalation; it may escalate further).
//! [[notify.receiver]]
//! name = "noc-webhook"
//! kind = "webhook"
//! url = "https://noc.example.net/hooks/sitewatch"
//! escalate_after = "15m"
//! escalate_to = ["duty-manager"]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::matcher::Matchers;
use crate::secret::Secret;
use crate::tls::TlsConfig;

/// PagerDuty Events API v2 endpoint used when a `pagerduty` receiver sets no `url`.
pub const PAGERDUTY_DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Alertmanager's default `resolve_timeout`. Alertmanager keeps alerts only in memory, so a
/// restarted one learns about still-firing alerts only from re-sends: they must come at least
/// this often.
pub const ALERTMANAGER_MAX_REPEAT: Duration = Duration::from_secs(5 * 60);

/// Alert forwarding, TOML table `[notify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Base of the `generatorURL` / `client_url` link put in alerts (e.g. a Grafana
    /// dashboard); `rule` and `series` are appended as query parameters.
    #[serde(default)]
    pub generator_url_base: Option<String>,
    /// On shutdown, how long receivers may keep delivering what is already queued.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(default, rename = "receiver")]
    pub receivers: Vec<ReceiverConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            generator_url_base: None,
            shutdown_grace: default_shutdown_grace(),
            receivers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Prometheus Alertmanager, `POST {url}/api/v2/alerts`.
    Alertmanager,
    /// Any HTTP endpoint; the body has the Alertmanager/Grafana webhook shape.
    Webhook,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Slack incoming webhook.
    Slack,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Alertmanager => "alertmanager",
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Pagerduty => "pagerduty",
            ReceiverKind::Slack => "slack",
        }
    }
}

/// One `[[notify.receiver]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Label in metrics and logs; unique.
    pub name: String,
    pub kind: ReceiverKind,
    /// Alertmanager base URL, webhook URL or Slack incoming-webhook URL; optional override
    /// for PagerDuty. A secret because webhook URLs often embed their token.
    #[serde(default)]
    pub url: Option<Secret>,
    /// PagerDuty integration (routing) key.
    #[serde(default)]
    pub routing_key: Option<Secret>,
    /// Extra HTTP headers, e.g. `Authorization` for a webhook behind a proxy.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Globs on alert labels (`alertname`, `severity`, `measurement`, `field` and the series
    /// tags); all must match. A label the alert lacks counts as the empty string.
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Re-send still-firing alerts this often. Default 1m for alertmanager, off otherwise.
    #[serde(default, with = "humantime_serde")]
    pub repeat_interval: Option<Duration>,
    /// Per-request HTTP timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Events waiting for this receiver; when full the oldest is dropped (and counted).
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Cap of the exponential retry backoff (and of an honoured `Retry-After`).
    #[serde(default = "default_max_retry_delay", with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// Trust and client certificate for an `https://` URL (see `crate::tls`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// An alert this receiver was told about and nobody acknowledged this long after goes
    /// on to `escalate_to` (the clock restarts at a change of severity).
    #[serde(default, with = "humantime_serde")]
    pub escalate_after: Option<Duration>,
    /// The receivers of the next escalation step. A receiver named here gets alerts only by
    /// escalation (its own `match` still filters them).
    #[serde(default)]
    pub escalate_to: Vec<String>,
}

impl ReceiverConfig {
    /// Where this receiver's `tls` table is, for messages: `notify.receiver[0].tls`.
    pub fn tls_table(index: usize) -> String {
        format!("notify.receiver[{index}].tls")
    }

    /// The re-send interval in force (alertmanager defaults to 1m).
    pub fn effective_repeat_interval(&self) -> Option<Duration> {
        match (self.kind, self.repeat_interval) {
            (ReceiverKind::Alertmanager, None) => Some(Duration::from_secs(60)),
            (_, ri) => ri,
        }
    }
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_queue_size() -> usize {
    1000
}
fn default_max_retry_delay() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("notify.{key}: {problem}")]
    Global { key: &'static str, problem: String },
    #[error("notify.receiver[{index}] (name {name:?}): `{key}`: {problem}")]
    Receiver {
        index: usize,
        name: String,
        key: String,
        problem: String,
    },
}

impl NotifyConfig {
    /// Checks everything that can be checked without reading secrets or the network.
    pub fn validate(&self) -> Result<(), NotifyConfigError> {
        if let Some(base) = &self.generator_url_base {
            check_url(base).map_err(|problem| NotifyConfigError::Global {
                key: "generator_url_base",
                problem,
            })?;
        }
        if self.shutdown_grace > Duration::from_secs(300) {
            return Err(NotifyConfigError::Global {
                key: "shutdown_grace",
                problem: "is longer than 5m; a stop would hang that long on a dead receiver".into(),
            });
        }
        let mut names = HashSet::new();
        for (index, r) in self.receivers.iter().enumerate() {
            let err = |key: &str, problem: String| NotifyConfigError::Receiver {
                index,
                name: r.name.clone(),
                key: key.to_string(),
                problem,
            };
            if r.name.trim().is_empty() {
                return Err(err(
                    "name",
                    "is empty; give every receiver a unique name".into(),
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(err(
                    "name",
                    "is used by an earlier receiver; names label metrics and must be unique".into(),
                ));
            }
            match (r.kind, &r.url) {
                (ReceiverKind::Pagerduty, _) => {}
                (kind, None) => {
                    return Err(err(
                        "url",
                        format!("is required for kind = \"{}\"", kind.as_str()),
                    ))
                }
                _ => {}
            }
            if let Some(Secret::Inline(url)) = &r.url {
                check_url(url).map_err(|p| err("url", p))?;
            }
            match (r.kind, &r.routing_key) {
                (ReceiverKind::Pagerduty, None) => {
                    return Err(err(
                        "routing_key",
                        "is required for kind = \"pagerduty\" (the integration key of the \
                         PagerDuty service)"
                            .into(),
                    ))
                }
                (ReceiverKind::Pagerduty, Some(_)) => {}
                (kind, Some(_)) => {
                    return Err(err(
                        "routing_key",
                        format!(
                            "only applies to kind = \"pagerduty\", not \"{}\"",
                            kind.as_str()
                        ),
                    ))
                }
                _ => {}
            }
            for name in r.headers.keys() {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(err(
                        &format!("headers.{name}"),
                        "is not a valid HTTP header name".into(),
                    ));
                }
            }
            Matchers::compile(&r.matchers)
                .map_err(|(key, problem)| err(&format!("match.{key}"), problem))?;
            if let Some(ri) = r.repeat_interval {
                if ri < Duration::from_secs(1) {
                    return Err(err(
                        "repeat_interval",
                        "must be at least 1s (leave it out to disable re-sends)".into(),
                    ));
                }
                if r.kind == ReceiverKind::Alertmanager && ri >= ALERTMANAGER_MAX_REPEAT {
                    return Err(err(
                        "repeat_interval",
                        "must be shorter than 5m (Alertmanager's resolve_timeout): Alertmanager \
                         keeps alerts in memory only and relearns them from re-sends"
                            .into(),
                    ));
                }
            }
            if r.timeout.is_zero() {
                return Err(err("timeout", "must be greater than 0".into()));
            }
            if r.queue_size == 0 || r.queue_size > 1_000_000 {
                return Err(err("queue_size", "must be between 1 and 1000000".into()));
            }
            if r.max_retry_delay < Duration::from_millis(100) {
                return Err(err("max_retry_delay", "must be at least 100ms".into()));
            }
            match (r.escalate_after, r.escalate_to.is_empty()) {
                (Some(_), true) => {
                    return Err(err(
                        "escalate_to",
                        "is missing: name the receivers escalate_after hands alerts to".into(),
                    ))
                }
                (None, false) => {
                    return Err(err(
                        "escalate_after",
                        "is missing: say how long an unacknowledged alert waits before it goes to escalate_to (e.g. \"15m\")".into(),
                    ))
                }
                (Some(d), false) if d < Duration::from_secs(1) => {
                    return Err(err("escalate_after", "must be at least 1s".into()))
                }
                _ => {}
            }
            for target in &r.escalate_to {
                if target == &r.name {
                    return Err(err("escalate_to", "names the receiver itself".into()));
                }
                if !self.receivers.iter().any(|o| &o.name == target) {
                    return Err(err(
                        "escalate_to",
                        format!("names {target:?}, which is no [[notify.receiver]]"),
                    ));
                }
            }
        }
        self.check_escalation_cycles()
    }

    /// Escalation must end: a chain that comes back to a receiver would page in a loop.
    fn check_escalation_cycles(&self) -> Result<(), NotifyConfigError> {
        let next = |name: &str| -> &[String] {
            self.receivers
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.escalate_to.as_slice())
                .unwrap_or(&[])
        };
        for (index, r) in self.receivers.iter().enumerate() {
            // Depth-first from r; a path back to r is a cycle.
            let mut stack: Vec<(&str, Vec<&str>)> = vec![(&r.name, vec![&r.name])];
            while let Some((at, path)) = stack.pop() {
                for t in next(at) {
                    if t == &r.name {
                        let mut chain = path.clone();
                        chain.push(t);
                        return Err(NotifyConfigError::Receiver {
                            index,
                            name: r.name.clone(),
                            key: "escalate_to".into(),
                            problem: format!(
                                "escalation comes back to this receiver ({}); an escalation chain must end",
                                chain.join(" -> ")
                            ),
                        });
                    }
                    if !path.contains(&t.as_str()) {
                        let mut p = path.clone();
                        p.push(t);
                        stack.push((t, p));
                    }
                }
            }
        }
        Ok(())
    }

    /// Names of the receivers some `escalate_to` names: they get alerts only by escalation.
    pub fn escalation_targets(&self) -> HashSet<&str> {
        self.receivers
            .iter()
            .flat_map(|r| r.escalate_to.iter().map(String::as_str))
            .collect()
    }
}

/// An absolute http(s) URL.
pub(crate) fn check_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("is not a valid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("has scheme {other:?}; use http or https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Root {
        notify: NotifyConfig,
    }

    fn parse(s: &str) -> Result<NotifyConfig, String> {
        let root: Root = toml::from_str(s).map_err(|e| e.to_string())?;
        root.notify.validate().map_err(|e| e.to_string())?;
        Ok(root.notify)
    }

    #[test]
    fn parses_full_example() {
        let cfg = parse(
            r#"
            [notify]
            generator_url_base = "https://grafana.example.net/d/x"
            [[notify.receiver]]
            name = "am"
            kind = "alertmanager"
            url = "http://127.0.0.1:9093"
            [[notify.receiver]]
            name = "pd"
            kind = "pagerduty"
            routing_key = { env = "X_PD_KEY" }
            match = { severity = "critical", site = "dc1" }
            [[notify.receiver]]
            name = "slack"
            kind = "slack"
            url = { env = "X_SLACK_URL" }
            [[notify.receiver]]
            name = "hook"
            kind = "webhook"
            url = "http://127.0.0.1:1/x"
            headers = { Authorization = "Bearer abc" }
            repeat_interval = "10m"
            timeout = "2s"
            queue_size = 10
            max_retry_delay = "5s"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.receivers.len(), 4);
        let am = &cfg.receivers[0];
        assert_eq!(
            am.effective_repeat_interval(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(am.timeout, Duration::from_secs(10));
        assert_eq!(am.queue_size, 1000);
        assert_eq!(am.max_retry_delay, Duration::from_secs(60));
        assert_eq!(cfg.receivers[1].effective_repeat_interval(), None);
        assert_eq!(cfg.receivers[1].matchers["severity"], "critical");
        let hook = &cfg.receivers[3];
        assert_eq!(hook.repeat_interval, Some(Duration::from_secs(600)));
        assert_eq!(hook.queue_size, 10);
        assert!(!format!("{:?}", hook.headers).contains("abc"));
    }

    #[test]
    fn errors_name_receiver_and_key() {
        let base = "[notify]\n[[notify.receiver]]\nname = \"r\"\n";
        let cases = [
            ("kind = \"webhook\"\n", "`url`: is required"),
            ("kind = \"pagerduty\"\n", "`routing_key`: is required"),
            (
                "kind = \"slack\"\nurl = \"http://x\"\nrouting_key = \"k\"\n",
                "`routing_key`: only applies",
            ),
            (
                "kind = \"alertmanager\"\nurl = \"http://x\"\nrepeat_interval = \"5m\"\n",
                "`repeat_interval`: must be shorter than 5m",
            ),
            (
                "kind = \"webhook\"\nurl = \"ftp://x\"\n",
                "`url`: has scheme",
            ),
            (
                "kind = \"webhook\"\nurl = \"not a url\"\n",
                "`url`: is not a valid URL",
            ),
            (
                "kind = \"webhook\"\nurl = \"http://x\"\nmatch = { site = \"[\" }\n",
                "`match.site`",
            ),
            (
                "kind = \"webhook\"\nurl = \"http://x\"\nqueue_size = 0\n",
                "`queue_size`",
            ),
            (
                "kind = \"webhook\"\nurl = \"http://x\"\nheaders = { \"bad header\" = \"v\" }\n",
                "`headers.bad header`",
            ),
        ];
        for (extra, want) in cases {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains("notify.receiver[0] (name \"r\")"), "{err}");
            assert!(err.contains(want), "{extra}: {err}");
        }
    }

    #[test]
    fn rejects_duplicates_and_unknown_keys() {
        let dup = r#"
            [notify]
            [[notify.receiver]]
            name = "a"
            kind = "slack"
            url = "http://x"
            [[notify.receiver]]
            name = "a"
            kind = "slack"
            url = "http://y"
        "#;
        assert!(parse(dup).unwrap_err().contains("notify.receiver[1]"));
        let unknown = "[notify]\n[[notify.receiver]]\nname = \"a\"\nkind = \"slack\"\nurl = \"http://x\"\nurls = 1\n";
        assert!(parse(unknown).unwrap_err().contains("unknown field"));
        let kind = "[notify]\n[[notify.receiver]]\nname = \"a\"\nkind = \"email\"\n";
        assert!(parse(kind).unwrap_err().contains("unknown variant"));
    }
}
