//! Where the rule files are: the `[rules]` table of the main config, glob expansion
//! ([`RulesConfig::resolve`]) and reading every file ([`load_rule_files`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

use super::error::RulesError;
use super::validate::parse_rule_file;
use super::RuleSet;

/// The `[rules]` table of the main config.
///
/// ```toml
/// [rules]
/// files = ["rules/*.toml"]
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Glob patterns, relative to the main config file's directory unless absolute.
    #[serde(default)]
    pub files: Vec<String>,
    /// Where alarm state is kept across restarts (JSON, written atomically every 30 s and on
    /// shutdown); relative to the main config file's directory unless absolute. Without it a
    /// restart forgets which alarms are firing.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// How often rule files are checked for changes (mtime and size) and reloaded; "0s"
    /// turns file watching off (SIGHUP still reloads). Default 5 s.
    #[serde(default, with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
    /// Samples stamped further ahead of the clock than this are not evaluated (counted in
    /// `sitewatch_rules_future_samples_total`; they are still stored): one sample from a
    /// device with a clock a year ahead must not make every later, correct sample of its
    /// series look out of order. Default 5 min.
    #[serde(default, with = "humantime_serde")]
    pub max_future_skew: Option<Duration>,
}

/// Default for [`RulesConfig::watch_interval`].
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// Default for [`RulesConfig::max_future_skew`].
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(300);

