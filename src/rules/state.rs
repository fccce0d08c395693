//! Rule state across restarts: a JSON file written atomically (temp file, fsync, rename).
//!
//! It holds, per (series, rule): the severities, incident start, pending `for`/
//! `keep_firing_for` waits, the rate ring, stale and flapping bookkeeping, and the rule's
//! [`Rule::signature`] so a rule changed while sitewatch was stopped is re-judged rather
//! than trusted; plus devices known to be down and silenced alerts not yet sent. Stale
//! timers restart at the first tick after loading, so downtime does not page for every
//! series; stale alerts already open stay open.
//!
//! # Permissions
//!
//! The file names devices, sites and open alarms: it is created 0600 whatever the umask
//! (the temp file is made fresh with that mode and renamed over the old one), and a missing
//! directory is created 0700. At load (start), a state file others may read is restricted to
//! 0600 with a warning; if that fails (another owner), an error is logged and the state is
//! still loaded, since alerting must start and the first save replaces the file with a 0600
//! one. An existing directory is not changed: it is usually shared (systemd's
//! `StateDirectory`, which systemd re-chmods to `StateDirectoryMode` at every start, or the
//! config directory); a warning says so when group or others may write to it, because they
//! could replace the file.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::open_alerts::SavedOpen;

use crate::model::{now_ns, Event, EventState, FieldValue, SeriesKey, Severity, TagSet};

use super::config::Rule;

/// 2: per (series, rule) only the pairs not at rest, plus one track per (series, field).
/// 1 (read, migrated): every pair that had seen a value, signatures in the old format.
const VERSION: u32 = 2;
/// Modes of the state file and of a directory created for it.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{path}: cannot read rules state file: {source}; check [rules] state_file and permissions"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: rules state file is not valid ({source}); it was probably cut short or edited by hand: move it away to start with fresh state")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: rules state file has version {found}, this sitewatch understands 1 to {VERSION}; it was written by a newer sitewatch: move it away to start with fresh state")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: cannot write rules state file: {source}; check that its directory exists and sitewatch may write there")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Alarm state of one rule on one series: what the engine evaluates and what is saved.
#[derive(Clone, Debug)]
pub(crate) struct RuleState {
    /// Timestamp of the newest sample evaluated; older samples are ignored.
    pub(crate) last_ts: i64,
    /// Last evaluated value (for a rate rule, the change over the window).
    pub(crate) last_value: Option<FieldValue>,
    /// Severity the condition calls for now (`Ok`: nothing).
    pub(crate) active: Severity,
    /// Severity of the last event sent (`Ok`: resolved or never fired).
    pub(crate) notified: Severity,
    /// First breaching sample of the current incident.
    pub(crate) started_ns: i64,
    /// Since when the value has been continuously beyond each level (for `for`).
    pub(crate) since_warning: Option<i64>,
    pub(crate) since_critical: Option<i64>,
    /// First clear sample while firing (for `keep_firing_for`).
    pub(crate) clear_since: Option<i64>,
    pub(crate) unusable_warned: bool,
    pub(crate) ring: VecDeque<(i64, f64)>,
    /// A usable value has been seen (stale detection starts then).
    pub(crate) seen: bool,
    pub(crate) last_arrival: i64,
    pub(crate) stale: bool,
    pub(crate) stale_started: i64,
    /// Timestamps of recent notified changes (flapping detection).
    pub(crate) changes: VecDeque<i64>,
    pub(crate) flapping: bool,
    pub(crate) last_change_ts: i64,
}

impl RuleState {
    pub(crate) fn new() -> Self {
        RuleState {
            last_ts: i64::MIN,
            last_value: None,
            active: Severity::Ok,
            notified: Severity::Ok,
            started_ns: 0,
            since_warning: None,
            since_critical: None,
            clear_since: None,
            unusable_warned: false,
            ring: VecDeque::new(),
            seen: false,
            last_arrival: i64::MIN,
            stale: false,
            stale_started: 0,
            changes: VecDeque::new(),
            flapping: false,
            last_change_ts: i64::MIN,
        }
    }

    pub(crate) fn since_at(&self, sev: Severity) -> Option<i64> {
        match sev {
            Severity::Critical => self.since_critical,
            _ => self.since_warning,
        }
    }

    pub(crate) fn since(&mut self, sev: Severity) -> &mut Option<i64> {
        match sev {
            Severity::Critical => &mut self.since_critical,
            _ => &mut self.since_warning,
        }
    }

