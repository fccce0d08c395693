//! The on-disk spool any sink can use: where a sink's writer puts encoded records while its
//! server is failing, and what it replays, oldest first, once the server answers again (also
//! after a restart or a `kill -9`). The owning sink ([`SpoolOwner`]) names its errors, logs
//! and metrics (`sitewatch_<sink>_spool_bytes`, ...; below with the InfluxDB sink's names)
//! and says how to count the records of a payload.
//!
//! # Layout
//!
//! ```text
//! <spool_dir>/LOCK                         held (flock) by the running writer
//! <spool_dir>/events/00000000000000000007.seg
//! <spool_dir>/series/00000000000000000003.seg
//! <spool_dir>/series/00000000000000000004.seg
//! ```
//!
//! Events and series have their own queue of append-only segment files, so events can be
//! replayed first and series dropped first. A segment is a sequence of records:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 (IEEE) of the payload | payload (complete records: for
//!                                                                 line protocol, lines ending in \n)
//! ```
//!
//! A record is one write of one or more batches. Segments of an earlier run are never
//! appended to; each run starts a new one. A segment is deleted once every record in it has
//! been written to the server (or rejected by it).
//!
//! # Permissions
//!
//! The spool holds what the collectors read (device names, sites, values, alert events), for
//! the sitewatch user only, whatever the process umask: directories are created 0700 and
//! files (segments, `LOCK`) 0600. At open, an existing spool directory, queue directory,
//! `LOCK` or segment that group or others may access (say 0755/0644 from an older version or
//! a copy) is tightened to 0700/0600 with a warning naming it. If that cannot be done (the
//! file belongs to another user), opening fails with an error naming the path and the fix,
//! rather than keep writing data others can read.
//!
//! # Crashes
//!
//! On open every segment is scanned: a torn or corrupt record (short, impossible length, CRC
//! mismatch) ends the segment there; the file is truncated at that offset, an error is logged
//! and `sitewatch_influx_spool_corrupt_total` counts it. Records before it replay normally.
//! The read position is not persisted: after a crash the oldest segment is replayed from its
//! start, so up to one segment may be written twice. InfluxDB and Prometheus-compatible
//! stores keep one point per series and timestamp, so that overwrites rather than duplicates.
//!
//! # Size cap
//!
//! Before an append that would take the spool over `spool_max_bytes`, whole segments are
//! deleted, oldest first: series segments while there are any, events segments only when no
//! series data is left. What is lost is counted as
//! `sitewatch_influx_dropped_total{reason="spool_full"}` and logged at error.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::memory::Lane;

const HEADER_LEN: u64 = 8;
/// Mode of spool directories and files (see "Permissions").
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// A record claiming more is treated as corruption (the writer never builds one this big).
const MAX_RECORD: u64 = 256 << 20;
const SEGMENT_SUFFIX: &str = ".seg";

/// The sink a spool belongs to: it names the spool's errors (`[influx] spool_dir ...`), logs
/// and metrics (`sitewatch_influx_spool_bytes`, ...), and counts the records in a payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpoolOwner {
    pub sink: &'static str,
    /// Records in one appended payload (line protocol: its lines).
    pub count_records: fn(&[u8]) -> usize,
}

impl SpoolOwner {
    fn metric(&self, what: &str) -> String {
        format!("sitewatch_{}_{what}", self.sink)
    }
}

/// Records of newline-terminated formats (InfluxDB line protocol).
pub(crate) fn count_lines(payload: &[u8]) -> usize {
    payload.iter().filter(|&&b| b == b'\n').count()
}

/// When the spool calls `fsync`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every record.
    Always,
    /// Once per group of records written together (the batches that were waiting in the
    /// channels at that moment), before their acks are completed.
    #[default]
    Batch,
    /// Never; the OS writes back on its own. Survives a process crash, not a power cut.
    Never,
}

/// Errors opening the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "[{sink}] spool_dir {path}: {source}; check that the directory (or its parent) exists \
         and is writable by the sitewatch user"
    )]
    Io {
        sink: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "[{sink}] spool_dir {path} is in use by another sitewatch process (its LOCK file is \
         held); give each instance its own spool_dir"
    )]
    Locked { sink: &'static str, path: PathBuf },
    #[error(
        "[{sink}] spool_dir: {path} has mode {mode:04o}, open to other users, and cannot be \
         restricted to {want:04o}: {source}; make the sitewatch user its owner, or fix it by \
         hand (chown -R sitewatch: <spool_dir>; chmod -R go-rwx <spool_dir>)"
    )]
    Permissions {
        sink: &'static str,
        path: PathBuf,
        mode: u32,
        want: u32,
        #[source]
        source: io::Error,
    },
}

