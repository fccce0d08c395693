//! Building the engine from the `[rules]` table, and reloading rule files when they change.
//!
//! SIGHUP (handled in `main`) re-reads the main config and the rule files. In addition,
//! [`watch_rule_files`] polls the files the `[rules] files` patterns match (path, mtime and size;
//! a new or deleted file counts) every `watch_interval` (default 5 s) and reloads on change. An
//! invalid file is logged with `file:line` and the rules in force stay; the same broken
//! content is reported once, not on every poll. Edits of the `[rules]` table itself need a
//! SIGHUP.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{load_rule_files, RuleSet, RulesConfig};
use super::engine::Engine;

/// An engine for `rules` with the state file of `cfg` attached and loaded. A state file that
/// cannot be read is logged and the engine starts fresh: alerting must start even then.
/// With `state_file` false (cluster mode) `[rules] state_file` is neither read nor written.
pub fn prepare_engine(
    rules: RuleSet,
    cfg: Option<&RulesConfig>,
    base_dir: &Path,
    state_file: bool,
) -> Engine {
    let mut engine = Engine::new(rules);
    engine.set_max_future_skew(
        cfg.and_then(|c| c.max_future_skew)
            .unwrap_or(super::config::DEFAULT_MAX_FUTURE_SKEW),
    );
    let Some(path) = cfg.and_then(|c| c.state_path(base_dir)) else {
        return engine;
    };
    if !state_file {
        tracing::info!(path = %path.display(), "cluster mode: rule state moves with the units through etcd; the rules state file is not used");
        return engine;
    }
    match engine.load_state(&path) {
        Ok(0) => tracing::info!(path = %path.display(), "no saved rules state; starting fresh"),
        Ok(n) => tracing::info!(path = %path.display(), states = n, "rules state restored"),
        Err(e) => {
            metrics::counter!("sitewatch_rules_state_errors_total", "op" => "load").increment(1);
            tracing::error!(error = %e, "rules state not restored; starting with fresh state");
        }
    }
    engine.set_state_file(Some(path));
    engine
}

/// What identifies the current content of the rule files without reading them.
pub type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// Resolves the patterns and stats each file.
pub fn fingerprint(cfg: &RulesConfig, base_dir: &Path) -> Result<Fingerprint, String> {
    let files = cfg.resolve(base_dir).map_err(|e| e.to_string())?;
    Ok(files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let mtime = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (p, mtime, len)
        })
        .collect())
}

/// Loads the rule files if their fingerprint differs from `last` (updated either way).
/// `Ok(None)`: unchanged. `Err`: changed but invalid, reported once per content.
pub fn reload_if_changed(
    cfg: &RulesConfig,
    base_dir: &Path,
    last: &mut Option<Result<Fingerprint, String>>,
) -> Result<Option<RuleSet>, String> {
    let now = fingerprint(cfg, base_dir);
    if last.as_ref() == Some(&now) {
        return Ok(None);
    }
    *last = Some(now.clone());
    let files: Vec<PathBuf> = now?.into_iter().map(|(p, _, _)| p).collect();
    load_rule_files(&files).map(Some).map_err(|e| e.to_string())
}

/// Polls the rule files every `cfg.watch_interval` and sends a new rule set on `reload_tx`
/// when they change. Returns at once when watching is off.
pub async fn watch_rule_files(
    cfg: RulesConfig,
    base_dir: PathBuf,
    reload_tx: mpsc::Sender<RuleSet>,
    stop: CancellationToken,
) {
    let Some(every) = cfg.watch_every() else {
        return;
    };
    if cfg.files.is_empty() {
        return;
    }
    let mut last = Some(fingerprint(&cfg, &base_dir));
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (c, b) = (cfg.clone(), base_dir.clone());
        let mut l = last.take();
        let res = tokio::task::spawn_blocking(move || {
            let r = reload_if_changed(&c, &b, &mut l);
            (r, l)
        })
        .await;
        let Ok((res, l)) = res else { return };
        last = l;
        let outcome = match res {
            Ok(None) => continue,
            Ok(Some(set)) => Ok(set),
            Err(e) => Err(e),
        };
        if !publish_reload(Trigger::File, outcome, &reload_tx).await {
            return;
        }
    }
}

/// What made the rules be reloaded: the `trigger` label of `sitewatch_rules_reloads_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP: the main config and the rule files were read again.
    Sighup,
    /// [`watch_rule_files`] saw the rule files change.
    File,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Sighup => "sighup",
            Trigger::File => "file",
        }
    }
}

