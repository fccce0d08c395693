//! Helpers shared by unit tests in several modules (compiled for tests only).

/// Sets the process umask while alive. The umask is process-wide, so every test that
/// changes it holds this one lock (shared by the spool's and the rules state's tests), and
/// every such test sets 0o022, the usual default, so nothing stranger is ever left behind.
#[cfg(unix)]
pub(crate) struct Umask {
    old: libc::mode_t,
    _lock: std::sync::MutexGuard<'static, ()>,
}

#[cfg(unix)]
impl Umask {
    pub(crate) fn set(mask: libc::mode_t) -> Umask {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let lock = LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: umask(2) only swaps the process's file mode creation mask.
        let old = unsafe { libc::umask(mask) };
        Umask { old, _lock: lock }
    }
}

#[cfg(unix)]
impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as in `set`.
        unsafe { libc::umask(self.old) };
    }
}

/// A rule set from rule-file text (unit tests of the rules engine and stage).
pub(crate) fn ruleset(text: &str) -> crate::rules::RuleSet {
    let rules = crate::rules::parse_rules(text, std::path::Path::new("t.toml")).unwrap();
    crate::rules::RuleSet::new(rules).unwrap()
}

/// A sample of `env,rack=<rack> t=<v>` at `ts`, the series the rules tests judge.
pub(crate) fn rack_sample(rack: &str, ts: i64, v: f64) -> crate::model::Sample {
    use crate::model::{FieldValue, Sample, SeriesKey, TagSet};
    Sample::new(SeriesKey::new("env", TagSet::new([("rack", rack)])), ts)
        .with_field("t", FieldValue::Float(v))
}