/// Why the spool could not be opened, before it is tied to the spool root.
enum OpenError {
    Io(io::Error),
    Permissions(SpoolError),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Creates `dir` and missing parents with mode 0700 (not the umask's 0755).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir)
    }
}

/// Open options that create files with mode 0600 (not the umask's 0644).
fn private_file() -> OpenOptions {
    #[allow(unused_mut)]
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

/// Takes every group and other permission away from `path` (to `want`, 0700 or 0600) if it
/// has any, with a warning. A path that is already private is left alone.
#[cfg(unix)]
fn make_private(path: &Path, want: u32, sink: &'static str) -> Result<(), OpenError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    match fs::set_permissions(path, fs::Permissions::from_mode(want)) {
        Ok(()) => {
            tracing::warn!(
                path = %path.display(),
                was = format!("{mode:04o}"),
                now = format!("{want:04o}"),
                sink,
                "spool: other users could read this; restricted to the sitewatch user"
            );
            Ok(())
        }
        Err(source) => Err(OpenError::Permissions(SpoolError::Permissions {
            sink,
            path: path.to_path_buf(),
            mode,
            want,
            source,
        })),
    }
}

#[cfg(not(unix))]
fn make_private(_path: &Path, _want: u32, _sink: &'static str) -> Result<(), OpenError> {
    Ok(())
}

/// A position in a queue: segment, byte offset in it, lines before that offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    seq: u64,
    offset: u64,
    lines: usize,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    bytes: u64,
    lines: usize,
}

/// Lines read from a queue for one write request.
pub(crate) struct SpoolRead {
    pub body: Vec<u8>,
    pub end: Cursor,
}

/// One queue (events or series): segment files in one directory.
pub(crate) struct SpoolQueue {
    dir: PathBuf,
    name: &'static str,
    owner: SpoolOwner,
    segments: VecDeque<Segment>,
    /// Append handle of the last segment; None until the first append of this run.
    writer: Option<File>,
    next_seq: u64,
    segment_bytes: u64,
    /// Committed read position; `seq` is the head segment's (or `next_seq` when empty).
    read: Cursor,
    /// End of what `read_batch` handed out and is not committed yet.
    taken: Option<Cursor>,
    reader: Option<(u64, File)>,
    bytes: u64,
    lines: usize,
    dirty: bool,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

/// Reads one record at the reader's position. `Ok(None)`: clean end (no bytes left).
/// `Err(reason)`: torn or corrupt.
fn read_record(
    r: &mut impl Read,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> Result<Option<()>, &'static str> {
    if remaining == 0 {
        return Ok(None);
    }
    if remaining < HEADER_LEN {
        return Err("torn record header");
    }
    let mut header = [0u8; HEADER_LEN as usize];
    r.read_exact(&mut header)
        .map_err(|_| "unreadable record header")?;
    let len = u64::from(u32::from_le_bytes(
        header[0..4].try_into().expect("4 bytes"),
    ));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD {
        return Err("impossible record length");
    }
    if len > remaining - HEADER_LEN {
        return Err("torn record (shorter than its length)");
    }
    payload.clear();
    payload.resize(len as usize, 0);
    r.read_exact(payload).map_err(|_| "unreadable record")?;
    if crc32fast::hash(payload) != crc {
        return Err("record checksum mismatch");
    }
    if payload.last() != Some(&b'\n') {
        return Err("record does not end with a complete line");
    }
    Ok(Some(()))
}

fn report_corruption(owner: SpoolOwner, path: &Path, offset: u64, size: u64, reason: &str) {
    metrics::counter!(owner.metric("spool_corrupt_total")).increment(1);
    tracing::error!(
        sink = owner.sink, segment = %path.display(), offset, bytes_discarded = size.saturating_sub(offset), reason,
        "spool: corrupt or torn record (crash or disk fault); truncating the segment \
         there, the records before it are replayed"
    );
}

impl SpoolQueue {
    fn open(
        dir: PathBuf,
        name: &'static str,
        segment_bytes: u64,
        owner: SpoolOwner,
    ) -> Result<SpoolQueue, OpenError> {
        create_private_dir(&dir)?;
        make_private(&dir, DIR_MODE, owner.sink)?;
        let mut seqs: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        let mut q = SpoolQueue {
            dir,
            name,
            owner,
            segments: VecDeque::new(),
            writer: None,
            next_seq: seqs.last().map_or(0, |s| s + 1),
            segment_bytes,
            read: Cursor {
                seq: 0,
                offset: 0,
                lines: 0,
            },
            taken: None,
            reader: None,
            bytes: 0,
            lines: 0,
            dirty: false,
        };
        for seq in seqs {
            let path = segment_path(&q.dir, seq);
            make_private(&path, FILE_MODE, owner.sink)?;
            let (bytes, lines) = scan_segment(&path, owner)?;
            if bytes == 0 {
                fs::remove_file(&path)?;
                continue;
            }
            q.bytes += bytes;
            q.lines += lines;
            q.segments.push_back(Segment {
                seq,
                path,
                bytes,
                lines,
            });
        }
        q.reset_read();
        Ok(q)
    }

