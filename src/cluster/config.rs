//! The `[cluster]` table: which etcd to coordinate through, this member's name, and how fast
//! a dead member's units move.

use std::time::Duration;

use serde::Deserialize;

/// The shortest `failover_after`: the lease is renewed every third of it, and below a second
/// per renewal a busy etcd or a GC pause on the member would fence healthy members.
pub const MIN_FAILOVER_AFTER: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs, e.g. `["http://10.0.0.1:2379", "http://10.0.0.2:2379"]`.
    pub etcd: Vec<String>,
    /// This member's name, unique in the cluster; the host name when unset.
    pub name: Option<String>,
    /// The cluster's name: members with the same name share the work.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// The etcd key prefix; `/sitewatch/<cluster>` when unset.
    pub prefix: Option<String>,
    /// Lease TTL: a member that stops renewing loses its units to the others this long after
    /// its last renewal (it stops them itself one renewal period earlier).
    #[serde(default = "default_failover_after", with = "humantime_serde")]
    pub failover_after: Duration,
    /// How long a fenced member waits, with etcd still unreachable, before it polls its last
    /// known share again (so an etcd outage does not leave the site unwatched); 4 ×
    /// `failover_after` when unset. See docs/cluster.md.
    #[serde(default, with = "humantime_serde")]
    pub fail_static_after: Option<Duration>,
    /// TLS to etcd (`https://` endpoints): the CA that signs etcd's certificate (an internal
    /// CA; the system's roots are trusted too) and a client certificate for etcd's
    /// `--client-cert-auth`. See [`super::access`].
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// etcd user, when etcd authentication is enabled (`etcdctl auth enable`); with
    /// `password`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<crate::secret::Secret>,
}

fn default_cluster() -> String {
    "default".to_string()
}

fn default_failover_after() -> Duration {
    Duration::from_secs(15)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterConfigError {
    #[error("[cluster] etcd: no endpoint; list the etcd client URLs, e.g. etcd = [\"http://127.0.0.1:2379\"]")]
    NoEndpoint,
    #[error("[cluster] etcd: {url:?} is not an http:// or https:// URL; write it as http://HOST:PORT, or https://HOST:PORT with [cluster.tls]")]
    BadEndpoint { url: String },
    #[error("[cluster] etcd: {http:?} and {https:?}: all endpoints speak plain HTTP or all speak TLS (one client for all of them)")]
    MixedEndpoints { http: String, https: String },
    #[error("[cluster.tls] with http:// endpoints: TLS is not used; write the endpoints as https://HOST:PORT, or drop [cluster.tls]")]
    TlsWithoutHttps,
    #[error("[cluster.tls] insecure_skip_verify is not supported for etcd: set ca_file to the CA that signs etcd's certificate")]
    InsecureEtcd,
    #[error("[cluster] {set} without {missing}: etcd authentication needs both")]
    HalfCredentials {
        set: &'static str,
        missing: &'static str,
    },
    #[error("[cluster.tls]: {0}")]
    Tls(String),
    #[error("[cluster] password: {0}")]
    Password(String),
    #[error("[cluster] failover_after = {got:?} is below the minimum of 3s (the lease is renewed every third of it)")]
    FailoverTooShort { got: Duration },
    #[error("[cluster] failover_after = {got:?} is not a whole number of seconds (etcd lease TTLs are whole seconds); write e.g. \"15s\"")]
    FailoverNotWholeSeconds { got: Duration },
    #[error("[cluster] {key} = {value:?}: {problem}")]
    BadName {
        key: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("[cluster] name is unset and the host name cannot be read ({0}); set name = \"...\"")]
    NoHostName(String),
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        if self.etcd.is_empty() {
            return Err(ClusterConfigError::NoEndpoint);
        }
        if let Some(url) = self
            .etcd
            .iter()
            .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
        {
            return Err(ClusterConfigError::BadEndpoint { url: url.clone() });
        }
        let http = self.etcd.iter().find(|u| u.starts_with("http://"));
        let https = self.etcd.iter().find(|u| u.starts_with("https://"));
        match (http, https) {
            (Some(http), Some(https)) => {
                return Err(ClusterConfigError::MixedEndpoints {
                    http: http.clone(),
                    https: https.clone(),
                })
            }
            (Some(_), None) if self.tls.is_some() => {
                return Err(ClusterConfigError::TlsWithoutHttps)
            }
            _ => {}
        }
        if self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            return Err(ClusterConfigError::InsecureEtcd);
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(ClusterConfigError::HalfCredentials {
                    set: "username",
                    missing: "password",
                })
            }
            (None, Some(_)) => {
                return Err(ClusterConfigError::HalfCredentials {
                    set: "password",
                    missing: "username",
                })
            }
            _ => {}
        }
        if self.failover_after < MIN_FAILOVER_AFTER {
            return Err(ClusterConfigError::FailoverTooShort {
                got: self.failover_after,
            });
        }
        if self.failover_after.subsec_nanos() != 0 {
            return Err(ClusterConfigError::FailoverNotWholeSeconds {
                got: self.failover_after,
            });
        }
        if let Some(n) = &self.name {
            check_name("name", n)?;
        }
        check_name("cluster", &self.cluster)?;
        if let Some(p) = &self.prefix {
            if !p.starts_with('/') || p.ends_with('/') {
                return Err(ClusterConfigError::BadName {
                    key: "prefix",
                    value: p.clone(),
                    problem: "must start with '/' and not end with '/', e.g. \"/sitewatch/ams1\"",
                });
            }
        }
        Ok(())
    }

    /// Whether the endpoints speak TLS.
    pub fn uses_tls(&self) -> bool {
        self.etcd.iter().any(|u| u.starts_with("https://"))
    }

    /// The member name: `name`, or the host name.
    pub fn member_name(&self) -> Result<String, ClusterConfigError> {
        match &self.name {
            Some(n) => Ok(n.clone()),
            None => crate::hostname::hostname()
                .map_err(|e| ClusterConfigError::NoHostName(e.to_string())),
        }
    }

    pub fn prefix(&self) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| format!("/sitewatch/{}", self.cluster))
    }

    /// Where members register: `<prefix>/members/`.
    pub fn members_prefix(&self) -> String {
        format!("{}/members/", self.prefix())
    }

    pub fn fail_static_after(&self) -> Duration {
        self.fail_static_after.unwrap_or(self.failover_after * 4)
    }
}

