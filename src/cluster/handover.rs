//! The handover: turns the [`View`] (which units rendezvous hashing gives this member) into
//! the [`super::ownership::Active`] units the collectors run, moving each unit's rule state
//! with it through etcd ([`super::checkpoint`]).
//!
//! - **Gained**: read the unit's checkpoint. While its writer is still a live member that has
//!   not released it (a rebalance: the member that returned takes units from one still
//!   running), wait for the release, at most `failover_after`. Then the rules stage takes up
//!   the state ([`UnitCommand::Restore`]), a claim is written (this member owns the
//!   checkpoint now), and only then is the unit active: its collector starts on restored
//!   state, so a firing alarm stays firing, with no second notification.
//! - **Lost**: inactive at once (no poll, no MQTT session from now); once its collector has
//!   stopped ([`super::ownership::ActivePublisher::stopped`]: the last samples are through the
//!   rules stage), the stage hands the state over ([`UnitCommand::Release`]) and it is
//!   written with `released`.
//! - **Meanwhile**: the stage's checkpoints (every 5 s, and at once when an alert of the
//!   unit changes) are written for the active units, so a member killed outright leaves its state
//!   at most that old; the others take it up once its lease is gone.
//! - **etcd unreachable**: a fenced member writes nothing (its lease may be gone); it keeps
//!   the checkpoints of what it released in memory, and uses them if fail-static makes it
//!   take units again without etcd.
//! - **Shutdown**: the stage's last checkpoint of every unit is written as released before
//!   the lease is revoked, so the others continue exactly where this member stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::checkpoint;
use super::config::ClusterConfig;
use super::fencing::keep_alive_period;
use super::ownership::{ActivePublisher, ViewReader};
use super::session::SessionSlot;
use crate::rules::handover::{UnitCheckpoint, UnitCommand, UnitPort};

/// How long a release waits for the unit's collector to stop (an MQTT session acknowledges
/// what it handed downstream first, up to its shutdown grace).
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How long the rules stage may take to answer a restore or a release.
const STAGE_WAIT: Duration = Duration::from_secs(10);
/// How often a checkpoint not released yet by a live previous owner is read again.
const RELEASE_POLL: Duration = Duration::from_millis(100);
/// Checkpoint writes in flight at once.
const PARALLEL_WRITES: usize = 32;
/// How long shutdown waits for the stage's last checkpoints and their writes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Acquiring,
    Active,
    Releasing,
}

enum Done {
    Acquired,
    Released,
}

/// What the unit tasks share.
struct Ctx {
    me: String,
    prefix: String,
    failover_after: Duration,
    etcd_timeout: Duration,
    view: ViewReader,
    active: ActivePublisher,
    session: SessionSlot,
    commands: Option<mpsc::Sender<UnitCommand>>,
    writes: mpsc::UnboundedSender<Write>,
    /// The last state this member held of each unit (released or written), for fail-static.
    cache: Mutex<HashMap<Arc<str>, Vec<u8>>>,
    /// Per unit whose checkpoint this member has claimed: the revision of its own last write.
    /// Writes are conditional on it, so only the claimer writes.
    revisions: Mutex<HashMap<Arc<str>, i64>>,
    /// Whether the last checkpoint write failed (one warning per outage).
    write_failing: AtomicBool,
}

impl Ctx {
    fn revision(&self, unit: &str) -> Option<i64> {
        lock(&self.revisions).get(unit).copied()
    }