    /// Alerts this state has open in the world (threshold and stale).
    pub(crate) fn open_alerts(&self) -> usize {
        usize::from(self.notified != Severity::Ok) + usize::from(self.stale)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum SavedValue {
    /// `None` for NaN/infinite (JSON has no such numbers).
    F(Option<f64>),
    I(i64),
    U(u64),
    B(bool),
    S(String),
}

impl From<&FieldValue> for SavedValue {
    fn from(v: &FieldValue) -> Self {
        match v {
            FieldValue::Float(x) => SavedValue::F(x.is_finite().then_some(*x)),
            FieldValue::Int(x) => SavedValue::I(*x),
            FieldValue::UInt(x) => SavedValue::U(*x),
            FieldValue::Bool(x) => SavedValue::B(*x),
            FieldValue::Str(x) => SavedValue::S(x.to_string()),
        }
    }
}

impl From<SavedValue> for FieldValue {
    fn from(v: SavedValue) -> Self {
        match v {
            SavedValue::F(x) => FieldValue::Float(x.unwrap_or(f64::NAN)),
            SavedValue::I(x) => FieldValue::Int(x),
            SavedValue::U(x) => FieldValue::UInt(x),
            SavedValue::B(x) => FieldValue::Bool(x),
            SavedValue::S(x) => FieldValue::Str(x.into()),
        }
    }
}

fn sev_str(s: Severity) -> String {
    s.as_str().to_string()
}

fn sev_parse(s: &str) -> Severity {
    match s {
        "warning" => Severity::Warning,
        "critical" => Severity::Critical,
        _ => Severity::Ok,
    }
}

/// Strings are shared with the engine (`Arc<str>`), so taking a snapshot copies no text.
#[derive(Serialize, Deserialize)]
struct SavedSeries {
    measurement: Arc<str>,
    tags: Vec<(Arc<str>, Arc<str>)>,
}

impl SavedSeries {
    fn of(key: &SeriesKey) -> Self {
        SavedSeries {
            measurement: key.measurement.clone(),
            tags: key.tags.iter_shared().cloned().collect(),
        }
    }

    fn key(&self) -> SeriesKey {
        SeriesKey::new(
            self.measurement.clone(),
            TagSet::new(self.tags.iter().map(|(k, v)| (&**k, &**v))),
        )
    }
}

#[derive(Serialize, Deserialize)]
struct SavedState {
    series: SavedSeries,
    rule: Arc<str>,
    field: Arc<str>,
    stale_severity: String,
    signature: Arc<str>,
    active: String,
    notified: String,
    started_ns: i64,
    last_ts: i64,
    last_value: Option<SavedValue>,
    since_warning: Option<i64>,
    since_critical: Option<i64>,
    clear_since: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ring: Vec<(i64, f64)>,
    seen: bool,
    last_arrival: i64,
    stale: bool,
    stale_started: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    changes: Vec<i64>,
    flapping: bool,
    last_change_ts: i64,
}

impl SavedState {
    fn restore(self) -> RuleState {
        let mut st = RuleState::new();
        st.last_ts = self.last_ts;
        st.last_value = self.last_value.map(FieldValue::from);
        st.active = sev_parse(&self.active);
        st.notified = sev_parse(&self.notified);
        st.started_ns = self.started_ns;
        st.since_warning = self.since_warning;
        st.since_critical = self.since_critical;
        st.clear_since = self.clear_since;
        st.ring = self.ring.into_iter().collect();
        st.seen = self.seen;
        st.last_arrival = self.last_arrival;
        st.stale = self.stale;
        st.stale_started = self.stale_started;
        st.changes = self.changes.into_iter().collect();
        st.flapping = self.flapping;
        st.last_change_ts = self.last_change_ts;
        st
    }
}

#[derive(Serialize, Deserialize)]
struct SavedEvent {
    rule: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    labels: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<(String, String)>,
    series: SavedSeries,
    field: String,
    severity: String,
    firing: bool,
    value: SavedValue,
    threshold: Option<f64>,
    started_ns: i64,
    timestamp_ns: i64,
    message: String,
}

impl SavedEvent {
    fn of(ev: &Event) -> Self {
        let pairs =
            |l: &crate::model::Labels| l.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        SavedEvent {
            rule: ev.rule.to_string(),
            labels: pairs(&ev.labels),
            annotations: pairs(&ev.annotations),
            series: SavedSeries::of(&ev.series),
            field: ev.field.to_string(),
            severity: sev_str(ev.severity),
            firing: ev.state == EventState::Firing,
            value: SavedValue::from(&ev.value),
            threshold: ev.threshold.filter(|t| t.is_finite()),
            started_ns: ev.started_ns,
            timestamp_ns: ev.timestamp_ns,
            message: ev.message.clone(),
        }
    }

    fn event(self) -> Event {
        let pairs = |l: Vec<(String, String)>| l.into_iter().map(|(k, v)| (k.into(), v)).collect();
        Event {
            rule: self.rule.into(),
            labels: pairs(self.labels),
            annotations: pairs(self.annotations),
            series: self.series.key(),
            field: self.field.into(),
            severity: sev_parse(&self.severity),
            state: if self.firing {
                EventState::Firing
            } else {
                EventState::Resolved
            },
            value: self.value.into(),
            threshold: self.threshold,
            started_ns: self.started_ns,
            timestamp_ns: self.timestamp_ns,
            message: self.message,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SavedFile {
    version: u32,
    saved_ns: i64,
    states: Vec<SavedState>,
    /// Absent in version 1 files.
    #[serde(default)]
    tracks: Vec<SavedTrack>,
    devices_down: Vec<String>,
    silenced: Vec<SavedEvent>,
    /// The desk's side of open alerts (first firing, acknowledgement); absent before 0.2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    open_alerts: Vec<SavedOpen>,
}

/// One (series, rule) state to save, with the rule it belongs to.
/// The last usable value of one field of one series (what a pair at rest needs).
#[derive(Serialize, Deserialize)]
struct SavedTrack {
    series: SavedSeries,
    field: Arc<str>,
    last_ts: i64,
    last_value: Option<SavedValue>,
}

pub(crate) struct SaveTrack<'a> {
    pub(crate) series: &'a SeriesKey,
    pub(crate) field: &'a Arc<str>,
    pub(crate) seen: bool,
    pub(crate) last_ts: i64,
    pub(crate) last_value: Option<&'a FieldValue>,
}

pub(crate) struct SaveEntry<'a> {
    pub(crate) series: &'a SeriesKey,
    pub(crate) rule: &'a Rule,
    pub(crate) stale_severity: Severity,
    pub(crate) state: &'a RuleState,
}

/// The state to save, copied out of the engine (strings shared, not copied), not yet
/// serialised: the rules task takes it in one pass over the states and [`Snapshot::write`]
/// serialises and writes it on a blocking thread.
pub struct Snapshot {
    file: SavedFile,
}

impl Snapshot {
    /// (series, rule) states in it.
    /// Records saved: held (series, rule) states plus field tracks.
    pub fn len(&self) -> usize {
        self.file.states.len() + self.file.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the open alerts' desk entries (kept by the rules stage, not the engine).
    pub fn with_open_alerts(mut self, open: Vec<SavedOpen>) -> Snapshot {
        self.file.open_alerts = open;
        self
    }

    /// The snapshot serialised as the state file holds it (a cluster unit's checkpoint).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data of strings and numbers: serialising it cannot fail.
        serde_json::to_vec(&self.file).unwrap_or_default()
    }

    /// Serialises and writes atomically ([`write_snapshot_blocking`]); returns the states
    /// written. Blocks: call it from a blocking thread when on the async runtime.
    pub fn write(&self, path: &Path) -> Result<usize, StateError> {
        let bytes = serde_json::to_vec(&self.file).map_err(|e| StateError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        write_snapshot_blocking(path, &bytes)?;
        Ok(self.len())
    }
}

/// Copies the states out (those that never saw a usable value are left out), the devices
/// known to be down and the silenced alerts not yet sent. No I/O, no serialisation.
pub(crate) fn snapshot<'a>(
    entries: impl IntoIterator<Item = SaveEntry<'a>>,
    tracks: impl IntoIterator<Item = SaveTrack<'a>>,
    devices_down: impl IntoIterator<Item = &'a Arc<str>>,
    silenced: impl IntoIterator<Item = &'a Event>,
) -> Snapshot {
    let mut states = Vec::new();
    // A rule's signature is a formatted string: made once per rule, shared by its states.
    let mut signatures: HashMap<*const Rule, Arc<str>> = HashMap::new();
    for SaveEntry {
        series: key,
        rule,
        stale_severity,
        state: st,
    } in entries
    {
        // A state that never saw a usable value carries nothing worth keeping.
        if !st.seen && st.notified == Severity::Ok && !st.stale {
            continue;
        }
        let signature = signatures
            .entry(rule as *const Rule)
            .or_insert_with(|| rule.signature().into())
            .clone();
        states.push(SavedState {
            series: SavedSeries::of(key),
            rule: rule.name.clone(),
            field: rule.field.clone(),
            stale_severity: sev_str(stale_severity),
            signature,
            active: sev_str(st.active),
            notified: sev_str(st.notified),
            started_ns: st.started_ns,
            last_ts: st.last_ts,
            last_value: st.last_value.as_ref().map(SavedValue::from),
            since_warning: st.since_warning,
            since_critical: st.since_critical,
            clear_since: st.clear_since,
            ring: st.ring.iter().copied().collect(),
            seen: st.seen,
            last_arrival: st.last_arrival,
            stale: st.stale,
            stale_started: st.stale_started,
            changes: st.changes.iter().copied().collect(),
            flapping: st.flapping,
            last_change_ts: st.last_change_ts,
        });
    }
    let tracks = tracks
        .into_iter()
        .filter(|t| t.seen)
        .map(|t| SavedTrack {
            series: SavedSeries::of(t.series),
            field: t.field.clone(),
            last_ts: t.last_ts,
            last_value: t.last_value.map(SavedValue::from),
        })
        .collect();
    let mut devices_down: Vec<String> = devices_down.into_iter().map(|d| d.to_string()).collect();
    devices_down.sort();
    Snapshot {
        file: SavedFile {
            version: VERSION,
            saved_ns: now_ns(),
            states,
            tracks,
            devices_down,
            silenced: silenced.into_iter().map(SavedEvent::of).collect(),
            open_alerts: Vec::new(),
        },
    }
}

/// Writes a [`Snapshot`]'s bytes atomically (0600 temp file, fsync, rename over `path`),
/// creating a missing directory 0700. Blocks: call it from a blocking thread
/// (`tokio::task::spawn_blocking`) when on the async runtime.
pub fn write_snapshot_blocking(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    create_dir_for(path).map_err(write_err)?;
    let mut f = create_private(&tmp).map_err(write_err)?;
    f.write_all(bytes).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(write_err)?;
    Ok(())
}

/// Creates the file's directory (and missing parents) with mode 0700 if it does not exist.
fn create_dir_for(path: &Path) -> std::io::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// A new, empty file with mode 0600. A leftover from an interrupted save is removed first:
/// opening it would keep its old mode.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o.open(path)
}

/// At load: restricts an existing state file that others may read to 0600 (warning), and
/// warns about a directory others may write to. Never fails the load.
#[cfg(unix)]
fn check_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    };
    if let Some(mode) = mode_of(path).filter(|m| m & 0o077 != 0) {
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                was = format!("{mode:04o}"),
                now = format!("{FILE_MODE:04o}"),
                "rules state file: other users could read it; restricted to the sitewatch user"
            ),
            Err(e) => tracing::error!(
                path = %path.display(),
                mode = format!("{mode:04o}"),
                error = %e,
                "rules state file: other users can read it and it cannot be restricted (make \
                 the sitewatch user its owner); the next save replaces it with a 0600 file"
            ),
        }
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Some(mode) = mode_of(dir).filter(|m| m & 0o022 != 0) {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{mode:04o}"),
            "rules state directory: other users may write to it and so replace the state file; \
             restrict it (chmod go-w), or point [rules] state_file into a directory of its own"
        );
    }
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) {}