fn check_name(key: &'static str, value: &str) -> Result<(), ClusterConfigError> {
    let problem = if value.is_empty() {
        "is empty"
    } else if value.contains('/') || value.chars().any(char::is_whitespace) {
        "must not contain '/' or spaces (it is part of an etcd key)"
    } else {
        return Ok(());
    };
    Err(ClusterConfigError::BadName {
        key,
        value: value.to_string(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults() {
        let c = parse("etcd = [\"http://127.0.0.1:2379\"]").unwrap();
        c.validate().unwrap();
        assert_eq!(c.failover_after, Duration::from_secs(15));
        assert_eq!(c.prefix(), "/sitewatch/default");
        assert_eq!(c.members_prefix(), "/sitewatch/default/members/");
        assert_eq!(c.fail_static_after(), Duration::from_secs(60));
        assert!(!c.member_name().unwrap().is_empty());
    }

    #[test]
    fn rejects_with_the_key_and_the_fix() {
        let bad = [
            ("etcd = []", "no endpoint"),
            ("etcd = [\"e:2379\"]", "not an http:// or https://"),
            (
                "etcd = [\"http://e:2379\"]\nfailover_after = \"2s\"",
                "minimum of 3s",
            ),
            (
                "etcd = [\"http://e:2379\"]\nname = \"a/b\"",
                "name = \"a/b\"",
            ),
            ("etcd = [\"http://e:2379\"]\ncluster = \"\"", "cluster"),
            ("etcd = [\"http://e:2379\"]\nprefix = \"x/\"", "prefix"),
            (
                "etcd = [\"http://e:2379\"]\nfailover_after = \"3500ms\"",
                "whole number of seconds",
            ),
        ];
        for (text, want) in bad {
            let e = parse(text).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(parse("etcd = [\"http://e:2379\"]\nzz = 1").is_err());
    }
}