    fn set_revision(&self, unit: &Arc<str>, rev: Option<i64>) {
        let mut r = lock(&self.revisions);
        match rev {
            Some(rev) => r.insert(unit.clone(), rev),
            None => r.remove(unit),
        };
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One checkpoint to write.
struct Write {
    unit: Arc<str>,
    state: Option<Vec<u8>>,
    released: bool,
    done: Option<oneshot::Sender<()>>,
}

/// The handover of one member: its units, the view it follows, the active units it
/// publishes, the etcd session it writes under and the rules stage's end of the link.
pub struct Handover {
    pub cfg: ClusterConfig,
    pub me: String,
    pub units: Vec<String>,
    pub view: ViewReader,
    pub active: ActivePublisher,
    pub session: SessionSlot,
    pub port: Option<UnitPort>,
}

impl Handover {
    /// Runs until `stop`, then releases every unit (see the module docs).
    pub async fn run(self, stop: CancellationToken) {
        metrics::counter!("sitewatch_cluster_checkpoint_writes_total", "result" => "ok")
            .increment(0);
        let (writes_tx, writes_rx) = mpsc::unbounded_channel();
        let (commands, mut checkpoints) = match self.port {
            Some(p) => (Some(p.commands), Some(p.checkpoints)),
            None => (None, None),
        };
        let ctx = Arc::new(Ctx {
            me: self.me,
            prefix: self.cfg.prefix(),
            failover_after: self.cfg.failover_after,
            etcd_timeout: keep_alive_period(self.cfg.failover_after).max(Duration::from_secs(1)),
            view: self.view.clone(),
            active: self.active,
            session: self.session,
            commands,
            writes: writes_tx,
            cache: Mutex::new(HashMap::new()),
            revisions: Mutex::new(HashMap::new()),
            write_failing: AtomicBool::new(false),
        });
        let writer = tokio::spawn(write_checkpoints(ctx.clone(), writes_rx));
        let mut view = self.view;
        let mut phases: HashMap<Arc<str>, Phase> = self
            .units
            .into_iter()
            .map(|u| (Arc::from(u), Phase::Idle))
            .collect();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Arc<str>, Done)>();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let current = view.borrow_and_update().clone();
            for (unit, phase) in phases.iter_mut() {
                let wanted = current.owns(unit);
                match (*phase, wanted) {
                    (Phase::Idle, true) => {
                        *phase = Phase::Acquiring;
                        tasks.spawn(acquire(ctx.clone(), unit.clone(), done_tx.clone()));
                    }
                    (Phase::Active, false) => {
                        *phase = Phase::Releasing;
                        ctx.active.set(unit, false);
                        tasks.spawn(release(ctx.clone(), unit.clone(), done_tx.clone()));
                    }
                    _ => {}
                }
            }
            metrics::gauge!("sitewatch_cluster_active_units").set(ctx.active.active_count() as f64);
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = view.changed() => if changed.is_err() { break },
                Some((unit, done)) = done_rx.recv() => {
                    let Some(phase) = phases.get_mut(&unit) else { continue };
                    match done {
                        Done::Acquired if view.borrow().owns(&unit) => {
                            *phase = Phase::Active;
                            ctx.active.set(&unit, true);
                        }
                        Done::Acquired => {
                            // Taken away while it was being restored: give it back.
                            *phase = Phase::Releasing;
                            tasks.spawn(release(ctx.clone(), unit, done_tx.clone()));
                        }
                        Done::Released => *phase = Phase::Idle,
                    }
                }
                Some(cp) = next_checkpoint(&mut checkpoints) => {
                    // Not once releasing: the release's own write is the last.
                    if matches!(phases.get(&cp.unit), Some(Phase::Active | Phase::Acquiring)) {
                        let _ = ctx.writes.send(Write { unit: cp.unit, state: Some(cp.bytes), released: cp.last, done: None });
                    }
                }
            }
        }
        // Shutdown: the collectors have stopped; the stage sends each unit's last state as
        // it finishes, and the channel closes with it.
        for (unit, phase) in &phases {
            if *phase == Phase::Active {
                ctx.active.set(unit, false);
            }
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        if let Some(rx) = &mut checkpoints {
            while let Ok(Some(cp)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                if phases.get(&cp.unit) == Some(&Phase::Active) {
                    let _ = ctx.writes.send(Write {
                        unit: cp.unit,
                        state: Some(cp.bytes),
                        released: true,
                        done: None,
                    });
                }
            }
        }
        tasks.abort_all();
        drop(done_tx);
        let (flushed_tx, flushed) = oneshot::channel();
        let _ = ctx.writes.send(Write {
            unit: "".into(),
            state: None,
            released: false,
            done: Some(flushed_tx),
        });
        let _ = tokio::time::timeout_at(deadline, flushed).await;
        writer.abort();
    }
}

