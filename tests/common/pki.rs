//! A throwaway PKI made with the `openssl` command line tool at test time (no key material in
//! the repository): a CA, a server certificate it signs for `localhost` and 127.0.0.1, a
//! client certificate it signs, and a second CA that signs nothing (for negative tests).
//! All files are PEM in the given dir; the certificates are valid for 2 days.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::influx::parse_answer;
use super::require_binary;

pub struct TestPki {
    pub ca_file: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca_file: PathBuf,
}

impl TestPki {
    /// Where [`TestPki::make`] writes the server certificate in `dir`.
    pub fn server_cert(dir: &Path) -> PathBuf {
        dir.join("server.crt")
    }

    /// Where [`TestPki::make`] writes the server's private key in `dir`.
    pub fn server_key(dir: &Path) -> PathBuf {
        dir.join("server.key")
    }

    pub fn make(dir: &Path) -> TestPki {
        let openssl = require_binary("openssl", "openssl");
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=sitewatch test {ca}"),
            );
            let mut args = vec![
                "req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt,
            ];
            args.extend(ec);
            run(&args);
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("write client.ext");
        for (name, cn) in [("server", "localhost"), ("client", "sitewatch-client")] {
            let (key, csr, crt, ext, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
                format!("/CN={cn}"),
            );
            let mut args = vec!["req", "-subj", &subj, "-keyout", &key, "-out", &csr];
            args.extend(ec);
            run(&args);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ]);
        }
        TestPki {
            ca_file: dir.join("ca.crt"),
            server_cert: Self::server_cert(dir),
            server_key: Self::server_key(dir),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            other_ca_file: dir.join("other-ca.crt"),
        }
    }

    /// A harness client config that trusts exactly this CA and, `with_identity`, presents the
    /// client certificate.
    pub fn client_config(&self, with_identity: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_file).expect("read CA") {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        Arc::new(if with_identity {
            let chain = CertificateDer::pem_file_iter(&self.client_cert)
                .expect("read client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_file(&self.client_key).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        } else {
            builder.with_no_client_auth()
        })
    }
}

/// Like `influx::http` over TLS, trusting what `tls` trusts (the server is 127.0.0.1).
pub fn https(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let tcp = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name =
        rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(
        s,
        "{method} {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(parse_answer(&raw))
}