    fn reset_read(&mut self) {
        self.read = Cursor {
            seq: self.segments.front().map_or(self.next_seq, |s| s.seq),
            offset: 0,
            lines: 0,
        };
    }

    /// Lines not yet committed as written.
    pub fn unread_lines(&self) -> usize {
        self.lines - self.read.lines
    }

    pub fn is_empty(&self) -> bool {
        self.unread_lines() == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn is_writer_segment(&self, seq: u64) -> bool {
        self.writer.is_some() && self.segments.back().is_some_and(|s| s.seq == seq)
    }

    /// Appends one record (complete lines). On error the segment is cut back to its last
    /// good record, so a failed append leaves no torn record behind.
    fn append(&mut self, payload: &[u8], lines: usize, fsync_new_files: bool) -> io::Result<()> {
        let needs_new = match (&self.writer, self.segments.back()) {
            (Some(_), Some(last)) => last.bytes >= self.segment_bytes,
            _ => true,
        };
        if needs_new {
            let seq = self.next_seq;
            let path = segment_path(&self.dir, seq);
            let file = private_file().create_new(true).append(true).open(&path)?;
            if fsync_new_files {
                // The new directory entry must survive a power cut too.
                File::open(&self.dir)?.sync_all()?;
            }
            self.next_seq += 1;
            if self.segments.is_empty() {
                self.read = Cursor {
                    seq,
                    offset: 0,
                    lines: 0,
                };
            }
            self.segments.push_back(Segment {
                seq,
                path,
                bytes: 0,
                lines: 0,
            });
            self.writer = Some(file);
        }
        let mut record = Vec::with_capacity(payload.len() + HEADER_LEN as usize);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        record.extend_from_slice(payload);
        let file = self.writer.as_mut().expect("writer opened above");
        let seg = self.segments.back_mut().expect("segment pushed above");
        if let Err(e) = file.write_all(&record) {
            let _ = file.set_len(seg.bytes);
            // Start a fresh segment next time rather than trust this handle's position.
            self.writer = None;
            return Err(e);
        }
        seg.bytes += record.len() as u64;
        seg.lines += lines;
        self.bytes += record.len() as u64;
        self.lines += lines;
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            if let Some(f) = &self.writer {
                f.sync_data()?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Reads records from the first line not yet handed out, until at least `max_lines`
    /// lines or the end of the queue. Corrupt records found on the way are cut off (and
    /// counted); unreadable segments are dropped (and counted).
    pub fn read_batch(&mut self, max_lines: usize) -> Option<SpoolRead> {
        let mut at = self.taken.unwrap_or(self.read);
        let mut body = Vec::new();
        let mut lines = 0;
        let mut payload = Vec::new();
        while lines < max_lines.max(1) {
            let Some(idx) = self.segments.iter().position(|s| s.seq >= at.seq) else {
                break;
            };
            let (seq, size, path) = {
                let s = &self.segments[idx];
                (s.seq, s.bytes, s.path.clone())
            };
            if seq != at.seq {
                at = Cursor {
                    seq,
                    offset: 0,
                    lines: 0,
                };
            }
            if at.offset >= size {
                match self.segments.get(idx + 1) {
                    Some(next) => {
                        at = Cursor {
                            seq: next.seq,
                            offset: 0,
                            lines: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let file = match self.reader.take() {
                Some((s, f)) if s == seq => Ok(f),
                _ => File::open(&path),
            };
            let mut file = match file {
                Ok(f) => f,
                Err(e) => {
                    self.lose_segment(idx, &format!("cannot open for replay: {e}"));
                    continue;
                }
            };
            if let Err(e) = file.seek(SeekFrom::Start(at.offset)) {
                self.lose_segment(idx, &format!("cannot seek for replay: {e}"));
                continue;
            }
            let mut r = BufReader::new(&mut file);
            while lines < max_lines.max(1) && at.offset < size {
                match read_record(&mut r, size - at.offset, &mut payload) {
                    Ok(Some(())) => {
                        let n = (self.owner.count_records)(&payload);
                        body.extend_from_slice(&payload);
                        lines += n;
                        at.offset += HEADER_LEN + payload.len() as u64;
                        at.lines += n;
                    }
                    Ok(None) => break,
                    Err(reason) => {
                        // Written and checked by this process, yet unreadable now: the disk
                        // or someone else changed it. Keep what came before.
                        report_corruption(self.owner, &path, at.offset, size, reason);
                        let _ = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(at.offset));
                        let seg = &mut self.segments[idx];
                        let lost = seg.lines.saturating_sub(at.lines);
                        self.bytes -= seg.bytes - at.offset;
                        self.lines -= lost;
                        seg.bytes = at.offset;
                        seg.lines = at.lines;
                        if self.is_writer_segment(seq) {
                            self.writer = None;
                        }
                        metrics::counter!(self.owner.metric("dropped_total"), "reason" => "spool_corrupt")
                            .increment(lost as u64);
                        break;
                    }
                }
            }
            drop(r);
            self.reader = Some((seq, file));
        }
        if lines == 0 {
            return None;
        }
        self.taken = Some(at);
        Some(SpoolRead { body, end: at })
    }

    /// Drops segment `idx` whose file cannot be read, counting its unread lines.
    fn lose_segment(&mut self, idx: usize, why: &str) {
        let seg = &self.segments[idx];
        let done = if seg.seq == self.read.seq {
            self.read.lines
        } else {
            0
        };
        let lost = seg.lines - done;
        tracing::error!(sink = self.owner.sink, segment = %seg.path.display(), lines = lost, error = why, "spool: segment lost");
        metrics::counter!(self.owner.metric("dropped_total"), "reason" => "spool_corrupt")
            .increment(lost as u64);
        self.remove_segment(idx);
    }

    fn remove_segment(&mut self, idx: usize) {
        let seg = self.segments.remove(idx).expect("index in range");
        self.bytes -= seg.bytes;
        self.lines -= seg.lines;
        if self.reader.as_ref().is_some_and(|(s, _)| *s == seg.seq) {
            self.reader = None;
        }
        if self.segments.is_empty() || idx == self.segments.len() {
            // It was the last one, the one being appended to.
            self.writer = None;
        }
        if let Err(e) = fs::remove_file(&seg.path) {
            tracing::warn!(segment = %seg.path.display(), error = %e, "spool: cannot delete a segment");
        }
        if idx == 0 {
            self.reset_read();
        }
    }

    /// Marks everything up to `end` (from [`SpoolQueue::read_batch`]) as written and deletes
    /// segments that are fully written.
    pub fn commit(&mut self, end: Cursor) {
        self.taken = None;
        while self.segments.front().is_some_and(|s| s.seq < end.seq) {
            self.remove_segment(0);
        }
        if self.segments.front().is_some_and(|s| s.seq == end.seq) {
            self.read = end;
        }
        // A fully written head goes, even the one being appended to: the next append then
        // starts a new segment, and an idle spool leaves no files behind.
        if self
            .segments
            .front()
            .is_some_and(|head| self.read.offset >= head.bytes)
        {
            self.remove_segment(0);
        }
    }

    /// Forgets what `read_batch` handed out without writing it (shutdown with a request in
    /// flight): it is read again next time.
    pub fn release(&mut self) {
        self.taken = None;
    }

    /// Deletes the oldest segment; returns its lines not yet written (or in flight).
    fn drop_oldest(&mut self) -> Option<(PathBuf, usize)> {
        let head = self.segments.front()?;
        let done = match self.taken {
            Some(t) if t.seq > head.seq => head.lines,
            Some(t) if t.seq == head.seq => t.lines,
            _ if self.read.seq == head.seq => self.read.lines,
            _ => 0,
        };
        let lost = head.lines - done;
        let path = head.path.clone();
        self.remove_segment(0);
        Some((path, lost))
    }
}

/// Reads a segment from disk, truncating it at the first torn or corrupt record. Returns
/// its good size and line count.
fn scan_segment(path: &Path, owner: SpoolOwner) -> io::Result<(u64, usize)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut offset = 0;
    let mut lines = 0;
    let mut payload = Vec::new();
    loop {
        match read_record(&mut r, size - offset, &mut payload) {
            Ok(Some(())) => {
                offset += HEADER_LEN + payload.len() as u64;
                lines += (owner.count_records)(&payload);
            }
            Ok(None) => break,
            Err(reason) => {
                report_corruption(owner, path, offset, size, reason);
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(offset)?;
                f.sync_all()?;
                break;
            }
        }
    }
    Ok((offset, lines))
}

/// An exclusive, non-blocking advisory lock held until the file is closed (also by a crash,
/// so a `kill -9` leaves no stale lock). Ok(false): another process holds it.
#[cfg(unix)]
fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> io::Result<bool> {
    Ok(true)
}

/// What an append to the spool did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AppendOutcome {
    /// Lines of older segments deleted to make room, per queue.
    pub dropped_series: usize,
    pub dropped_events: usize,
    /// The record itself did not fit even in an empty spool and was dropped.
    pub dropped_self: bool,
}

/// Both queues, the size cap and the fsync policy.
pub(crate) struct Spool {
    owner: SpoolOwner,
    root: PathBuf,
    events: SpoolQueue,
    series: SpoolQueue,
    max_bytes: u64,
    fsync: FsyncPolicy,
    _lock: File,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("root", &self.root)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (creating it if needed) and scans the spool, truncating torn records.
    pub fn open(
        root: &Path,
        max_bytes: u64,
        fsync: FsyncPolicy,
        owner: SpoolOwner,
    ) -> Result<Spool, SpoolError> {
        let sink = owner.sink;
        let io_err = |source| SpoolError::Io {
            sink,
            path: root.to_path_buf(),
            source,
        };
        let open_err = |e: OpenError| match e {
            OpenError::Io(source) => io_err(source),
            OpenError::Permissions(e) => e,
        };
        create_private_dir(root).map_err(io_err)?;
        make_private(root, DIR_MODE, sink).map_err(open_err)?;
        let lock_path = root.join("LOCK");
        let lock = private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err)?;
        make_private(&lock_path, FILE_MODE, sink).map_err(open_err)?;
        match try_lock(&lock) {
            Ok(true) => {}
            Ok(false) => {
                return Err(SpoolError::Locked {
                    sink,
                    path: root.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err(e)),
        }
        // Small enough that dropping one for room loses a small share of the cap, large
        // enough that files stay few.
        let segment_bytes = (max_bytes / 16).clamp(4 << 10, 64 << 20);
        let events = SpoolQueue::open(root.join("events"), "events", segment_bytes, owner)
            .map_err(open_err)?;
        let series = SpoolQueue::open(root.join("series"), "series", segment_bytes, owner)
            .map_err(open_err)?;
        let spool = Spool {
            owner,
            root: root.to_path_buf(),
            events,
            series,
            max_bytes,
            fsync,
            _lock: lock,
        };
        if !spool.is_empty() {
            tracing::info!(
                spool = %root.display(),
                events = spool.events.unread_lines(),
                series = spool.series.unread_lines(),
                bytes = spool.bytes(),
                sink,
                "spool holds data from an earlier run; replaying it oldest first"
            );
        }
        spool.update_gauges();
        Ok(spool)
    }

    pub fn queue(&mut self, source: Lane) -> &mut SpoolQueue {
        match source {
            Lane::Events => &mut self.events,
            Lane::Series => &mut self.series,
        }
    }

    pub fn queue_ref(&self, source: Lane) -> &SpoolQueue {
        match source {
            Lane::Events => &self.events,
            Lane::Series => &self.series,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.events.bytes() + self.series.bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.series.is_empty()
    }

    pub fn unread_lines(&self) -> usize {
        self.events.unread_lines() + self.series.unread_lines()
    }

    pub fn update_gauges(&self) {
        metrics::gauge!(self.owner.metric("spool_bytes")).set(self.bytes() as f64);
        metrics::gauge!(self.owner.metric("spool_samples")).set(self.unread_lines() as f64);
    }

    /// Appends complete lines to a queue, first deleting the oldest segments (series before
    /// events) if the cap would be exceeded. `Err` means nothing was stored.
    pub fn append(
        &mut self,
        source: Lane,
        payload: &[u8],
        lines: usize,
    ) -> io::Result<AppendOutcome> {
        let need = payload.len() as u64 + HEADER_LEN;
        let mut out = AppendOutcome::default();
        // Checked first, so an impossible write does not empty the spool on its way out.
        let fits = need <= self.max_bytes;
        while fits && self.bytes() + need > self.max_bytes {
            let (victim, dropped) = if !self.series.segments.is_empty() {
                (&mut self.series, &mut out.dropped_series)
            } else if !self.events.segments.is_empty() {
                (&mut self.events, &mut out.dropped_events)
            } else {
                break;
            };
            let name = victim.name;
            if let Some((path, lost)) = victim.drop_oldest() {
                *dropped += lost;
                metrics::counter!(self.owner.metric("dropped_total"), "reason" => "spool_full")
                    .increment(lost as u64);
                tracing::error!(
                    sink = self.owner.sink, queue = name, segment = %path.display(), samples = lost,
                    max_bytes = self.max_bytes,
                    "spool full (spool_max_bytes): deleted its oldest segment; these \
                     samples are lost. The server has been unreachable for long, or the cap is \
                     too small for the outage"
                );
            }
        }
        if !fits {
            metrics::counter!(self.owner.metric("dropped_total"), "reason" => "spool_full")
                .increment(lines as u64);
            tracing::error!(
                sink = self.owner.sink,
                bytes = need,
                max_bytes = self.max_bytes,
                "spool: one write is larger than spool_max_bytes; dropped"
            );
            out.dropped_self = true;
            return Ok(out);
        }
        let fsync_new = self.fsync != FsyncPolicy::Never;
        let q = self.queue(source);
        q.append(payload, lines, fsync_new)?;
        if self.fsync == FsyncPolicy::Always {
            self.queue(source).sync()?;
        }
        Ok(out)
    }

    /// Makes every append so far durable according to the policy (`never`: nothing).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        self.events.sync()?;
        self.series.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_OWNER: SpoolOwner = SpoolOwner {
        sink: "influx",
        count_records: count_lines,
    };

    fn lines(from: usize, n: usize) -> Vec<u8> {
        (from..from + n)
            .map(|i| format!("m v={i}i {i}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn drain(q: &mut SpoolQueue, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(r) = q.read_batch(max) {
            out.extend(
                String::from_utf8(r.body)
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
            q.commit(r.end);
        }
        out
    }

    fn expected(from: usize, n: usize) -> Vec<String> {
        (from..from + n).map(|i| format!("m v={i}i {i}")).collect()
    }

    #[test]
    fn replays_in_order_across_segments_and_deletes_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 << 10, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        for k in 0..100 {
            s.append(Lane::Series, &lines(k * 10, 10), 10).unwrap();
        }
        s.sync().unwrap();
        assert_eq!(s.unread_lines(), 1000);
        let segs = fs::read_dir(dir.path().join("series")).unwrap().count();
        assert!(segs > 1, "4 KiB segments: {segs}");
        let got = drain(s.queue(Lane::Series), 64);
        assert_eq!(got, expected(0, 1000));
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        assert_eq!(fs::read_dir(dir.path().join("series")).unwrap().count(), 0);
        // Appending after draining starts over cleanly.
        s.append(Lane::Series, &lines(5, 1), 1).unwrap();
        assert_eq!(drain(s.queue(Lane::Series), 64), expected(5, 1));
    }

    #[test]
    fn survives_reopen_and_replays_uncommitted_reads_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Always, TEST_OWNER).unwrap();
            s.append(Lane::Series, &lines(0, 3), 3).unwrap();
            s.append(Lane::Events, &lines(100, 2), 2).unwrap();
            s.append(Lane::Series, &lines(3, 3), 3).unwrap();
            // Handed out but never committed (a crash mid-request).
            let r = s.queue(Lane::Series).read_batch(3).unwrap();
            assert_eq!(r.body, lines(0, 3));
        }
        let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Always, TEST_OWNER).unwrap();
        assert_eq!(s.unread_lines(), 8);
        assert_eq!(drain(s.queue(Lane::Events), 10), expected(100, 2));
        assert_eq!(drain(s.queue(Lane::Series), 2), expected(0, 6));
        // A new run appends to a new segment, after the old ones.
        s.append(Lane::Series, &lines(6, 1), 1).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Always, TEST_OWNER).unwrap();
        assert_eq!(drain(s.queue(Lane::Series), 10), expected(6, 1));
    }

    #[test]
    fn torn_and_corrupt_tails_are_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
            s.append(Lane::Series, &lines(0, 2), 2).unwrap();
            s.append(Lane::Series, &lines(2, 2), 2).unwrap();
            s.sync().unwrap();
        }
        let seg = fs::read_dir(dir.path().join("series"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = fs::metadata(&seg).unwrap().len();
        // A torn third record: header claims 100 bytes, 5 follow.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&100u32.to_le_bytes()).unwrap();
        f.write_all(&0u32.to_le_bytes()).unwrap();
        f.write_all(b"m v=1").unwrap();
        drop(f);
        let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), good, "truncated");
        assert_eq!(drain(s.queue(Lane::Series), 10), expected(0, 4));
        drop(s);

        // Flip one payload byte of the second record: the first survives.
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
            s.append(Lane::Series, &lines(0, 2), 2).unwrap();
            s.append(Lane::Series, &lines(2, 2), 2).unwrap();
        }
        let seg = fs::read_dir(dir.path().join("series"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x01;
        fs::write(&seg, &bytes).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        assert_eq!(drain(s.queue(Lane::Series), 10), expected(0, 2));
    }

    #[test]
    fn corruption_found_during_replay_keeps_the_good_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        s.append(Lane::Series, &lines(0, 2), 2).unwrap();
        s.append(Lane::Series, &lines(2, 2), 2).unwrap();
        let seg = s.series.segments[0].path.clone();
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x01;
        fs::write(&seg, &bytes).unwrap();
        assert_eq!(drain(s.queue(Lane::Series), 10), expected(0, 2));
        assert!(s.is_empty());
    }