impl RulesConfig {
    /// Expands the patterns into a sorted, de-duplicated list of files. A pattern that matches
    /// nothing is an error: a typo must not silently disable every alarm.
    pub fn resolve(&self, base_dir: &Path) -> Result<Vec<PathBuf>, RulesError> {
        let mut out = Vec::new();
        for pattern in &self.files {
            let found = expand_pattern(pattern, base_dir)?;
            if found.is_empty() {
                return Err(RulesError::NoMatch {
                    pattern: pattern.clone(),
                    base: base_dir.to_path_buf(),
                });
            }
            out.extend(found);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The state file with the base directory applied, if one is configured.
    pub fn state_path(&self, base_dir: &Path) -> Option<PathBuf> {
        self.state_file.as_ref().map(|p| base_dir.join(p))
    }

    pub fn watch_every(&self) -> Option<Duration> {
        match self.watch_interval {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(DEFAULT_WATCH_INTERVAL),
        }
    }
}

fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Deepest directory level a `**` pattern descends to; guards against symlink loops.
const MAX_WALK_DEPTH: usize = 32;

fn expand_pattern(pattern: &str, base_dir: &Path) -> Result<Vec<PathBuf>, RulesError> {
    let pattern_path = Path::new(pattern);
    if !has_glob_meta(pattern) {
        let full = base_dir.join(pattern_path);
        return Ok(if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        });
    }
    // Walk only below the literal prefix of the pattern, and only as deep as it can reach. The
    // glob is matched against the path below that prefix, so glob characters in the config
    // directory's own name do not matter.
    let mut prefix = PathBuf::new();
    let mut rest = Vec::new();
    for comp in pattern_path.components() {
        let s = comp.as_os_str().to_string_lossy();
        if rest.is_empty() && !has_glob_meta(&s) {
            prefix.push(comp);
        } else {
            rest.push(s.into_owned());
        }
    }
    let root = base_dir.join(prefix);
    let max_depth = if rest.iter().any(|c| c.contains("**")) {
        MAX_WALK_DEPTH
    } else {
        rest.len()
    };
    let matcher = GlobBuilder::new(&rest.join("/"))
        .literal_separator(true)
        .build()
        .map_err(|e| RulesError::BadPattern {
            pattern: pattern.to_string(),
            message: e.kind().to_string(),
        })?
        .compile_matcher();
    let mut found = Vec::new();
    if root.is_dir() {
        walk(&root, &root, 1, max_depth, &matcher, &mut found)?;
    }
    Ok(found)
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    max_depth: usize,
    matcher: &GlobMatcher,
    found: &mut Vec<PathBuf>,
) -> Result<(), RulesError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RulesError::Walk {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| RulesError::Walk {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        // Follows symlinks on purpose: config management often links rule files in.
        if path.is_dir() {
            if depth < max_depth {
                walk(root, &path, depth + 1, max_depth, matcher, found)?;
            }
        } else if path.is_file()
            && path.strip_prefix(root).is_ok_and(|rel| {
                let rel: Vec<_> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect();
                matcher.is_match(rel.join("/"))
            })
        {
            found.push(path);
        }
    }
    Ok(())
}

/// Reads, parses and validates every file; all problems of all files are reported together.
pub fn load_rule_files(paths: &[PathBuf]) -> Result<RuleSet, RulesError> {
    let mut rules = Vec::new();
    let mut silences = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.clone(),
            source,
        })?;
        match parse_rule_file(&text, path) {
            Ok(mut f) => {
                rules.append(&mut f.rules);
                silences.append(&mut f.silences);
            }
            Err(RulesError::Invalid(mut p)) => problems.append(&mut p),
            Err(other) => return Err(other),
        }
    }
    if !problems.is_empty() {
        return Err(RulesError::Invalid(problems));
    }
    RuleSet::with_silences(rules, silences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_a_read_error() {
        let e = load_rule_files(&[PathBuf::from("does/not/exist.toml")]).unwrap_err();
        assert!(matches!(e, RulesError::Read { .. }), "{e}");
        assert!(e.to_string().contains("does/not/exist.toml"));
    }

    #[test]
    fn rules_config_resolves_globs_and_rejects_empty_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("rules/site2")).unwrap();
        for f in [
            "rules/a.toml",
            "rules/b.toml",
            "rules/notes.txt",
            "rules/site2/c.toml",
        ] {
            std::fs::write(base.join(f), "").unwrap();
        }
        let cfg: RulesConfig = toml::from_str("files = [\"rules/*.toml\"]").unwrap();
        assert_eq!(
            cfg.resolve(base).unwrap(),
            vec![base.join("rules/a.toml"), base.join("rules/b.toml")]
        );
        let cfg = RulesConfig {
            files: vec!["rules/**/*.toml".into(), "rules/a.toml".into()],
            ..Default::default()
        };
        assert_eq!(
            cfg.resolve(base).unwrap(),
            vec![
                base.join("rules/a.toml"),
                base.join("rules/b.toml"),
                base.join("rules/site2/c.toml")
            ]
        );
        for pattern in ["rules/*.yaml", "missing.toml", "nodir/*.toml"] {
            let cfg = RulesConfig {
                files: vec![pattern.into()],
                ..Default::default()
            };
            let e = cfg.resolve(base).unwrap_err();
            assert!(matches!(e, RulesError::NoMatch { .. }), "{pattern}: {e}");
            assert!(e.to_string().contains(pattern));
        }
        assert!(toml::from_str::<RulesConfig>("file = []").is_err());

        // Glob characters in the config directory's own name are taken literally.
        let odd = base.join("cfg[1]");
        std::fs::create_dir_all(odd.join("rules")).unwrap();
        std::fs::write(odd.join("rules/x.toml"), "").unwrap();
        let cfg = RulesConfig {
            files: vec!["rules/*.toml".into()],
            ..Default::default()
        };
        assert_eq!(cfg.resolve(&odd).unwrap(), vec![odd.join("rules/x.toml")]);
        // Absolute patterns ignore the base.
        let cfg = RulesConfig {
            files: vec![format!("{}/rules/*.toml", odd.display()).replace("[1]", "[[]1]")],
            ..Default::default()
        };
        assert_eq!(
            cfg.resolve(Path::new("elsewhere")).unwrap(),
            vec![odd.join("rules/x.toml")]
        );
        let cfg = RulesConfig {
            files: vec!["rules/[".into()],
            ..Default::default()
        };
        assert!(matches!(
            cfg.resolve(base),
            Err(RulesError::BadPattern { .. })
        ));
    }
}