/// Counts, logs and publishes (`/ready`, `/status`) the outcome of a reload, and sends a new
/// rule set to the rules stage; on an error (`Err(message)`) the rules in force stay. False
/// when the stage is gone, so the caller can stop.
pub async fn publish_reload(
    trigger: Trigger,
    outcome: Result<RuleSet, String>,
    reload_tx: &mpsc::Sender<RuleSet>,
) -> bool {
    match outcome {
        Ok(set) => {
            metrics::counter!("sitewatch_rules_reloads_total", "trigger" => trigger.label(), "result" => "ok")
                .increment(1);
            match trigger {
                Trigger::Sighup => tracing::info!(rules = set.len(), "SIGHUP: rules reloaded"),
                Trigger::File => {
                    tracing::info!(rules = set.len(), "rule files changed: rules reloaded")
                }
            }
            crate::status::set_rules(crate::status::RulesStatus {
                rules: set.len(),
                last_reload_ok: true,
                last_reload_error: None,
            });
            reload_tx.send(set).await.is_ok()
        }
        Err(e) => {
            metrics::counter!("sitewatch_rules_reloads_total", "trigger" => trigger.label(), "result" => "error")
                .increment(1);
            match trigger {
                Trigger::Sighup => {
                    tracing::error!(error = %e, "SIGHUP: rules not reloaded, the previous rules stay in force")
                }
                Trigger::File => {
                    tracing::error!(error = %e, "rule files changed but are not valid; the previous rules stay in force")
                }
            }
            crate::status::rules_reload_failed(e);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "[[rule]]\nname = \"hot\"\nmeasurement = \"env\"\nfield = \"t\"\nabove = { warning = 27.0 }\n";

    #[test]
    fn reloads_on_change_and_rejects_bad_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir(base.join("rules")).unwrap();
        std::fs::write(base.join("rules/a.toml"), RULE).unwrap();
        let cfg = RulesConfig {
            files: vec!["rules/*.toml".into()],
            ..Default::default()
        };
        let mut last = Some(fingerprint(&cfg, base));
        assert!(reload_if_changed(&cfg, base, &mut last).unwrap().is_none());

        // A new file is a change.
        std::fs::write(
            base.join("rules/b.toml"),
            RULE.replace("hot", "warm").replace("27.0", "25.0"),
        )
        .unwrap();
        let set = reload_if_changed(&cfg, base, &mut last).unwrap().unwrap();
        assert_eq!(set.len(), 2);
        assert!(reload_if_changed(&cfg, base, &mut last).unwrap().is_none());

        // A broken edit (size changes) is reported with file:line, once.
        std::fs::write(
            base.join("rules/b.toml"),
            "[[rule]]\nname = \"warm\"\nbogus = 1\n",
        )
        .unwrap();
        let e = reload_if_changed(&cfg, base, &mut last).unwrap_err();
        assert!(e.contains("b.toml:3:"), "{e}");
        assert!(reload_if_changed(&cfg, base, &mut last).unwrap().is_none());

        // Fixed again.
        std::fs::remove_file(base.join("rules/b.toml")).unwrap();
        let set = reload_if_changed(&cfg, base, &mut last).unwrap().unwrap();
        assert_eq!(set.len(), 1);
    }

    #[tokio::test]
    async fn watcher_sends_new_rules_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        std::fs::write(base.join("a.toml"), RULE).unwrap();
        let cfg: RulesConfig =
            toml::from_str("files = [\"*.toml\"]\nwatch_interval = \"100ms\"").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_rule_files(cfg, base.clone(), tx, stop.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "no change, no reload");
        std::fs::write(base.join("a.toml"), RULE.replace("hot", "hotter")).unwrap();
        let set = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("reload within 5 s")
            .unwrap();
        assert!(set.get("hotter").is_some());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn prepare_engine_survives_a_corrupt_state_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let cfg: RulesConfig = toml::from_str("state_file = \"state.json\"").unwrap();
        let set =
            RuleSet::new(crate::rules::parse_rules(RULE, Path::new("r.toml")).unwrap()).unwrap();
        let e = prepare_engine(set, Some(&cfg), dir.path(), true);
        assert_eq!(
            e.state_file(),
            Some(dir.path().join("state.json").as_path())
        );
        assert_eq!(e.firing_count(), 0);
        assert_eq!(
            cfg.watch_every(),
            Some(super::super::config::DEFAULT_WATCH_INTERVAL)
        );
        let off: RulesConfig = toml::from_str("watch_interval = \"0s\"").unwrap();
        assert_eq!(off.watch_every(), None);
    }
}
