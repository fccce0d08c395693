//! The shipped mappings are found wherever sitewatch runs from: `profile test` (the offline
//! half of `probe`, same `--profiles-dir` lookup) and `check` from a folder that is not the
//! repository, through `$SITEWATCH_HOME`; and when they are found nowhere, the error lists
//! every place tried.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::sitewatch_bin;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sitewatch(cwd: &Path, home: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(sitewatch_bin());
    cmd.current_dir(cwd).args(args).env_remove("SITEWATCH_HOME");
    if let Some(h) = home {
        cmd.env("SITEWATCH_HOME", h);
    }
    cmd.output().expect("run sitewatch")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn profile_test_from_another_folder_uses_sitewatch_home() {
    let elsewhere = tempfile::tempdir().unwrap();
    let recording = repo().join("tests/data/snmprec/apc-ups.snmprec");
    let rec = recording.to_str().unwrap();
    let out = sitewatch(elsewhere.path(), Some(repo()), &["profile", "test", rec]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("# profiles: apc-ups"), "{}", text(&out));

    // Found nowhere: the error names each place, in order. (A host with the package installed
    // has /usr/share/sitewatch/mappings/snmp, which is then rightly used.)
    let empty_home = tempfile::tempdir().unwrap();
    let out = sitewatch(
        elsewhere.path(),
        Some(empty_home.path()),
        &["profile", "test", "--profiles-dir", "nowhere/snmp", rec],
    );
    if Path::new("/usr/share/sitewatch/mappings/snmp").is_dir() {
        assert!(out.status.success(), "{}", text(&out));
    } else {
        assert!(!out.status.success(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tried = [
            "nowhere/snmp".to_string(),
            empty_home
                .path()
                .join("mappings/snmp")
                .display()
                .to_string(),
            "/usr/share/sitewatch/mappings/snmp".to_string(),
            "../share/sitewatch/mappings/snmp".to_string(),
        ];
        let mut at = 0;
        for place in &tried {
            let found = stderr[at..]
                .find(place.as_str())
                .unwrap_or_else(|| panic!("{place} not listed (in order):\n{stderr}"));
            at += found + place.len();
        }
        assert!(stderr.contains("--profiles-dir"), "{stderr}");
        assert!(stderr.contains("SITEWATCH_HOME"), "{stderr}");
    }
}

#[test]
fn check_finds_profiles_and_maps_through_sitewatch_home() {
    // A config with the default profiles_dir and maps_dir, in a folder without mappings.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sitewatch.toml");
    std::fs::write(
        &config,
        r#"
[influx]
url = "http://127.0.0.1:8086"
database = "lookup"

[snmp]

[modbus]

[[modbus.device]]
name = "meter-1"
address = "127.0.0.1:5020"
map = "eastron-sdm630"
"#,
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let out = sitewatch(dir.path(), Some(repo()), &["check", "--config", cfg]);
    assert!(out.status.success(), "{}", text(&out));
    let profiles = std::fs::read_dir(repo().join("mappings/snmp"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .count();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("snmp: 0 target(s), {profiles} profile(s)")),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("modbus: "), "{}", text(&out));

    if !Path::new("/usr/share/sitewatch/mappings").is_dir() {
        let empty_home = tempfile::tempdir().unwrap();
        let out = sitewatch(
            dir.path(),
            Some(empty_home.path()),
            &["check", "--config", cfg],
        );
        assert!(!out.status.success(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("[snmp] profiles_dir: no snmp mappings folder found; tried "),
            "{stderr}"
        );
        assert!(
            stderr.contains(&dir.path().join("mappings/snmp").display().to_string()),
            "{stderr}"
        );
    }
}
