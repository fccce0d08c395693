//! The Debian package, as a data-center host gets it: `cargo deb` packs the binary this test
//! run built (no second, release build: `--no-build --profile dev`), `dpkg -i` installs it
//! system-wide, the files, the `sitewatch` user and the state directory are checked, the
//! installed example config passes `sitewatch check` run as the service user from another
//! folder (mappings and rules found in /usr/share/sitewatch), a second `dpkg -i` shows the
//! maintainer scripts are idempotent, and `dpkg --purge` leaves the machine as it was. The
//! compose stack's config is checked on the same layout (the image copies the package's).
//!
//! Needs root (CI runs as root) or password-less sudo, dpkg, and cargo-deb
//! (`cargo install --locked cargo-deb@3.8.0`, done by tests/run.sh).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{require_binary, sitewatch_bin};

const CARGO_DEB_VERSION: &str = "3.8.0";
const INSTALL_CARGO_DEB: &str = "cargo install --locked cargo-deb@3.8.0";

/// `cmd` as root: directly when the test runs as root, else through `sudo -n`.
fn as_root(program: &str) -> Command {
    if euid() == 0 {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(program);
        c
    }
}

fn euid() -> u32 {
    // The owner of /proc/self is this process's (effective) user; no libc call needed.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", "sitewatch"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout != b"not-installed")
}

/// Purges the package (and the user, when the test made it) even when an assertion fails.
struct Installed {
    user_was_there: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = as_root("dpkg").args(["--purge", "sitewatch"]).output();
        if !self.user_was_there {
            let _ = as_root("userdel").arg("sitewatch").output();
            let _ = as_root("groupdel").arg("sitewatch").output();
        }
    }
}

