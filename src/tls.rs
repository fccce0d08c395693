//! TLS trust for every outgoing connection: the InfluxDB sink (and `rules test`, which reads
//! through it), Prometheus remote write, each alert receiver and the MQTT broker. One `tls`
//! table, the same keys everywhere:
//!
//! ```toml
//! [influx.tls]
//! ca_file = "/etc/sitewatch/internal-ca.pem"   # PEM, one or more CA certificates
//! client_cert = "/etc/sitewatch/client.pem"    # mutual TLS: certificate chain (PEM) ...
//! client_key = "/etc/sitewatch/client.key"     # ... and its key (PKCS#8, PKCS#1 or SEC1)
//! # insecure_skip_verify = true                # accept any certificate: testing only
//! ```
//!
//! Trusted: the system's root certificates (rustls-native-certs, which honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`), or Mozilla's list (webpki-roots) where the system has
//! none, plus every certificate in `ca_file`. Data centers sign their InfluxDB, Alertmanager
//! and webhook endpoints with an internal CA, which `ca_file` adds without losing the public
//! roots that PagerDuty and Slack need. The stack is rustls with ring (deny.toml bans the
//! others).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;

/// A `tls` table. Every key is optional: without the table (or with an empty one) the
/// default roots are trusted and no client certificate is sent.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of one or more CA certificates trusted besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) for `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate (expired, self-signed, for another name): no protection
    /// against an impostor. Logged as a warning at every start and by `sitewatch check`.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A `tls` table that cannot be used: which key, which file, what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{table}.{key} ({path}): {problem}")]
pub struct TlsError {
    /// Where the table is, e.g. `influx.tls`.
    pub table: String,
    pub key: &'static str,
    pub path: String,
    pub problem: String,
}

/// The rustls client configuration for a `tls` table (None: defaults) at `table` (e.g.
/// `influx.tls`, used in errors) for a connection to `url` (named in the insecure warning).
/// Reads the PEM files now, so a bad file stops start-up and `sitewatch check`.
pub fn client_config(
    tls: Option<&TlsConfig>,
    table: &str,
    url: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    let default = TlsConfig::default();
    let tls = tls.unwrap_or(&default);
    let err = |key: &'static str, path: &Path, problem: String| TlsError {
        table: table.to_string(),
        key,
        path: path.display().to_string(),
        problem,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("ca_file", Path::new("-"), e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        warn_insecure(table, url);
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
    } else {
        let mut roots = RootCertStore {
            roots: default_roots().to_vec(),
        };
        if let Some(path) = &tls.ca_file {
            let certs = read_certs(path).map_err(|p| err("ca_file", path, p))?;
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(err(
                    "ca_file",
                    path,
                    format!("none of its {ignored} certificates is a usable CA certificate"),
                ));
            }
        }
        if roots.is_empty() {
            return Err(err(
                "ca_file",
                Path::new("(unset)"),
                "no root certificates to trust: set it to the CA that signs the server".into(),
            ));
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert).map_err(|p| err("client_cert", cert, p))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                err(
                    "client_key",
                    key,
                    format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| err("client_key", key, format!("does not fit client_cert: {e}")))
        }
        (Some(cert), None) => Err(err(
            "client_key",
            Path::new("(unset)"),
            format!(
                "is missing: client_cert {} needs the private key that goes with it",
                cert.display()
            ),
        )),
        (None, Some(key)) => Err(err(
            "client_cert",
            Path::new("(unset)"),
            format!(
                "is missing: client_key {} needs the certificate that goes with it",
                key.display()
            ),
        )),
        (None, None) => Ok(builder.with_no_client_auth()),
    }
}

/// A reqwest client builder that speaks TLS as the `tls` table says (see [`client_config`]);
/// the caller adds its timeouts and user agent.
pub fn http_client_builder(
    tls: Option<&TlsConfig>,
    table: &str,
    url: &str,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let config = client_config(tls, table, url)?;
    Ok(reqwest::Client::builder().use_preconfigured_tls(config))
}

/// What `sitewatch check` says about a `tls` table (None when there is nothing to say).
pub fn check_warning(tls: Option<&TlsConfig>, table: &str, url: &str) -> Option<String> {
    tls.filter(|t| t.insecure_skip_verify).map(|_| {
        format!(
            "{table}.insecure_skip_verify = true: the certificate of {url} is not verified; \
             set {table}.ca_file to its CA instead"
        )
    })
}

/// What to do about a failed connection when TLS was the reason: the certificate problem
/// and the `tls` key (at `table`) that fixes it. None for errors that are not about TLS.
pub fn failure_hint(e: &(dyn std::error::Error + 'static), table: &str) -> Option<String> {
    let tls_error = std::iter::successors(Some(e), |e| e.source()).find_map(rustls_error)?;
    Some(match tls_error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's certificate is signed by an unknown issuer (not a system root): set \
             {table}.ca_file to the PEM file of the CA that signed it"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's certificate is not for this host name: use a URL with a name the \
             certificate lists (or have the certificate reissued)"
            .to_string(),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's certificate has expired: renew it on the server".to_string(),
        rustls::Error::InvalidCertificate(other) => format!(
            "the server's certificate is not accepted ({other:?}): check it, or set \
             {table}.ca_file to the CA that signed it"
        ),
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)
        | rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate)
        | rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA) => format!(
            "the server refused the client certificate (or wants one): set {table}.client_cert \
             and {table}.client_key to a certificate its CA signed"
        ),
        other => format!("TLS handshake failed ({other}): check the {table} table"),
    })
}

