//! A throwaway PKI made with the `openssl` command line tool at test time (no key material in
//! the repository): a CA, a server certificate it signs for `localhost` and 127.0.0.1, a
//! client certificate it signs, and a second CA that signs nothing (for negative tests).
//! All files are PEM in the given dir; the certificates are valid for 2 days.

use std::path::{Path, PathBuf};
use std::process::Command;

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
}