/// State read back from the file, for [`super::engine::Engine::load_state`] to apply.
pub(crate) struct Restored {
    /// Format version of the file (signatures of version 1 are in the old format).
    pub(crate) version: u32,
    pub(crate) states: Vec<RestoredState>,
    pub(crate) tracks: Vec<RestoredTrack>,
    pub(crate) devices_down: Vec<String>,
    pub(crate) silenced: Vec<Event>,
    pub(crate) open_alerts: Vec<SavedOpen>,
}

/// One saved (series, rule) state and what it was saved for.
pub(crate) struct RestoredState {
    pub(crate) series: SeriesKey,
    pub(crate) rule: String,
    pub(crate) field: String,
    /// [`Rule::signature`] at save time.
    pub(crate) signature: String,
    pub(crate) stale_severity: Severity,
    pub(crate) state: RuleState,
}

/// A field's last value, as a state at rest would hold it.
pub(crate) struct RestoredTrack {
    pub(crate) series: SeriesKey,
    pub(crate) field: String,
    pub(crate) state: RuleState,
}

/// Reads the state file; `None` when there is none (first start).
pub(crate) fn read(path: &Path) -> Result<Option<Restored>, StateError> {
    check_permissions(path);
    let body = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    decode(&body).map(Some).map_err(|e| match e {
        DecodeError::Parse(source) => StateError::Parse {
            path: path.to_path_buf(),
            source,
        },
        DecodeError::Version(found) => StateError::Version {
            path: path.to_path_buf(),
            found,
        },
    })
}

