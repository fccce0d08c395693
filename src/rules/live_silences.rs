//! Silences shared between the engine and the API: the ones made at run time (through
//! `POST /api/v1/silences`), which the API writes and the engine gates alerts on together
//! with the rule files' `[[silence]]`, and the rule files' own set, which the engine
//! publishes on every (re)load so the API can list them.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use super::silence::Silence;

type Set = Arc<[Arc<Silence>]>;

/// Cheap to clone: every clone sees the same sets.
#[derive(Clone, Debug, Default)]
pub struct LiveSilences {
    runtime: Arc<RwLock<Set>>,
    files: Arc<RwLock<Set>>,
}

fn read(lock: &RwLock<Set>) -> Set {
    // A writer that panicked left a complete set (sets are swapped whole), so the set is
    // still good to read.
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write(lock: &RwLock<Set>, set: Vec<Arc<Silence>>) {
    *lock.write().unwrap_or_else(|e| e.into_inner()) = set.into();
}

impl LiveSilences {
    /// The silences made at run time, every one still known (expired ones match no time).
    pub fn runtime(&self) -> Set {
        read(&self.runtime)
    }

    pub fn set_runtime(&self, set: Vec<Arc<Silence>>) {
        write(&self.runtime, set);
    }

    /// The rule files' silences as last loaded.
    pub fn files(&self) -> Set {
        read(&self.files)
    }

    pub fn set_files(&self, set: &[Arc<Silence>]) {
        write(&self.files, set.to_vec());
    }

    /// `files` followed by the run-time silences; borrowed when there are none of those.
    pub fn with_runtime<'a>(&self, files: &'a [Arc<Silence>]) -> Cow<'a, [Arc<Silence>]> {
        let runtime = self.runtime();
        if runtime.is_empty() {
            Cow::Borrowed(files)
        } else {
            Cow::Owned(files.iter().chain(runtime.iter()).cloned().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, EventState, FieldValue, SeriesKey, Severity, TagSet};
    use crate::rules::{parse_rule_file, Engine, Gate, RuleSet};
    use std::path::Path;

    fn firing(rack: &str, ts: i64) -> Event {
        Event {
            labels: Vec::new(),
            annotations: Vec::new(),
            rule: "hot".into(),
            series: SeriesKey::new("environment", TagSet::new([("rack", rack)])),
            field: "t".into(),
            severity: Severity::Critical,
            state: EventState::Firing,
            value: FieldValue::Float(31.0),
            threshold: None,
            started_ns: ts,
            timestamp_ns: ts,
            message: "m".into(),
        }
    }

    /// A silence set at run time gates like a file's, and the held alert is released once
    /// it is replaced by an expired one (what DELETE does).
    #[test]
    fn the_engine_gates_on_runtime_silences_and_releases_on_expiry() {
        let silence = |end: &str| {
            let text = format!(
                "[[silence]]\nmatch = {{ rack = \"r1\" }}\nstart = \"2026-01-01T00:00:00Z\"\nend = \"{end}\"\n"
            );
            Arc::new(
                parse_rule_file(&text, Path::new("api"))
                    .unwrap()
                    .silences
                    .remove(0),
            )
        };
        let live = LiveSilences::default();
        let mut engine = Engine::new(RuleSet::with_silences(Vec::new(), Vec::new()).unwrap());
        engine.share_silences(live.clone());
        let now = crate::rules::silence::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        assert_eq!(engine.gate_alert(&firing("r1", now), now), Gate::Notify);

        live.set_runtime(vec![silence("2027-01-01T00:00:00Z")]);
        assert_eq!(
            engine.gate_alert(&firing("r1", now + 1), now + 1),
            Gate::Silenced
        );
        assert_eq!(
            engine.gate_alert(&firing("r2", now + 1), now + 1),
            Gate::Notify
        );
        assert!(engine.release_silenced(now + 2).is_empty());

        live.set_runtime(vec![silence("2026-06-01T00:00:01Z")]);
        let released = engine.release_silenced(now + 1_000_000_000);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].series.tags.get("rack"), Some("r1"));
        assert!(live.files().is_empty());

        // A rule reload publishes the files' silences for the API's list.
        let file = (*silence("2027-01-01T00:00:00Z")).clone();
        let changed = engine.replace_rules(RuleSet::with_silences(Vec::new(), vec![file]).unwrap());
        assert!(
            changed.is_empty(),
            "no rule, so nothing resolved: {changed:?}"
        );
        assert_eq!(live.files().len(), 1);
    }
}