/// Why a request could not be sent, for the `kind` of metrics and for logs: `"tls"` with the
/// [`failure_hint`] for a certificate problem (the operator's to fix: say which key at
/// `table` fixes it), else `"timeout"` or `"transport"`; with the error and its causes.
pub fn send_failure(e: &reqwest::Error, table: &str) -> (&'static str, String) {
    let chain = crate::text::error_chain(e);
    match failure_hint(e, table) {
        Some(hint) => ("tls", format!("{hint} ({chain})")),
        None if e.is_timeout() => ("timeout", chain),
        None => ("transport", chain),
    }
}

/// The rustls error in `e`, also inside (nested) `io::Error`s: hyper-rustls hands reqwest
/// `io::Error(Other, io::Error(InvalidData, rustls::Error))`, and `io::Error::source` skips
/// the error it wraps.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

/// `insecure_skip_verify` warnings of clients built before logging was set up (the service
/// builds its sinks and receivers while loading the config); see [`log_deferred_warnings`].
static DEFERRED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn warn_insecure(table: &str, url: &str) {
    if tracing::dispatcher::has_been_set() {
        log_insecure(table, url);
    } else {
        DEFERRED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((table.to_string(), url.to_string()));
    }
}

fn log_insecure(table: &str, url: &str) {
    tracing::warn!(
        component = table,
        url,
        "{table}.insecure_skip_verify = true: the certificate of {url} is NOT verified, anyone \
         on the path can impersonate the server; set {table}.ca_file to its CA instead"
    );
}

/// Logs the `insecure_skip_verify` warnings of clients built before logging was set up: call
/// once the subscriber is installed, so every start says it.
pub fn log_deferred_warnings() {
    let pending = std::mem::take(&mut *DEFERRED.lock().unwrap_or_else(|p| p.into_inner()));
    for (table, url) in pending {
        log_insecure(&table, &url);
    }
}

/// The system's roots, or Mozilla's where the system has none; read once per process.
fn default_roots() -> &'static [rustls::pki_types::TrustAnchor<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::TrustAnchor<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "problem loading a system root certificate");
        }
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(native.certs);
        if store.is_empty() {
            tracing::warn!(
                "no system root certificates (install ca-certificates, or set SSL_CERT_FILE); \
                 trusting Mozilla's built-in list"
            );
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        store.roots
    })
}

/// Every certificate of a PEM file; an empty or unreadable file is an error.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake signatures are
/// still checked (they prove the server holds the key of the certificate it sent).
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tls: &TlsConfig) -> String {
        client_config(Some(tls), "influx.tls", "https://db.test")
            .unwrap_err()
            .to_string()
    }

    // Files that load (a CA, a client identity) are covered by tests/tls.rs, with a test PKI
    // and real servers.
    #[test]
    fn bad_files_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a pem").unwrap();

        let e = message(&TlsConfig {
            ca_file: Some(garbage.clone()),
            ..TlsConfig::default()
        });
        assert!(
            e.starts_with("influx.tls.ca_file (") && e.contains("garbage.pem"),
            "{e}"
        );
        assert!(e.contains("no PEM certificate"), "{e}");

        let e = message(&TlsConfig {
            ca_file: Some(dir.path().join("missing.pem")),
            ..TlsConfig::default()
        });
        assert!(
            e.contains("influx.tls.ca_file") && e.contains("missing.pem"),
            "{e}"
        );

        let e = message(&TlsConfig {
            client_cert: Some(garbage.clone()),
            ..TlsConfig::default()
        });
        assert!(
            e.contains("influx.tls.client_key") && e.contains("is missing"),
            "{e}"
        );

        let e = message(&TlsConfig {
            client_key: Some(garbage.clone()),
            ..TlsConfig::default()
        });
        assert!(
            e.contains("influx.tls.client_cert") && e.contains("is missing"),
            "{e}"
        );

        let e = message(&TlsConfig {
            client_cert: Some(garbage.clone()),
            client_key: Some(garbage),
            ..TlsConfig::default()
        });
        assert!(e.starts_with("influx.tls.client_cert ("), "{e}");
    }

    #[test]
    fn insecure_is_reported_by_check() {
        let on = TlsConfig {
            insecure_skip_verify: true,
            ..TlsConfig::default()
        };
        let w = check_warning(
            Some(&on),
            "remote_write.tls",
            "https://vm.test/api/v1/write",
        )
        .unwrap();
        assert!(
            w.contains("remote_write.tls.insecure_skip_verify")
                && w.contains("https://vm.test/api/v1/write"),
            "{w}"
        );
        assert_eq!(check_warning(None, "influx.tls", "https://x"), None);
        assert_eq!(
            check_warning(Some(&TlsConfig::default()), "influx.tls", "https://x"),
            None
        );
        assert!(client_config(Some(&on), "remote_write.tls", "https://vm.test").is_ok());
    }

    #[test]
    fn hints_name_the_option_to_set() {
        // As hyper-rustls wraps it.
        let unknown = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        let hint = failure_hint(&unknown, "influx.tls").unwrap();
        assert!(
            hint.contains("unknown issuer") && hint.contains("influx.tls.ca_file"),
            "{hint}"
        );
        let refused = std::io::Error::other("connection refused");
        assert_eq!(failure_hint(&refused, "influx.tls"), None);
    }
}