async fn next_checkpoint(
    rx: &mut Option<mpsc::Receiver<UnitCheckpoint>>,
) -> Option<UnitCheckpoint> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Gains `unit`: waits for a live previous owner's release, restores, claims.
async fn acquire(ctx: Arc<Ctx>, unit: Arc<str>, done: mpsc::UnboundedSender<(Arc<str>, Done)>) {
    let started = Instant::now();
    let key = checkpoint::key(&ctx.prefix, &unit);
    let mut from: Option<String> = None;
    let mut state: Option<Vec<u8>> = None;
    let mut waited_for_release = false;
    loop {
        let Some(session) = ctx.session.get() else {
            state = cached(&ctx, &unit);
            break;
        };
        if !ctx.view.borrow().owns(&unit) {
            // Taken away again before it was taken up: the main loop releases it.
            break;
        }
        let found = match checkpoint::read(&session, &key, ctx.etcd_timeout).await {
            Ok(found) => found,
            Err(e) => {
                metrics::counter!("sitewatch_cluster_checkpoint_reads_failed_total").increment(1);
                tracing::warn!(unit = %unit, error = %e, "cluster handover: checkpoint not readable; using this member's own last copy, if any");
                state = cached(&ctx, &unit);
                break;
            }
        };
        let expect = match &found {
            Some((cp, rev)) => {
                let holder_live = cp.owner != ctx.me
                    && !cp.released
                    && ctx.view.borrow().members.contains(&cp.owner);
                if holder_live && started.elapsed() < ctx.failover_after {
                    waited_for_release = true;
                    tokio::time::sleep(RELEASE_POLL).await;
                    continue;
                }
                if holder_live {
                    tracing::warn!(unit = %unit, owner = %cp.owner, waited_s = started.elapsed().as_secs_f64(),
                        "cluster handover: the previous owner is alive and did not release the unit in time; taking its last checkpoint");
                }
                checkpoint::Expect::Revision(*rev)
            }
            None => checkpoint::Expect::Absent,
        };
        let (cp_owner, cp_state) = match found {
            Some((cp, _)) => (Some(cp.owner), cp.state),
            None => (None, None),
        };
        // The claim: from now only this member writes the unit's checkpoint. Refused when
        // someone wrote it since it was read (another member claimed it first at start-up,
        // or the holder released it just now): read again.
        let value = checkpoint::encode(&ctx.me, false, cp_state.as_deref());
        match checkpoint::write(&session, &key, value, expect, ctx.etcd_timeout).await {
            Ok(Some(rev)) => {
                ctx.set_revision(&unit, Some(rev));
                from = cp_owner;
                state = cp_state;
                break;
            }
            Ok(None) if started.elapsed() < ctx.failover_after => {
                tokio::time::sleep(RELEASE_POLL).await;
                continue;
            }
            Ok(None) => {
                tracing::warn!(unit = %unit, "cluster handover: the checkpoint could not be claimed within failover_after (the lease is gone, or other members keep writing it); taking the unit up from the last checkpoint read, without writing checkpoints");
                from = cp_owner;
                state = cp_state;
                break;
            }
            Err(e) => {
                tracing::warn!(unit = %unit, error = %e, "cluster handover: the checkpoint could not be claimed; taking the unit up from the last checkpoint read, without writing checkpoints");
                from = cp_owner;
                state = cp_state;
                break;
            }
        }
    }
    let records = match &ctx.commands {
        Some(commands) => {
            let (reply, answer) = oneshot::channel();
            let sent = commands
                .send(UnitCommand::Restore {
                    unit: unit.clone(),
                    checkpoint: state.clone(),
                    reply,
                })
                .await;
            match (sent, tokio::time::timeout(STAGE_WAIT, answer).await) {
                (Ok(()), Ok(Ok(Ok(n)))) => n,
                (Ok(()), Ok(Ok(Err(e)))) => {
                    metrics::counter!("sitewatch_cluster_restore_errors_total").increment(1);
                    tracing::error!(unit = %unit, error = %e, "cluster handover: rule state not restored");
                    0
                }
                _ => {
                    tracing::error!(unit = %unit, "cluster handover: the rules stage did not take the unit's state up (stopped or stuck); collecting it without");
                    0
                }
            }
        }
        None => 0,
    };
    if let Some(state) = state {
        lock(&ctx.cache).insert(unit.clone(), state);
    }
    let took = started.elapsed();
    metrics::histogram!("sitewatch_cluster_handover_seconds", "change" => "gained")
        .record(took.as_secs_f64());
    tracing::info!(
        unit = %unit,
        from = from.as_deref().unwrap_or("-"),
        waited_for_release,
        records,
        took_ms = took.as_millis() as u64,
        "cluster unit taken up with its rule state"
    );
    let _ = done.send((unit, Done::Acquired));
}

/// Loses `unit`: waits for its collector to stop, takes its state from the stage, writes
/// it as released.
async fn release(ctx: Arc<Ctx>, unit: Arc<str>, done: mpsc::UnboundedSender<(Arc<str>, Done)>) {
    let started = Instant::now();
    if !ctx.active.stopped(&unit, STOP_WAIT).await {
        tracing::warn!(unit = %unit, waited_s = STOP_WAIT.as_secs(), "cluster handover: the unit's collector did not stop in time; releasing its state anyway");
    }
    let state = match &ctx.commands {
        Some(commands) => {
            let (reply, answer) = oneshot::channel();
            let sent = commands
                .send(UnitCommand::Release {
                    unit: unit.clone(),
                    reply,
                })
                .await;
            match (sent, tokio::time::timeout(STAGE_WAIT, answer).await) {
                (Ok(()), Ok(Ok(bytes))) => Some(bytes),
                _ => None,
            }
        }
        None => None,
    };
    if let Some(bytes) = &state {
        ctx.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unit.clone(), bytes.clone());
    }
    let (written, written_rx) = oneshot::channel();
    let _ = ctx.writes.send(Write {
        unit: unit.clone(),
        state,
        released: true,
        done: Some(written),
    });
    let _ = tokio::time::timeout(STAGE_WAIT, written_rx).await;
    let took = started.elapsed();
    metrics::histogram!("sitewatch_cluster_handover_seconds", "change" => "released")
        .record(took.as_secs_f64());
    tracing::info!(unit = %unit, took_ms = took.as_millis() as u64, "cluster unit released with its rule state");
    let _ = done.send((unit, Done::Released));
}