    #[test]
    fn cap_drops_oldest_series_segment_before_any_event() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB cap, 4 KiB segments.
        let mut s = Spool::open(dir.path(), 64 << 10, FsyncPolicy::Never, TEST_OWNER).unwrap();
        s.append(Lane::Events, &lines(1_000_000, 50), 50).unwrap();
        let mut dropped = 0;
        for k in 0..800 {
            let out = s.append(Lane::Series, &lines(k * 10, 10), 10).unwrap();
            assert_eq!(out.dropped_events, 0);
            dropped += out.dropped_series;
        }
        assert!(s.bytes() <= 64 << 10);
        assert!(dropped > 0);
        let series = drain(s.queue(Lane::Series), 1000);
        assert_eq!(
            series.len() + dropped,
            8000,
            "every line replayed or counted"
        );
        // What is left is the newest data, in order.
        assert_eq!(series, expected(8000 - series.len(), series.len()));
        assert_eq!(drain(s.queue(Lane::Events), 1000), expected(1_000_000, 50));
        // With no series left, events go oldest first.
        let mut ev_dropped = 0;
        for k in 0..800 {
            ev_dropped += s
                .append(Lane::Events, &lines(k * 10, 10), 10)
                .unwrap()
                .dropped_events;
        }
        assert!(ev_dropped > 0);
        let events = drain(s.queue(Lane::Events), 1000);
        assert_eq!(events.len() + ev_dropped, 8000);
        // A record larger than the whole cap is refused and counted.
        let big = lines(0, 8000);
        let n = count_lines(&big);
        let before = s.bytes();
        assert!(s.append(Lane::Series, &big, n).unwrap().dropped_self);
        assert_eq!(s.bytes(), before, "nothing else dropped for it");
    }

