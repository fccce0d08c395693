//! The silences made through the API: held in memory, saved to `[api] silences_file` on
//! every change (temp file, fsync, rename; 0600) before the change is answered, read back at
//! start-up, and handed to the engine through [`LiveSilences`]. Expired silences stay listed
//! for [`RETENTION`] after their end (as Alertmanager keeps them), then are pruned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::silence_spec::{self, Record};
use super::ApiError;
use crate::rules::live_silences::LiveSilences;
use crate::rules::silence::Silence;

/// How long an expired silence stays listed.
pub const RETENTION: Duration = Duration::from_secs(5 * 86_400);
/// At most this many silences (of any state) are kept; more is almost surely a script gone
/// wrong, and each one costs every alert decision a check.
pub const MAX_SILENCES: usize = 1000;
/// `[api] silences_file` when none is given, under the state directory.
pub const DEFAULT_FILE: &str = "silences.json";
/// How often the state gauges are refreshed and old silences pruned.
const MAINTAIN_EVERY: Duration = Duration::from_secs(10);
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedFile {
    version: u32,
    silences: Vec<Record>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read the silences made through the API: {source}; check [api] silences_file and the file's permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: is not a silences file ({problem}); repair it (a JSON object {{\"version\": 1, \"silences\": [...]}}), or move it away to start without the silences made through the API")]
    Parse { path: PathBuf, problem: String },
    #[error("{path}: silence {id}: {problem}; fix or remove that entry (or move the file away)")]
    Invalid {
        path: PathBuf,
        id: String,
        problem: String,
    },
}