fn cached(ctx: &Ctx, unit: &str) -> Option<Vec<u8>> {
    ctx.cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(unit)
        .cloned()
}

/// Writes checkpoints in order, the newest of each unit when several wait (a slow etcd
/// costs freshness, never memory or order). A write with an empty unit is a flush marker.
async fn write_checkpoints(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        // The newest write of each unit, in the order of their last appearance; every
        // waiter of a unit is told when its newest write is done.
        let mut order: Vec<Arc<str>> = Vec::new();
        let mut newest: HashMap<Arc<str>, Write> = HashMap::new();
        let mut waiters: HashMap<Arc<str>, Vec<oneshot::Sender<()>>> = HashMap::new();
        for mut w in batch {
            if let Some(d) = w.done.take() {
                waiters.entry(w.unit.clone()).or_default().push(d);
            }
            order.retain(|u| *u != w.unit);
            order.push(w.unit.clone());
            newest.insert(w.unit.clone(), w);
        }
        // Units in parallel (etcd commits concurrent proposals together; one after the
        // other, a takeover of a hundred units would wait for a hundred fsyncs), each
        // unit's newest write once.
        let mut flush = Vec::new();
        for chunk in order.chunks(PARALLEL_WRITES) {
            let mut running = tokio::task::JoinSet::new();
            for unit in chunk {
                let Some(w) = newest.remove(unit) else {
                    continue;
                };
                let done = waiters.remove(unit).unwrap_or_default();
                if unit.is_empty() {
                    flush.extend(done);
                    continue;
                }
                let ctx = ctx.clone();
                running.spawn(async move {
                    write_one(&ctx, &w).await;
                    for d in done {
                        let _ = d.send(());
                    }
                });
            }
            while running.join_next().await.is_some() {}
        }
        for d in flush {
            let _ = d.send(());
        }
    }
}

async fn write_one(ctx: &Ctx, w: &Write) {
    if let Some(state) = &w.state {
        lock(&ctx.cache).insert(w.unit.clone(), state.clone());
    }
    let Some(session) = ctx.session.get() else {
        metrics::counter!("sitewatch_cluster_checkpoint_writes_total", "result" => "no_session")
            .increment(1);
        return;
    };
    let Some(rev) = ctx.revision(&w.unit) else {
        // Never claimed (taken up without etcd) or claimed by another member since.
        metrics::counter!("sitewatch_cluster_checkpoint_writes_total", "result" => "superseded")
            .increment(1);
        return;
    };
    let key = checkpoint::key(&ctx.prefix, &w.unit);
    let value = checkpoint::encode(&ctx.me, w.released, w.state.as_deref());
    let mut result = checkpoint::write(
        &session,
        &key,
        value.clone(),
        checkpoint::Expect::Revision(rev),
        ctx.etcd_timeout,
    )
    .await;
    if let Ok(None) = result {
        // Refused: someone else wrote it since, or an earlier write of ours that timed out
        // went through after all. Ours still: write again on its revision.
        if let Ok(Some((cp, now))) = checkpoint::read(&session, &key, ctx.etcd_timeout).await {
            if cp.owner == ctx.me && !cp.released {
                result = checkpoint::write(
                    &session,
                    &key,
                    value,
                    checkpoint::Expect::Revision(now),
                    ctx.etcd_timeout,
                )
                .await;
            }
        }
    }
    if let Ok(Some(rev)) = result {
        ctx.set_revision(&w.unit, (!w.released).then_some(rev));
    } else if let Ok(None) = result {
        ctx.set_revision(&w.unit, None);
    }
    let label = match &result {
        Ok(Some(_)) => "ok",
        Ok(None) => "refused",
        Err(_) => "error",
    };
    metrics::counter!("sitewatch_cluster_checkpoint_writes_total", "result" => label).increment(1);
    match result {
        Ok(Some(_)) => ctx.write_failing.store(false, Ordering::Relaxed),
        Ok(None) => {
            tracing::warn!(unit = %w.unit, "cluster checkpoint refused: this member's lease is gone or another member has claimed the unit (its owner carries on from its own checkpoint); this member writes it no more")
        }
        Err(e) if !ctx.write_failing.swap(true, Ordering::Relaxed) => {
            tracing::warn!(unit = %w.unit, error = %e, "cluster checkpoint not written (one line per outage; a member killed now loses the rule state changed since its last checkpoint)");
        }
        Err(e) => tracing::debug!(unit = %w.unit, error = %e, "cluster checkpoint not written"),
    }
}