/// Why saved state bytes could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid saved rule state ({0})")]
    Parse(#[source] serde_json::Error),
    #[error("saved rule state of version {0}, this sitewatch understands 1 to {VERSION} (written by a newer sitewatch)")]
    Version(u32),
}

/// Reads saved state from its serialised form ([`Snapshot::to_bytes`], the state file).
pub(crate) fn decode(body: &[u8]) -> Result<Restored, DecodeError> {
    let file: SavedFile = serde_json::from_slice(body).map_err(DecodeError::Parse)?;
    if file.version == 0 || file.version > VERSION {
        return Err(DecodeError::Version(file.version));
    }
    let states = file
        .states
        .into_iter()
        .map(|saved| RestoredState {
            series: saved.series.key(),
            rule: saved.rule.to_string(),
            field: saved.field.to_string(),
            signature: saved.signature.to_string(),
            stale_severity: sev_parse(&saved.stale_severity),
            state: saved.restore(),
        })
        .collect();
    let tracks = file
        .tracks
        .into_iter()
        .map(|t| {
            let mut state = RuleState::new();
            state.seen = true;
            state.last_ts = t.last_ts;
            state.last_value = t.last_value.map(FieldValue::from);
            RestoredTrack {
                series: t.series.key(),
                field: t.field.to_string(),
                state,
            }
        })
        .collect();
    Ok(Restored {
        version: file.version,
        states,
        tracks,
        devices_down: file.devices_down,
        silenced: file.silenced.into_iter().map(SavedEvent::event).collect(),
        open_alerts: file.open_alerts,
    })
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::rules::{Engine, RuleSet};

    use crate::test_support::Umask;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    fn engine() -> Engine {
        Engine::new(RuleSet::new(Vec::new()).unwrap())
    }

    #[test]
    fn acknowledgements_are_kept_in_the_state_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("rules-state.json");
        let desk = vec![SavedOpen {
            id: "00ff00ff00ff00ff".into(),
            started_ns: 5,
            severity: "critical".into(),
            opened_ns: 7,
            ack: Some(crate::model::Acknowledgement {
                by: "alice".into(),
                comment: "on it".into(),
                at_ns: 9,
            }),
        }];
        engine()
            .state_snapshot()
            .with_open_alerts(desk.clone())
            .write(&path)
            .unwrap();
        let mut e = engine();
        e.load_state(&path).unwrap();
        assert_eq!(e.take_restored_open(), desk);
        // Files from before acknowledgements load with none.
        engine().save_state(&path).unwrap();
        let mut e = engine();
        e.load_state(&path).unwrap();
        assert!(e.take_restored_open().is_empty());
    }

    #[test]
    fn state_file_is_0600_in_a_0700_directory_whatever_the_umask() {
        let _umask = Umask::set(0o022);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/rules-state.json");
        engine().save_state(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(!tmp.path().join("state/rules-state.json.tmp").exists());

        // A temp file left 0644 by an interrupted save does not pass its mode on.
        let stale = tmp.path().join("state/rules-state.json.tmp");
        std::fs::write(&stale, b"{").unwrap();
        set_mode(&stale, 0o644);
        engine().save_state(&path).unwrap();
        assert_eq!(mode(&path), 0o600);

        // An existing directory is left as it is (it may be shared).
        set_mode(path.parent().unwrap(), 0o750);
        engine().save_state(&path).unwrap();
        assert_eq!(mode(path.parent().unwrap()), 0o750);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn an_open_state_file_is_restricted_at_load_and_still_loaded() {
        let _umask = Umask::set(0o022);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("rules-state.json");
        engine().save_state(&path).unwrap();
        set_mode(&path, 0o644);
        assert_eq!(engine().load_state(&path).unwrap(), 0);
        assert_eq!(mode(&path), 0o600);
        // Already private (even stricter) is left alone.
        set_mode(&path, 0o400);
        engine().load_state(&path).unwrap();
        assert_eq!(mode(&path), 0o400);
        // A missing file is still a fresh start, not an error.
        assert_eq!(
            engine().load_state(&tmp.path().join("none.json")).unwrap(),
            0
        );
    }
}