fn files_in(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

#[test]
fn deb_installs_checks_and_purges() {
    require_binary("dpkg", "dpkg");
    require_binary("adduser", "adduser");
    assert!(
        euid() == 0
            || Command::new("sudo")
                .args(["-n", "true"])
                .status()
                .is_ok_and(|s| s.success()),
        "installing the .deb needs root: run the tests as root (CI does) or with password-less sudo"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let version = Command::new(&cargo).args(["deb", "--version"]).output();
    let version = match version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!("cargo-deb is not installed. Install it with: {INSTALL_CARGO_DEB}"),
    };
    assert!(
        version.ends_with(CARGO_DEB_VERSION),
        "cargo-deb {CARGO_DEB_VERSION} expected (the one tests/run.sh installs), found {version:?}: {INSTALL_CARGO_DEB} --force"
    );
    assert!(
        !package_installed(),
        "a sitewatch package is already installed here; this test installs and purges its own: \
         run it on a build machine, or `dpkg --purge sitewatch` first"
    );

    // The binary this test run built: target/<profile dir>/sitewatch.
    let bin = sitewatch_bin();
    let profile_dir = bin.parent().expect("binary in a profile folder");
    let target_dir = profile_dir
        .parent()
        .expect("profile folder in a target folder");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("unexpected binary path {}", bin.display()),
    };
    let out_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let built = run(
        Command::new(&cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target_dir)
            .args([
                "deb",
                "--no-build",
                "--fast",
                "--profile",
                &profile,
                "--output",
            ])
            .arg(out_dir.path()),
        "cargo deb",
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim().to_string());
    assert!(deb.is_file(), "cargo deb printed {deb:?}, not a file");
    eprintln!(
        "cargo deb: {} ({} bytes) in {:.1} s",
        deb.display(),
        std::fs::metadata(&deb).unwrap().len(),
        started.elapsed().as_secs_f64()
    );

    let guard = Installed {
        user_was_there: user_exists("sitewatch"),
    };
    let env_noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    run(
        as_root("dpkg").envs(env_noninteractive).arg("-i").arg(&deb),
        "dpkg -i",
    );

    // Files in place.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "/usr/bin/sitewatch",
        "/usr/lib/systemd/system/sitewatch.service",
        "/etc/sitewatch/sitewatch.toml",
        "/usr/share/doc/sitewatch/sitewatch.example.toml",
        "/usr/share/sitewatch/grafana/provisioning/dashboards/sitewatch.yaml",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    for (installed, source, ext) in [
        (
            "/usr/share/sitewatch/mappings/snmp",
            "mappings/snmp",
            ".toml",
        ),
        (
            "/usr/share/sitewatch/mappings/modbus",
            "mappings/modbus",
            ".toml",
        ),
        (
            "/usr/share/sitewatch/mappings/mqtt",
            "mappings/mqtt",
            ".toml",
        ),
        ("/usr/share/sitewatch/rules", "deploy/rules", ".toml"),
        (
            "/usr/share/sitewatch/grafana/dashboards",
            "deploy/grafana/dashboards",
            ".json",
        ),
    ] {
        let want = files_in(&repo.join(source), ext);
        assert!(!want.is_empty(), "{source} has no {ext} files");
        assert_eq!(files_in(Path::new(installed), ext), want, "{installed}");
    }
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/sitewatch.service").unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "StateDirectory=sitewatch",
        "StateDirectoryMode=0750",
        "ProtectSystem=strict",
        "ExecStart=/usr/bin/sitewatch run --config /etc/sitewatch/sitewatch.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line:?}");
    }
    // systemd's own parser: an unknown key or a missing ExecStart binary is only a warning
    // to systemd (the setting is silently ignored), so any line about the unit fails here.
    let verify = run(
        Command::new(require_binary("systemd-analyze", "systemd"))
            .args(["verify", "/usr/lib/systemd/system/sitewatch.service"]),
        "systemd-analyze verify",
    );
    let complaints: Vec<String> = String::from_utf8_lossy(&verify.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&verify.stdout).lines())
        .filter(|l| l.contains("sitewatch"))
        .map(str::to_string)
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );
    let conffiles = run(
        Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "sitewatch"]),
        "dpkg-query",
    );
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/sitewatch/sitewatch.toml"),
        "the config is not a conffile: {}",
        String::from_utf8_lossy(&conffiles.stdout)
    );

    // The system user, its group and the state directory.
    let passwd = run(
        Command::new("getent").args(["passwd", "sitewatch"]),
        "getent passwd sitewatch",
    );
    let passwd = String::from_utf8_lossy(&passwd.stdout).trim().to_string();
    let fields: Vec<&str> = passwd.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/sitewatch", "{passwd}");
    assert!(fields[6].ends_with("nologin"), "{passwd}");
    let state = std::fs::metadata("/var/lib/sitewatch").expect("/var/lib/sitewatch");
    assert!(state.is_dir());
    assert_eq!(
        state.uid(),
        uid,
        "/var/lib/sitewatch not owned by sitewatch"
    );
    assert_eq!(state.permissions().mode() & 0o777, 0o750);
    let config = std::fs::metadata("/etc/sitewatch/sitewatch.toml").unwrap();
    assert_eq!(config.permissions().mode() & 0o777, 0o640);
    assert_eq!(config.uid(), 0);

    // `check` as the service user, from a folder that is not the repository, with no
    // SITEWATCH_HOME: the installed mappings and rules are found where the package put them.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let check = run(
        as_root("runuser")
            .current_dir(elsewhere.path())
            .env_remove("SITEWATCH_HOME")
            .args([
                "-u",
                "sitewatch",
                "--",
                "/usr/bin/sitewatch",
                "check",
                "--config",
            ])
            .arg("/etc/sitewatch/sitewatch.toml"),
        "sitewatch check on the installed config",
    );
    let stdout = String::from_utf8_lossy(&check.stdout);
    // `check` prints OK last, after every warning (the shipped example names no SNMP
    // target, so rules on device measurements are warned about).
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("/etc/sitewatch/sitewatch.toml: OK")),
        "{stdout}"
    );
    let profiles = files_in(&repo.join("mappings/snmp"), ".toml").len();
    assert!(
        stdout.contains(&format!("snmp: 0 target(s), {profiles} profile(s)")),
        "check did not load the {profiles} installed SNMP profiles:\n{stdout}"
    );
    let rules_line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("rules: "))
        .unwrap_or_else(|| panic!("no rules line:\n{stdout}"));
    assert!(
        rules_line.parse::<usize>().unwrap() > 0,
        "no shipped rules loaded:\n{stdout}"
    );
    // The compose stack's config, laid out as the image lays it out (the same /usr/share
    // paths as the package, STATE_DIRECTORY on the volume): it passes check too.
    let image_etc = tempfile::tempdir().unwrap();
    let compose_cfg = image_etc.path().join("sitewatch.toml");
    std::fs::copy(repo.join("deploy/compose/sitewatch.toml"), &compose_cfg).unwrap();
    let compose = run(
        Command::new("/usr/bin/sitewatch")
            .current_dir(elsewhere.path())
            .env("STATE_DIRECTORY", elsewhere.path())
            .args(["check", "--config"])
            .arg(&compose_cfg),
        "sitewatch check on deploy/compose/sitewatch.toml with the image's layout",
    );
    let compose_out = String::from_utf8_lossy(&compose.stdout);
    assert!(
        compose_out.contains(&format!("snmp: 0 target(s), {profiles} profile(s)")),
        "{compose_out}"
    );
    assert!(
        compose_out.contains(&format!("rules: {rules_line}")),
        "{compose_out}"
    );

    // `profile test` from elsewhere finds the installed profiles too.
    let recording = repo.join("tests/data/snmprec/apc-ups.snmprec");
    let offline = run(
        Command::new("/usr/bin/sitewatch")
            .current_dir(elsewhere.path())
            .env_remove("SITEWATCH_HOME")
            .args(["profile", "test"])
            .arg(&recording),
        "sitewatch profile test with the installed profiles",
    );
    assert!(
        String::from_utf8_lossy(&offline.stdout).contains("# profiles: "),
        "{}",
        String::from_utf8_lossy(&offline.stdout)
    );

    // Installing again (an upgrade to the same version) keeps the user and the state.
    run(
        as_root("touch").arg("/var/lib/sitewatch/marker"),
        "touch a state file",
    );
    run(
        as_root("dpkg").envs(env_noninteractive).arg("-i").arg(&deb),
        "dpkg -i (again)",
    );
    let again = run(
        Command::new("getent").args(["passwd", "sitewatch"]),
        "getent passwd sitewatch",
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), passwd);
    assert!(
        Path::new("/var/lib/sitewatch/marker").exists(),
        "reinstall lost the state"
    );

    // Remove keeps config and state; purge takes both.
    run(
        as_root("dpkg").args(["--remove", "sitewatch"]),
        "dpkg --remove",
    );
    assert!(!Path::new("/usr/bin/sitewatch").exists());
    assert!(Path::new("/etc/sitewatch/sitewatch.toml").exists());
    assert!(Path::new("/var/lib/sitewatch").exists());
    run(
        as_root("dpkg").args(["--purge", "sitewatch"]),
        "dpkg --purge",
    );
    assert!(!Path::new("/etc/sitewatch/sitewatch.toml").exists());
    assert!(!Path::new("/var/lib/sitewatch").exists());
    assert!(!Path::new("/usr/share/sitewatch").exists());
    assert!(!package_installed());
    // The user stays after purge (Debian keeps system users); the guard removes it only
    // when this test made it.
    assert!(user_exists("sitewatch"), "purge removed the sitewatch user");
    drop(guard);
}