/// Where a silence is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub const ALL: [SilenceState; 3] = [Self::Pending, Self::Active, Self::Expired];

    pub fn of(starts_ns: Option<i64>, ends_ns: Option<i64>, now_ns: i64) -> SilenceState {
        if ends_ns.is_some_and(|e| now_ns >= e) {
            SilenceState::Expired
        } else if starts_ns.is_some_and(|s| now_ns < s) {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

#[derive(Clone)]
struct Entry {
    record: Record,
    silence: Arc<Silence>,
}

/// The API's silences; the engine sees them through [`SilenceStore::live`].
pub struct SilenceStore {
    path: PathBuf,
    entries: Mutex<Vec<Entry>>,
    live: LiveSilences,
}

impl std::fmt::Debug for SilenceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SilenceStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn compile(record: Record, path: &Path) -> Result<Entry, ApiError> {
    let silence = Arc::new(silence_spec::compile(&record, path)?);
    Ok(Entry { record, silence })
}

impl SilenceStore {
    /// Reads `path` (a missing file is no silences yet) and publishes its silences to `live`.
    pub fn load(path: PathBuf, live: LiveSilences) -> Result<SilenceStore, LoadError> {
        let records = match std::fs::read(&path) {
            Ok(bytes) => {
                let saved: SavedFile =
                    serde_json::from_slice(&bytes).map_err(|e| LoadError::Parse {
                        path: path.clone(),
                        problem: e.to_string(),
                    })?;
                if saved.version != VERSION {
                    return Err(LoadError::Parse {
                        path,
                        problem: format!(
                            "version {} where this sitewatch writes {VERSION}",
                            saved.version
                        ),
                    });
                }
                saved.silences
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(LoadError::Read { path, source }),
        };
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            let id = record.id.clone();
            entries.push(compile(record, &path).map_err(|e| LoadError::Invalid {
                path: path.clone(),
                id,
                problem: e.to_string(),
            })?);
        }
        if !entries.is_empty() {
            tracing::info!(path = %path.display(), silences = entries.len(), "silences made through the API loaded");
        }
        let mut store = SilenceStore {
            path,
            entries: Mutex::new(Vec::new()),
            live,
        };
        store.publish(&entries);
        store.entries = Mutex::new(entries);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the engine gates on.
    pub fn live(&self) -> LiveSilences {
        self.live.clone()
    }

    /// Every silence kept (expired ones for [`RETENTION`]), oldest start first.
    pub async fn list(&self) -> Vec<(Record, Arc<Silence>)> {
        let mut out: Vec<_> = self
            .entries
            .lock()
            .await
            .iter()
            .map(|e| (e.record.clone(), e.silence.clone()))
            .collect();
        out.sort_by(|a, b| (a.0.starts_at, &a.0.id).cmp(&(b.0.starts_at, &b.0.id)));
        out
    }

    pub async fn get(&self, id: &str) -> Option<(Record, Arc<Silence>)> {
        self.entries
            .lock()
            .await
            .iter()
            .find(|e| e.record.id == id)
            .map(|e| (e.record.clone(), e.silence.clone()))
    }

    /// Saves and publishes a new silence (already checked by [`silence_spec::from_body`]).
    pub async fn add(&self, record: Record) -> Result<(Record, Arc<Silence>), ApiError> {
        let entry = compile(record, &self.path)?;
        let mut entries = self.entries.lock().await;
        let mut next = entries.clone();
        prune(&mut next, Timestamp::now());
        if next.len() >= MAX_SILENCES {
            return Err(ApiError::Conflict(format!(
                "{} silences are kept already (at most {MAX_SILENCES}): expire some (DELETE /api/v1/silences/ID) or wait for expired ones to be pruned",
                next.len()
            )));
        }
        next.push(entry.clone());
        self.save(&next, "the silence was not added").await?;
        *entries = next;
        self.publish(&entries);
        let r = &entry.record;
        tracing::info!(
            id = %r.id,
            by = %r.created_by,
            matchers = ?r.matchers,
            rule = r.rule.as_deref().unwrap_or(""),
            starts_at = %r.starts_at,
            ends_at = %r.ends_at,
            timezone = r.timezone.as_deref().unwrap_or(""),
            daily = %r
                .daily
                .as_ref()
                .map(|d| format!("{}-{}", d.from, d.to))
                .unwrap_or_default(),
            comment = %r.comment,
            "silence added through the API"
        );
        metrics::counter!("sitewatch_api_silence_changes_total", "action" => "add").increment(1);
        Ok((entry.record, entry.silence))
    }

    /// Ends a silence now; it stays listed as expired. `None` when there is no such silence.
    pub async fn expire(
        &self,
        id: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<(Record, Arc<Silence>), ApiError> {
        let mut entries = self.entries.lock().await;
        let Some(pos) = entries.iter().position(|e| e.record.id == id) else {
            return Err(ApiError::NotFound(format!(
                "no silence {id} (GET /api/v1/silences lists them; expired ones are pruned {} days after their end)",
                RETENTION.as_secs() / 86_400
            )));
        };
        let old = &entries[pos].record;
        if old.ends_at <= now {
            return Err(ApiError::Conflict(format!(
                "silence {id} has already expired at {}",
                old.ends_at
            )));
        }
        let mut record = old.clone();
        // A pending silence expired before its start never holds (as in Alertmanager).
        record.starts_at = record.starts_at.min(now);
        record.ends_at = now;
        record.expired_by = Some(by.to_string());
        let entry = compile(record, &self.path)?;
        let mut next = entries.clone();
        next[pos] = entry.clone();
        self.save(&next, "the silence still holds").await?;
        *entries = next;
        self.publish(&entries);
        tracing::info!(id, by, "silence expired through the API");
        metrics::counter!("sitewatch_api_silence_changes_total", "action" => "expire").increment(1);
        Ok((entry.record, entry.silence))
    }

    /// Refreshes the state gauges and prunes silences expired longer than [`RETENTION`],
    /// until `stop`.
    pub async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(MAINTAIN_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let mut entries = self.entries.lock().await;
            let mut next = entries.clone();
            let pruned = prune(&mut next, Timestamp::now());
            if pruned > 0 && self.save(&next, "kept for now").await.is_ok() {
                tracing::info!(
                    pruned,
                    retention_days = RETENTION.as_secs() / 86_400,
                    "expired silences pruned"
                );
                *entries = next;
                self.publish(&entries);
            } else {
                gauges(&entries);
            }
        }
    }

    async fn save(&self, entries: &[Entry], otherwise: &str) -> Result<(), ApiError> {
        let saved = SavedFile {
            version: VERSION,
            silences: entries.iter().map(|e| e.record.clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| {
            ApiError::Unavailable(format!("cannot encode the silences: {e}; {otherwise}"))
        })?;
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || {
            crate::rules::state::write_snapshot_blocking(&path, &bytes)
        })
        .await;
        let problem = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(crate::rules::StateError::Write { source, .. })) => source.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(path = %self.path.display(), error = %problem, "cannot save the silences made through the API");
        Err(ApiError::Unavailable(format!(
            "cannot save the silences to {}: {problem}; {otherwise} (check that sitewatch may write there, [api] silences_file)",
            self.path.display()
        )))
    }

    fn publish(&self, entries: &[Entry]) {
        self.live
            .set_runtime(entries.iter().map(|e| e.silence.clone()).collect());
        gauges(entries);
    }
}

/// Drops silences whose end is more than [`RETENTION`] ago; returns how many.
fn prune(entries: &mut Vec<Entry>, now: Timestamp) -> usize {
    let before = entries.len();
    let retention = jiff::SignedDuration::from_secs(RETENTION.as_secs() as i64);
    entries.retain(|e| {
        e.record
            .ends_at
            .checked_add(retention)
            .is_ok_and(|t| t > now)
    });
    before - entries.len()
}

fn gauges(entries: &[Entry]) {
    let now = crate::model::now_ns();
    for state in SilenceState::ALL {
        let n = entries
            .iter()
            .filter(|e| SilenceState::of(e.silence.start_ns, e.silence.end_ns, now) == state)
            .count();
        metrics::gauge!("sitewatch_api_silences", "state" => state.as_str()).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, ends_in_s: i64) -> Record {
        let now = Timestamp::now();
        let body = serde_json::json!({
            "matchers": {"rack": "r1"},
            "duration": format!("{}s", ends_in_s.max(1)),
            "timezone": "America/New_York",
            "daily": {"from": "00:00", "to": "23:59"},
            "created_by": "alice",
            "comment": "PDU swap",
        });
        silence_spec::from_body(body.to_string().as_bytes(), id.into(), now).unwrap()
    }

    #[tokio::test]
    async fn silences_survive_a_restart_and_expiry_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("silences.json");
        let live = LiveSilences::default();
        let store = SilenceStore::load(path.clone(), live.clone()).unwrap();
        assert!(store.list().await.is_empty());
        store.add(record("aaaaaaaaaaaaaaaa", 3600)).await.unwrap();
        store.add(record("bbbbbbbbbbbbbbbb", 3600)).await.unwrap();
        assert_eq!(live.runtime().len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let now = Timestamp::now();
        let (expired, _) = store.expire("bbbbbbbbbbbbbbbb", "bob", now).await.unwrap();
        assert_eq!(expired.expired_by.as_deref(), Some("bob"));
        let again = store
            .expire("bbbbbbbbbbbbbbbb", "bob", now)
            .await
            .unwrap_err();
        assert_eq!(again.status(), 409);
        assert_eq!(
            store
                .expire("cccccccccccccccc", "bob", now)
                .await
                .unwrap_err()
                .status(),
            404
        );

        // A restart reads the same silences back, the expired one still expired.
        let live2 = LiveSilences::default();
        let back = SilenceStore::load(path.clone(), live2.clone()).unwrap();
        let listed = back.list().await;
        assert_eq!(listed.len(), 2);
        let rec = |id: &str| listed.iter().find(|(r, _)| r.id == id).unwrap().clone();
        assert_eq!(
            rec("aaaaaaaaaaaaaaaa").0,
            store.get("aaaaaaaaaaaaaaaa").await.unwrap().0
        );
        let now_ns = silence_spec::ns_of(Timestamp::now());
        assert!(rec("aaaaaaaaaaaaaaaa").1.active_at(now_ns));
        assert!(!rec("bbbbbbbbbbbbbbbb").1.active_at(now_ns));
        assert_eq!(
            rec("aaaaaaaaaaaaaaaa")
                .1
                .daily
                .as_ref()
                .unwrap()
                .zone
                .as_ref()
                .unwrap()
                .iana_name(),
            Some("America/New_York")
        );
        assert_eq!(live2.runtime().len(), 2);
    }

    #[test]
    fn broken_files_are_startup_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silences.json");
        std::fs::write(&path, "{\"version\": 1, \"silences\": [").unwrap();
        let e = SilenceStore::load(path.clone(), LiveSilences::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("silences.json") && e.contains("move it away"),
            "{e}"
        );

        let mut bad = record("dddddddddddddddd", 60);
        bad.timezone = Some("Mars/Olympus".into());
        let text = serde_json::json!({"version": 1, "silences": [bad]}).to_string();
        std::fs::write(&path, text).unwrap();
        let e = SilenceStore::load(path, LiveSilences::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("silence dddddddddddddddd") && e.contains("Mars/Olympus"),
            "{e}"
        );
    }

    #[test]
    fn old_expired_silences_are_pruned() {
        let mut r = record("eeeeeeeeeeeeeeee", 60);
        let mut entries = vec![compile(r.clone(), Path::new("s")).unwrap()];
        let later = r.ends_at + jiff::SignedDuration::from_secs(RETENTION.as_secs() as i64 - 1);
        assert_eq!(prune(&mut entries, later), 0);
        r.id = "ffffffffffffffff".into();
        let after = r.ends_at + jiff::SignedDuration::from_secs(RETENTION.as_secs() as i64);
        assert_eq!(prune(&mut entries, after), 1);
        assert!(entries.is_empty());
    }

    #[test]
    fn states_follow_the_clock() {
        assert_eq!(
            SilenceState::of(Some(10), Some(20), 5),
            SilenceState::Pending
        );
        assert_eq!(
            SilenceState::of(Some(10), Some(20), 10),
            SilenceState::Active
        );
        assert_eq!(
            SilenceState::of(Some(10), Some(20), 20),
            SilenceState::Expired
        );
        assert_eq!(SilenceState::of(None, None, 20), SilenceState::Active);
    }
}
