//! How a member reaches etcd: plain HTTP, or TLS (`https://` endpoints, `[cluster.tls]`: an
//! internal CA and a client certificate for etcd's `--client-cert-auth`), with etcd's own
//! authentication when `username` and `password` are set.
//!
//! The files are checked with the same reader every other `tls` table uses
//! ([`crate::tls::client_config`]), so `sitewatch check` names a bad `ca_file` or key the same
//! way; the etcd client (tonic) then gets the PEM as it is. The system's roots are trusted
//! besides `ca_file`, as for the other tables.

use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::config::{ClusterConfig, ClusterConfigError};

/// The client options every sitewatch etcd connection uses: a connect timeout; requests
/// refused by an etcd member that has lost its quorum's leader (it would answer from a
/// stale view otherwise); TLS and credentials as `[cluster]` says.
pub fn connect_options(
    cfg: &ClusterConfig,
    timeout: Duration,
) -> Result<ConnectOptions, ClusterConfigError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_require_leader(true);
    if cfg.uses_tls() {
        options = options.with_tls(tls_options(cfg)?);
    }
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        let password = password
            .resolve()
            .map_err(|e| ClusterConfigError::Password(e.to_string()))?;
        options = options.with_user(user.as_str(), password);
    }
    Ok(options)
}

/// Checks the TLS files and the password without connecting (for `sitewatch check` and
/// start-up).
pub fn check(cfg: &ClusterConfig) -> Result<(), ClusterConfigError> {
    connect_options(cfg, Duration::from_secs(1)).map(|_| ())
}

fn tls_options(cfg: &ClusterConfig) -> Result<TlsOptions, ClusterConfigError> {
    let url = cfg.etcd.first().map(String::as_str).unwrap_or_default();
    crate::tls::client_config(cfg.tls.as_ref(), "cluster.tls", url)
        .map_err(|e| ClusterConfigError::Tls(e.to_string()))?;
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            ClusterConfigError::Tls(format!("{key} ({}): cannot read: {e}", path.display()))
        })
    };
    let mut tls = TlsOptions::new().with_native_roots();
    if let Some(t) = &cfg.tls {
        if let Some(ca) = &t.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read("ca_file", ca)?));
        }
        if let (Some(cert), Some(key)) = (&t.client_cert, &t.client_key) {
            tls = tls.identity(Identity::from_pem(
                read("client_cert", cert)?,
                read("client_key", key)?,
            ));
        }
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClusterConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn endpoints_credentials_and_tls_files_are_checked() {
        let err = |t: &str| parse(t).validate().unwrap_err().to_string();
        assert!(err("etcd = [\"http://a:2379\", \"https://b:2379\"]").contains("all endpoints"));
        assert!(err("etcd = [\"http://a:2379\"]\n[tls]\nca_file = \"/x\"").contains("https://"));
        assert!(
            err("etcd = [\"https://a:2379\"]\n[tls]\ninsecure_skip_verify = true")
                .contains("not supported for etcd")
        );
        assert!(err("etcd = [\"http://a:2379\"]\nusername = \"sw\"").contains("without password"));
        assert!(err("etcd = [\"ftp://a\"]").contains("https://HOST:PORT"));
        let missing =
            parse("etcd = [\"https://a:2379\"]\n[tls]\nca_file = \"/nonexistent/ca.pem\"");
        missing.validate().unwrap();
        let e = check(&missing).unwrap_err().to_string();
        assert!(
            e.contains("cluster.tls.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        // Plain HTTP with credentials needs no files.
        let plain = parse("etcd = [\"http://a:2379\"]\nusername = \"sw\"\npassword = { env = \"SW_TEST_NO_SUCH_VAR\" }");
        assert!(check(&plain).unwrap_err().to_string().contains("password"));
    }
}