    #[test]
    fn dropping_the_segment_in_flight_counts_only_unsent_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 << 10, FsyncPolicy::Never, TEST_OWNER).unwrap();
        for k in 0..10 {
            s.append(Lane::Series, &lines(k * 10, 10), 10).unwrap();
        }
        let first_seg_lines = s.series.segments[0].lines;
        let r = s.queue(Lane::Series).read_batch(10).unwrap();
        assert_eq!(count_lines(&r.body), 10);
        let (_, lost) = s.series.drop_oldest().unwrap();
        assert_eq!(lost, first_seg_lines - 10);
        // The request in flight completes later; its commit must not skip anything.
        s.queue(Lane::Series).commit(r.end);
        let rest = drain(s.queue(Lane::Series), 1000);
        assert_eq!(rest.len(), 100 - first_seg_lines);
        assert_eq!(rest, expected(first_seg_lines, 100 - first_seg_lines));
    }

    #[cfg(unix)]
    use crate::test_support::Umask;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[cfg(unix)]
    fn segments(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[cfg(unix)]
    #[test]
    fn created_private_whatever_the_umask() {
        let _umask = Umask::set(0o022);
        let tmp = tempfile::tempdir().unwrap();
        // Missing parents are created private too.
        let root = tmp.path().join("var/spool");
        let mut s = Spool::open(&root, 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        s.append(Lane::Series, &lines(0, 3), 3).unwrap();
        s.append(Lane::Events, &lines(3, 1), 1).unwrap();
        s.sync().unwrap();
        for d in [
            tmp.path().join("var"),
            root.clone(),
            root.join("events"),
            root.join("series"),
        ] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&root.join("LOCK")), 0o600);
        let segs: Vec<PathBuf> = ["events", "series"]
            .iter()
            .flat_map(|q| segments(&root.join(q)))
            .collect();
        assert_eq!(segs.len(), 2, "{segs:?}");
        for seg in segs {
            assert_eq!(mode(&seg), 0o600, "{}", seg.display());
        }
    }

    #[cfg(unix)]
    #[test]
    fn an_open_spool_is_tightened_at_open_and_keeps_its_data() {
        use std::os::unix::fs::PermissionsExt;
        let _umask = Umask::set(0o022);
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("spool");
        {
            let mut s = Spool::open(&root, 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
            s.append(Lane::Series, &lines(0, 5), 5).unwrap();
            s.sync().unwrap();
        }
        // As an older version (or `cp -r`) would have left it.
        let set = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        set(&root, 0o755);
        set(&root.join("series"), 0o777);
        set(&root.join("events"), 0o750);
        set(&root.join("LOCK"), 0o644);
        let seg = segments(&root.join("series")).remove(0);
        set(&seg, 0o666);

        let mut s = Spool::open(&root, 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("series")), 0o700);
        assert_eq!(mode(&root.join("events")), 0o700);
        assert_eq!(mode(&root.join("LOCK")), 0o600);
        assert_eq!(mode(&seg), 0o600);
        assert_eq!(drain(s.queue(Lane::Series), 100), expected(0, 5));
        // Already private, and stricter than asked, is left alone.
        drop(s);
        set(&root.join("LOCK"), 0o400);
        let _s = Spool::open(&root, 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        assert_eq!(mode(&root.join("LOCK")), 0o400);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_spool() {
        let dir = tempfile::tempdir().unwrap();
        let _s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        let e = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Batch, TEST_OWNER).unwrap_err();
        assert!(matches!(e, SpoolError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("spool_dir"));
    }

    /// Measurement, not a check: `cargo test --release --lib spool_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement"]
    fn spool_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30, FsyncPolicy::Batch, TEST_OWNER).unwrap();
        let line = format!(
            "ups,site=ams1,device=ups-{:03} load_pct=42.5,runtime_s=1800i 1700000000000000000\n",
            7
        );
        let record: Vec<u8> = line.repeat(1000).into_bytes();
        let t = std::time::Instant::now();
        let records = 200;
        for _ in 0..records {
            s.append(Lane::Series, &record, 1000).unwrap();
            s.sync().unwrap();
        }
        let w = t.elapsed();
        let t = std::time::Instant::now();
        let n = drain(s.queue(Lane::Series), 5000).len();
        let r = t.elapsed();
        let mb = (record.len() * records) as f64 / 1e6;
        println!(
            "append+fsync per 1000-line record: {:.0} lines/s, {:.0} MB/s; replay: {:.0} lines/s",
            (records * 1000) as f64 / w.as_secs_f64(),
            mb / w.as_secs_f64(),
            n as f64 / r.as_secs_f64()
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Arbitrary bytes appended to a segment (a torn write, a foreign file) never
            /// panic the scan, and every record before them still replays.
            #[test]
            fn garbage_after_good_records_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..200), good in 1usize..5) {
                let dir = tempfile::tempdir().unwrap();
                {
                    let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Never, TEST_OWNER).unwrap();
                    for k in 0..good {
                        s.append(Lane::Series, &lines(k, 1), 1).unwrap();
                    }
                }
                let seg = fs::read_dir(dir.path().join("series")).unwrap().next().unwrap().unwrap().path();
                let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
                f.write_all(&garbage).unwrap();
                drop(f);
                let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Never, TEST_OWNER).unwrap();
                let got = drain(s.queue(Lane::Series), 3);
                // Garbage can by chance form a valid record only if its CRC matches.
                prop_assert!(got.len() >= good);
                prop_assert_eq!(&got[..good], &expected(0, good)[..]);
            }

            /// Random appends, reads and commits keep the order and lose nothing.
            #[test]
            fn interleaved_appends_and_reads_keep_order(ops in proptest::collection::vec((1usize..20, 1usize..30, any::<bool>()), 1..40)) {
                let dir = tempfile::tempdir().unwrap();
                let mut s = Spool::open(dir.path(), 1 << 20, FsyncPolicy::Never, TEST_OWNER).unwrap();
                let mut next = 0;
                let mut got = Vec::new();
                for (n, read, commit) in ops {
                    s.append(Lane::Series, &lines(next, n), n).unwrap();
                    next += n;
                    if let Some(r) = s.queue(Lane::Series).read_batch(read) {
                        if commit {
                            got.extend(String::from_utf8(r.body).unwrap().lines().map(str::to_string));
                            s.queue(Lane::Series).commit(r.end);
                        } else {
                            s.queue(Lane::Series).release();
                        }
                    }
                }
                got.extend(drain(s.queue(Lane::Series), 7));
                prop_assert_eq!(got, expected(0, next));
                prop_assert!(s.is_empty());
            }
        }
    }
}
