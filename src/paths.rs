//! Where relative paths from the config and the command line end up: writable state under
//! systemd's state directory, and the shipped mappings wherever sitewatch runs from.
//!
//! - Writable paths (`[rules] state_file`, `[influx] spool_dir`): the shipped unit runs with
//!   `ProtectSystem=strict`, so the config's folder (/etc/sitewatch) is read-only there. When
//!   systemd sets `$STATE_DIRECTORY` (from `StateDirectory=`), relative writable paths resolve
//!   under it; otherwise under the config file's folder, as every other relative path.
//! - Mappings (SNMP profiles, Modbus register maps): a relative folder that does not exist
//!   where the config (or the working directory, for `probe`) points is looked up in the
//!   places a package, `$SITEWATCH_HOME` or an unpacked tarball puts them, see
//!   [`mapping_candidates`].

use std::path::{Path, PathBuf};

/// Set by systemd for `StateDirectory=` (colon-separated when several are configured).
pub const STATE_DIRECTORY_ENV: &str = "STATE_DIRECTORY";
/// A sitewatch tree (`$SITEWATCH_HOME/mappings/snmp`, ...) outside the package locations.
pub const HOME_ENV: &str = "SITEWATCH_HOME";
/// Where the Debian package installs the mappings.
pub const SYSTEM_MAPPINGS: &str = "/usr/share/sitewatch/mappings";

/// The first directory of `$STATE_DIRECTORY`, when systemd set one.
pub fn state_directory() -> Option<PathBuf> {
    let value = std::env::var_os(STATE_DIRECTORY_ENV)?;
    std::env::split_paths(&value)
        .find(|p| !p.as_os_str().is_empty())
        .filter(|p| p.is_absolute())
}

/// Joins a relative `p` to `base`; an absolute `p` stays as it is.
pub fn under(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A mappings folder that exists nowhere it was looked for.
#[derive(Debug, thiserror::Error)]
#[error("no {kind} mappings folder found; tried {}: pass an absolute path, set {HOME_ENV} to a sitewatch tree holding mappings/{kind}, or install the sitewatch package", list(tried))]
pub struct MappingsNotFound {
    pub kind: String,
    pub tried: Vec<PathBuf>,
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The places a mappings folder is looked for, in order: `configured` under `base` (the
/// config file's folder, or the working directory for the command line), then
/// `$SITEWATCH_HOME/mappings/<kind>`, `/usr/share/sitewatch/mappings/<kind>` and
/// `<binary's folder>/../share/sitewatch/mappings/<kind>`. An absolute `configured` is the
/// only candidate: the operator named it.
pub fn mapping_candidates(kind: &str, configured: &Path, base: &Path) -> Vec<PathBuf> {
    let mut out = vec![under(base, configured)];
    if configured.is_absolute() {
        return out;
    }
    if let Some(home) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
        out.push(Path::new(&home).join("mappings").join(kind));
    }
    out.push(Path::new(SYSTEM_MAPPINGS).join(kind));
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        out.push(bin_dir.join("../share/sitewatch/mappings").join(kind));
    }
    out
}

/// The first of [`mapping_candidates`] that is a directory.
pub fn find_mappings(
    kind: &str,
    configured: &Path,
    base: &Path,
) -> Result<PathBuf, MappingsNotFound> {
    let tried = mapping_candidates(kind, configured, base);
    match tried.iter().find(|p| p.is_dir()) {
        Some(found) => Ok(found.clone()),
        None => Err(MappingsNotFound {
            kind: kind.to_string(),
            tried,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_folder_wins_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("maps/snmp")).unwrap();
        let found = find_mappings("snmp", Path::new("maps/snmp"), dir.path()).unwrap();
        assert_eq!(found, dir.path().join("maps/snmp"));
    }

    #[test]
    fn absolute_folder_is_the_only_candidate() {
        let c = mapping_candidates("snmp", Path::new("/nowhere/snmp"), Path::new("/etc"));
        assert_eq!(c, vec![PathBuf::from("/nowhere/snmp")]);
    }

    #[test]
    fn missing_folder_lists_every_place_tried() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_mappings("snmp", Path::new("/nowhere/snmp"), dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nowhere/snmp"), "{text}");
        assert!(text.contains(HOME_ENV), "{text}");
        let rel = mapping_candidates("modbus", Path::new("m/modbus"), dir.path());
        assert_eq!(rel[0], dir.path().join("m/modbus"));
        assert!(rel.contains(&PathBuf::from("/usr/share/sitewatch/mappings/modbus")));
        assert!(rel
            .last()
            .unwrap()
            .ends_with("../share/sitewatch/mappings/modbus"));
    }
}
