//! The trap socket: binding with a sized receive buffer, the reader thread and its bounded
//! queue, answering informs (once per retransmission), handing bursts on as batches, and
//! the kernel's drop counter.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::assignment::{snmp_unit, trap_source_unit};
use crate::cluster::Ownership;
use crate::collect::snmp::config::TargetConfig;
use crate::model::{now_ns, Sample};
use crate::pipeline::{Batch, BatchSender};

use super::config::TrapConfig;
use super::config::TrapError;
use super::decode::{Reject, TrapDecoder};

/// Largest UDP payload; anything longer was truncated by the kernel and is rejected.
const MAX_DATAGRAM: usize = 65_535;
/// Traps handed downstream together when they arrive in a burst.
const MAX_BATCH: usize = 512;
const INFORM_DEDUP_WINDOW: Duration = Duration::from_secs(60);
const INFORM_DEDUP_ENTRIES: usize = 1024;
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Datagrams (bytes, plus [`DATAGRAM_OVERHEAD`] each) read from the socket and not yet
/// decoded. Beyond it the reader thread waits and the kernel buffer fills instead.
pub const QUEUE_BYTES: usize = 32 << 20;
/// Bookkeeping counted per queued datagram, so a flood of tiny datagrams is bounded too.
const DATAGRAM_OVERHEAD: usize = 64;
/// How often the reader thread looks at the shutdown token while no trap arrives.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// How often the kernel drop counter is read, and how soon after a burst at the earliest.
const DROPS_EVERY: Duration = Duration::from_secs(5);
const DROPS_AFTER_BURST: Duration = Duration::from_secs(1);

/// At shutdown, traps already read are handed on for at most this long.
const SHUTDOWN_SEND: Duration = Duration::from_secs(2);

/// Logs rejections at most once per [`LOG_EVERY`] per reason, with how many were suppressed.
#[derive(Default)]
struct RateLimitedLog {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl RateLimitedLog {
    fn reject(&mut self, r: &Reject, from: SocketAddr) {
        let reason = r.reason();
        metrics::counter!("sitewatch_snmp_traps_rejected_total", "reason" => reason).increment(1);
        let now = Instant::now();
        match self.last.get_mut(reason) {
            Some((at, suppressed)) if now.duration_since(*at) < LOG_EVERY => *suppressed += 1,
            entry => {
                let suppressed = entry.map_or(0, |(_, s)| *s);
                tracing::warn!(%from, reason, suppressed, "SNMP trap dropped: {}", r.detail());
                self.last.insert(reason, (now, 0));
            }
        }
    }
}

/// Remembers recently answered informs so a retransmission is answered but not re-recorded.
#[derive(Default)]
struct InformDedup {
    seen: VecDeque<(Instant, SocketAddr, i32)>,
}

impl InformDedup {
    /// True if `(from, id)` was seen within the window; records it otherwise.
    fn seen_before(&mut self, from: SocketAddr, id: i32) -> bool {
        let now = Instant::now();
        while self
            .seen
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > INFORM_DEDUP_WINDOW)
            || self.seen.len() >= INFORM_DEDUP_ENTRIES
        {
            self.seen.pop_front();
        }
        if self.seen.iter().any(|(_, a, i)| *a == from && *i == id) {
            return true;
        }
        self.seen.push_back((now, from, id));
        false
    }
}

/// A bound trap socket and its decoder.
pub struct TrapListener {
    socket: Arc<UdpSocket>,
    decoder: TrapDecoder,
    /// SO_RCVBUF asked for, and as the kernel reports it afterwards.
    requested: u64,
    granted: u64,
    /// Cluster mode: only traps whose source this member owns are recorded.
    ownership: Option<Ownership>,
}

impl TrapListener {
    /// Validates the config and binds the socket, so a taken or privileged port is a startup
    /// error rather than a silently missing alarm path. The receive buffer is sized before
    /// the bind, and what the kernel granted is logged (a warning naming `net.core.rmem_max`
    /// when it is less than `receive_buffer`).
    pub async fn bind(
        cfg: &TrapConfig,
        targets: &[TargetConfig],
    ) -> Result<TrapListener, TrapError> {
        let decoder = TrapDecoder::new(cfg, targets)?;
        let requested = cfg.receive_buffer.bytes();
        let (socket, granted) = bind_socket(cfg.listen, requested)?;
        if accepted_buffer(granted) < requested {
            tracing::warn!(
                listen = %cfg.listen,
                requested,
                granted,
                "SNMP trap socket: the kernel granted a smaller receive buffer than [snmp.traps] \
                 receive_buffer asks for, so a burst of traps can overflow it (counted in \
                 sitewatch_snmp_trap_kernel_drops_total). Raise the kernel's cap: \
                 sysctl -w net.core.rmem_max={requested}, and keep it in /etc/sysctl.d/"
            );
        } else {
            tracing::info!(
                listen = %cfg.listen,
                requested,
                granted,
                "SNMP trap socket receive buffer sized"
            );
        }
        Ok(TrapListener {
            socket: Arc::new(socket),
            decoder,
            requested,
            granted,
            ownership: None,
        })
    }

    /// Cluster mode: every member listens (behind a VIP only one receives a trap; with the
    /// devices sending to every member each receives it), and a trap is recorded by the
    /// member owning its device (`snmp:<target>`, the target matched by source address) or,
    /// from an address no target has, its source (`snmp-trap-source:<ip>`); the others
    /// drop it, counted in `sitewatch_snmp_traps_dropped_total{reason="not_owner"}`. Informs
    /// are answered by every member that receives them, so the sender stops retrying.
    pub fn with_ownership(mut self, ownership: Ownership) -> TrapListener {
        metrics::counter!("sitewatch_snmp_traps_dropped_total", "reason" => "not_owner")
            .increment(0);
        self.ownership = Some(ownership);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The receive buffer asked for and the one the kernel reports (on Linux twice what it
    /// accepted, see socket(7)), in bytes.
    pub fn receive_buffer(&self) -> (u64, u64) {
        (self.requested, self.granted)
    }

    /// Receives until `shutdown`. A dedicated thread reads the socket into a queue; this task
    /// decodes, answers informs and hands bursts on as batches of up to [`MAX_BATCH`]. A
    /// full pipeline holds this task, not the reading. At shutdown, traps already read are
    /// handed on for up to [`SHUTDOWN_SEND`].
    pub async fn run(mut self, tx: BatchSender, shutdown: CancellationToken) {
        let addr = self.local_addr().ok();
        metrics::gauge!("sitewatch_snmp_trap_receive_buffer_bytes").set(self.granted as f64);
        // Registered at 0, so "no drops" is visible as such in /metrics.
        metrics::counter!("sitewatch_snmp_trap_kernel_drops_total").increment(0);
        let queue = Arc::new(RxQueue::new(QUEUE_BYTES));
        let stop = shutdown.child_token();
        let reader = {
            let (socket, queue, stop) = (self.socket.clone(), queue.clone(), stop.clone());
            std::thread::Builder::new()
                .name("sitewatch-traps".into())
                .spawn(move || receive_loop(&socket, &queue, &stop))
        };
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                metrics::gauge!("sitewatch_snmp_trap_listener_up").set(0.0);
                tracing::error!(error = %e, "cannot start the SNMP trap reader thread: traps are NOT received");
                return;
            }
        };
        let burst_done = Arc::new(Notify::new());
        let drops =
            tokio::spawn(KernelDrops::new(&self.socket).watch(burst_done.clone(), stop.clone()));
        tracing::info!(listen = ?addr, "SNMP trap listener started");
        metrics::gauge!("sitewatch_snmp_trap_listener_up").set(1.0);

        let mut log = RateLimitedLog::default();
        let mut dedup = InformDedup::default();
        let mut unsent: Vec<Batch> = Vec::new();
        let mut channel_open = true;
        let mut since_idle = 0usize;
        loop {
            let datagrams = queue.take(MAX_BATCH);
            if datagrams.is_empty() {
                if since_idle >= BURST {
                    burst_done.notify_one();
                }
                since_idle = 0;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = queue.ready.notified() => continue,
                }
            }
            since_idle += datagrams.len();
            let mut samples = ByUnit::default();
            for d in &datagrams {
                self.handle(d, &mut log, &mut dedup, &mut samples);
            }
            drop(datagrams);
            let mut batches = samples.into_batches().into_iter();
            let mut stopped = false;
            for batch in batches.by_ref() {
                // Reserve first: a shutdown while the pipeline is full keeps the samples here.
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => {
                        unsent.push(batch);
                        stopped = true;
                        break;
                    }
                    p = tx.reserve() => p,
                };
                match permit {
                    Ok(p) => p.send(batch),
                    Err(_) => {
                        tracing::warn!("sample channel closed; SNMP trap listener ends");
                        channel_open = false;
                        stopped = true;
                        break;
                    }
                }
            }
            if stopped {
                unsent.extend(batches);
                break;
            }
        }
        stop.cancel();
        queue.close();
        if tokio::task::spawn_blocking(move || reader.join())
            .await
            .is_err()
        {
            tracing::warn!("SNMP trap reader thread did not stop cleanly");
        }
        if channel_open {
            let mut rest = ByUnit::default();
            for d in &queue.take(usize::MAX) {
                self.handle(d, &mut log, &mut dedup, &mut rest);
            }
            unsent.extend(rest.into_batches());
            if !unsent.is_empty() {
                let n: usize = unsent.iter().map(|b| b.samples.len()).sum();
                let send_all = async {
                    for batch in unsent {
                        tx.send(batch).await?;
                    }
                    Ok::<_, tokio::sync::mpsc::error::SendError<Batch>>(())
                };
                match tokio::time::timeout(SHUTDOWN_SEND, send_all).await {
                    Ok(Ok(())) => {
                        tracing::info!(traps = n, "SNMP traps read before shutdown handed on")
                    }
                    _ => tracing::warn!(
                        traps = n,
                        "SNMP traps read just before shutdown could not be handed on"
                    ),
                }
            }
        }
        let _ = drops.await;
        metrics::gauge!("sitewatch_snmp_trap_listener_up").set(0.0);
        tracing::info!("SNMP trap listener stopped");
    }

    fn handle(
        &mut self,
        d: &Datagram,
        log: &mut RateLimitedLog,
        dedup: &mut InformDedup,
        out: &mut ByUnit,
    ) {
        if d.bytes.len() > MAX_DATAGRAM {
            log.reject(
                &Reject::Malformed("datagram larger than 64 KiB".into()),
                d.from,
            );
            return;
        }
        match self.decoder.decode(&d.bytes, d.from, d.at_ns) {
            Ok(n) => {
                let duplicate = n.inform_id.is_some_and(|id| dedup.seen_before(d.from, id));
                if let Some(resp) = n.response {
                    match send_now(&self.socket, &resp, d.from) {
                        Ok(_) => {
                            metrics::counter!("sitewatch_snmp_informs_answered_total").increment(1)
                        }
                        Err(e) => {
                            tracing::warn!(from = %d.from, error = %e, "cannot answer SNMP inform; the sender will retry")
                        }
                    }
                }
                if duplicate {
                    metrics::counter!("sitewatch_snmp_informs_duplicate_total").increment(1);
                    return;
                }
                let mut batch_unit = None;
                if let Some(o) = &self.ownership {
                    let tags = &n.sample.series.tags;
                    let unit = match (tags.get("device"), tags.get("source")) {
                        (Some(device), _) => snmp_unit(device),
                        (None, Some(source)) => trap_source_unit(source),
                        (None, None) => trap_source_unit(&d.from.ip().to_string()),
                    };
                    if !o.owns(&unit) {
                        metrics::counter!("sitewatch_snmp_traps_dropped_total", "reason" => "not_owner")
                            .increment(1);
                        return;
                    }
                    // A configured target's traps travel with its unit, so their rule state
                    // (an on-battery alarm waiting for its clear) moves with the target.
                    if o.is_managed(&unit) {
                        batch_unit = Some(unit);
                    }
                }
                out.push(batch_unit.as_deref(), n.sample);
                if let Some(clear) = n.clears {
                    out.push(batch_unit.as_deref(), clear);
                }
            }
            Err(r) => {
                log.reject(&r, d.from);
            }
        }
    }
}

/// Trap samples in arrival order, in runs of one cluster unit each (one run without a
/// cluster): each run becomes one batch carrying its unit.
#[derive(Default)]
struct ByUnit {
    runs: Vec<(Option<Arc<str>>, Vec<Sample>)>,
}

impl ByUnit {
    fn push(&mut self, unit: Option<&str>, sample: Sample) {
        match self.runs.last_mut() {
            Some((u, samples)) if u.as_deref() == unit => samples.push(sample),
            _ => self.runs.push((unit.map(Arc::from), vec![sample])),
        }
    }

    fn into_batches(self) -> Vec<Batch> {
        self.runs
            .into_iter()
            .map(|(unit, samples)| Batch::new(samples).for_unit(unit))
            .collect()
    }
}

/// Datagrams handled in one run before the queue was empty again that count as a burst (and
/// make the kernel drop counter be read soon after).
const BURST: usize = 32;

fn bind_error(addr: SocketAddr, source: std::io::Error) -> TrapError {
    TrapError::Bind {
        addr,
        hint: match source.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need root or CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE), or listen on a high port and redirect 162 to it"
            }
            std::io::ErrorKind::AddrInUse => {
                "another process (snmptrapd?) already uses this port; stop it or pick another listen address"
            }
            _ => "check that the address belongs to this host",
        },
        source,
    }
}

/// A blocking UDP socket (the reader thread waits in `recv` with [`READ_TIMEOUT`]) with its
/// receive buffer sized before the bind. Returns the socket and SO_RCVBUF as reported after.
fn bind_socket(addr: SocketAddr, receive_buffer: u64) -> Result<(UdpSocket, u64), TrapError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| bind_error(addr, e))?;
    let size = usize::try_from(receive_buffer).unwrap_or(usize::MAX);
    if let Err(e) = socket.set_recv_buffer_size(size) {
        // Not fatal: the default buffer still receives, only smaller bursts.
        tracing::warn!(listen = %addr, error = %e, requested = receive_buffer, "SNMP trap socket: cannot set the receive buffer (SO_RCVBUF)");
    }
    let capped = socket
        .recv_buffer_size()
        .is_ok_and(|n| accepted_buffer(n as u64) < receive_buffer);
    if capped && force_recv_buffer(&socket, size) {
        tracing::info!(
            listen = %addr,
            requested = receive_buffer,
            "SNMP trap socket: receive buffer set with SO_RCVBUFFORCE (privileged), above net.core.rmem_max"
        );
    }
    socket.bind(&addr.into()).map_err(|e| bind_error(addr, e))?;
    socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| bind_error(addr, e))?;
    let granted = socket.recv_buffer_size().map_or(0, |n| n as u64);
    Ok((socket.into(), granted))
}

/// SO_RCVBUFFORCE: like SO_RCVBUF but not capped by `net.core.rmem_max`; only a process
/// with CAP_NET_ADMIN may use it (for others it fails with EPERM, and `false` is returned).
#[cfg(target_os = "linux")]
fn force_recv_buffer(socket: &socket2::Socket, size: usize) -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(value) = libc::c_int::try_from(size) else {
        return false;
    };
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int that outlives the call
    // and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn force_recv_buffer(_socket: &socket2::Socket, _size: usize) -> bool {
    false
}

/// The part of a reported SO_RCVBUF that answers the request: Linux doubles the accepted
/// value for its bookkeeping and reports the doubled one (socket(7)).
fn accepted_buffer(reported: u64) -> u64 {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// Sends without ever blocking the calling (async) thread: a full send buffer is an error,
/// and the sender of the inform retries.
fn send_now(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    #[cfg(unix)]
    {
        socket2::SockRef::from(socket).send_to_with_flags(bytes, &to.into(), libc::MSG_DONTWAIT)
    }
    #[cfg(not(unix))]
    {
        socket.send_to(bytes, to)
    }
}

/// One datagram as read, with its receive time (the trap's timestamp).
struct Datagram {
    bytes: Vec<u8>,
    from: SocketAddr,
    at_ns: i64,
}

impl Datagram {
    fn cost(&self) -> usize {
        self.bytes.len() + DATAGRAM_OVERHEAD
    }
}

/// Datagrams between the reader thread and the listener task, bounded in bytes. The thread
/// waits on `space` when it is full; the task waits on `ready` when it is empty.
struct RxQueue {
    inner: Mutex<RxInner>,
    space: Condvar,
    ready: Notify,
    max_bytes: usize,
}

#[derive(Default)]
struct RxInner {
    items: VecDeque<Datagram>,
    bytes: usize,
    closed: bool,
}

impl RxQueue {
    fn new(max_bytes: usize) -> RxQueue {
        RxQueue {
            inner: Mutex::new(RxInner::default()),
            space: Condvar::new(),
            ready: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RxInner> {
        // Nothing panics while holding the lock; if it ever did, the data is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `d`, waiting while the queue is full. `None`: closed or stopped meanwhile
    /// (`d` is dropped); `Some(true)`: it had to wait.
    fn push(&self, d: Datagram, stop: &CancellationToken) -> Option<bool> {
        let cost = d.cost();
        let mut g = self.lock();
        let mut waited = false;
        // An empty queue takes anything, so no datagram is too large to ever get in.
        while !g.closed && !g.items.is_empty() && g.bytes + cost > self.max_bytes {
            if stop.is_cancelled() {
                return None;
            }
            waited = true;
            g = self
                .space
                .wait_timeout(g, READ_TIMEOUT)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        if g.closed {
            return None;
        }
        g.bytes += cost;
        g.items.push_back(d);
        drop(g);
        self.ready.notify_one();
        Some(waited)
    }

    /// Up to `max` datagrams, oldest first.
    fn take(&self, max: usize) -> Vec<Datagram> {
        let mut g = self.lock();
        let n = g.items.len().min(max);
        let out: Vec<Datagram> = g.items.drain(..n).collect();
        g.bytes -= out.iter().map(Datagram::cost).sum::<usize>();
        drop(g);
        if !out.is_empty() {
            self.space.notify_all();
        }
        out
    }

    fn close(&self) {
        self.lock().closed = true;
        self.space.notify_all();
    }
}

/// The reader thread: `recv` into the queue until `stop` (checked every [`READ_TIMEOUT`]
/// while idle) or until the queue is closed.
fn receive_loop(socket: &UdpSocket, queue: &RxQueue, stop: &CancellationToken) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut last_full_log: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    let due = |last: &Option<Instant>| last.is_none_or(|t| t.elapsed() >= LOG_EVERY);
    while !stop.is_cancelled() {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let d = Datagram {
                    bytes: buf[..n].to_vec(),
                    from,
                    at_ns: now_ns(),
                };
                match queue.push(d, stop) {
                    None => break,
                    Some(true) if due(&last_full_log) => {
                        last_full_log = Some(Instant::now());
                        tracing::warn!(
                            queue_bytes = QUEUE_BYTES,
                            "SNMP trap queue full: decoding or the pipeline is not keeping up; \
                             the kernel receive buffer takes the rest (overflow is counted in \
                             sitewatch_snmp_trap_kernel_drops_total)"
                        );
                    }
                    Some(_) => {}
                }
            }
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => {}
                // ICMP errors for earlier inform answers surface here on Linux; nothing to do.
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => {
                    tracing::debug!(error = %e, "SNMP trap socket receive error");
                }
                _ => {
                    if due(&last_error_log) {
                        last_error_log = Some(Instant::now());
                        tracing::warn!(error = %e, "SNMP trap socket receive error");
                    }
                    // Never spin on an error that repeats.
                    std::thread::sleep(Duration::from_millis(10));
                }
            },
        }
    }
}

/// `sitewatch_snmp_trap_kernel_drops_total`: the socket's `drops` in `/proc/net/udp{,6}`.
struct KernelDrops {
    inode: Option<u64>,
    seen: u64,
}

impl KernelDrops {
    fn new(socket: &UdpSocket) -> KernelDrops {
        let inode = socket_inode(socket);
        if inode.is_none() {
            tracing::debug!("kernel drops of the SNMP trap socket are not counted on this OS");
        }
        KernelDrops { inode, seen: 0 }
    }

    /// Reads the counter every [`DROPS_EVERY`], [`DROPS_AFTER_BURST`] after a burst, and once
    /// more when `stop` is cancelled.
    async fn watch(mut self, burst_done: Arc<Notify>, stop: CancellationToken) {
        let Some(inode) = self.inode else {
            return;
        };
        let mut every = tokio::time::interval(DROPS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
                _ = burst_done.notified() => {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(DROPS_AFTER_BURST) => {}
                    }
                }
            }
            self.read(inode).await;
        }
        self.read(inode).await;
    }

    async fn read(&mut self, inode: u64) {
        match tokio::task::spawn_blocking(move || read_udp_drops(inode)).await {
            Ok(Ok(Some(total))) => self.update(total),
            Ok(Ok(None)) => {
                tracing::debug!(inode, "SNMP trap socket not found in /proc/net/udp{{,6}}")
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read /proc/net/udp"),
            Err(_) => {}
        }
    }

    fn update(&mut self, total: u64) {
        if total > self.seen {
            let new = total - self.seen;
            metrics::counter!("sitewatch_snmp_trap_kernel_drops_total").increment(new);
            tracing::warn!(
                dropped = new,
                total,
                "SNMP trap datagrams dropped by the kernel: the socket receive buffer was full. \
                 Raise [snmp.traps] receive_buffer (and net.core.rmem_max if the granted size \
                 was capped; see the log at start)"
            );
        }
        self.seen = total;
    }
}

/// The socket's inode, which names it in `/proc/net/udp` (Linux only).
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .ok()
            .map(|m| m.ino())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        None
    }
}

/// The `drops` column of the socket with `inode` in `/proc/net/udp` or `/proc/net/udp6`.
fn read_udp_drops(inode: u64) -> std::io::Result<Option<u64>> {
    use std::io::BufRead;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in std::io::BufReader::new(file).lines().skip(1) {
            if let Some(drops) = udp_line_drops(&line?, inode) {
                return Ok(Some(drops));
            }
        }
    }
    Ok(None)
}

/// `drops` of one `/proc/net/udp` line if it is the socket with `inode`. Columns: sl,
/// local_address, rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout,
/// inode, ref, pointer, drops.
fn udp_line_drops(line: &str, inode: u64) -> Option<u64> {
    let mut cols = line.split_whitespace();
    let ino: u64 = cols.nth(9)?.parse().ok()?;
    if ino != inode {
        return None;
    }
    cols.nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::super::config::{ByteSize, MAX_RECEIVE_BUFFER};
    use super::super::decode::tests::{from, ups_on_battery_v2c};
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn trap_samples_travel_in_runs_of_one_unit_in_arrival_order() {
        let s = |m: &str| {
            Sample::new(
                crate::model::SeriesKey::new(m, crate::model::TagSet::empty()),
                1,
            )
        };
        let mut by = ByUnit::default();
        by.push(Some("snmp:ups-1"), s("a"));
        by.push(Some("snmp:ups-1"), s("b"));
        by.push(None, s("c"));
        by.push(Some("snmp:ups-2"), s("d"));
        let batches = by.into_batches();
        let shape: Vec<(Option<&str>, Vec<&str>)> = batches
            .iter()
            .map(|b| {
                (
                    b.unit.as_deref(),
                    b.samples.iter().map(|x| &*x.series.measurement).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (Some("snmp:ups-1"), vec!["a", "b"]),
                (None, vec!["c"]),
                (Some("snmp:ups-2"), vec!["d"]),
            ]
        );
        assert!(ByUnit::default().into_batches().is_empty());
    }

    #[test]
    fn inform_dedup_window() {
        let mut d = InformDedup::default();
        assert!(!d.seen_before(from(), 1));
        assert!(d.seen_before(from(), 1));
        assert!(!d.seen_before(from(), 2));
        assert!(!d.seen_before("10.0.0.11:1".parse().unwrap(), 1));
    }

    #[test]
    fn proc_net_udp_lines() {
        let header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops";
        let line = " 3974: 0100007F:3F21 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 63812 2 0000000013263068 630";
        let v6 = "  120: 00000000000000000000000000000000:00A2 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   998        0 777 2 0000000000000000 0";
        assert_eq!(udp_line_drops(line, 63812), Some(630));
        assert_eq!(udp_line_drops(line, 63813), None);
        assert_eq!(udp_line_drops(v6, 777), Some(0));
        assert_eq!(udp_line_drops(header, 0), None);
        assert_eq!(udp_line_drops("garbage", 1), None);
        assert_eq!(udp_line_drops("", 1), None);
    }

    fn datagram(n: usize) -> Datagram {
        Datagram {
            bytes: vec![0; n],
            from: from(),
            at_ns: 0,
        }
    }

    #[test]
    fn rx_queue_is_bounded_in_bytes_and_never_refuses_when_empty() {
        let stop = CancellationToken::new();
        let q = RxQueue::new(1000);
        // Larger than the bound, but the queue is empty: accepted.
        assert_eq!(q.push(datagram(5000), &stop), Some(false));
        let q = Arc::new(RxQueue::new(1000));
        for _ in 0..4 {
            assert_eq!(q.push(datagram(100), &stop), Some(false));
        }
        // Full (4 × 164 + 464 > 1000): the pusher waits until the consumer takes some.
        let pusher = {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || q.push(datagram(400), &stop))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.lock().items.len(), 4, "the fifth datagram waits");
        assert_eq!(q.take(2).len(), 2);
        assert_eq!(pusher.join().unwrap(), Some(true));
        assert_eq!(q.take(usize::MAX).len(), 3);
        assert_eq!(q.lock().bytes, 0);
        // Closing releases a waiting pusher.
        for _ in 0..6 {
            q.push(datagram(100), &stop);
        }
        let pusher = {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || q.push(datagram(100), &stop))
        };
        q.close();
        assert_eq!(pusher.join().unwrap(), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_drops_are_read_from_proc_net_udp() {
        // A socket nobody reads, with the smallest buffer: most of a burst is dropped, and
        // /proc/net/udp says so for exactly this socket.
        let (rx, granted) = bind_socket("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        assert!(granted > 0);
        let inode = socket_inode(&rx).expect("socket inode");
        assert_eq!(read_udp_drops(inode).unwrap(), Some(0));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for _ in 0..500 {
            tx.send_to(&[0u8; 100], to).unwrap();
        }
        let drops = read_udp_drops(inode).unwrap().unwrap();
        assert!(drops > 0 && drops < 500, "{drops} of 500 dropped");
        let mut k = KernelDrops {
            inode: Some(inode),
            seen: 0,
        };
        k.update(drops);
        k.update(drops);
        assert_eq!(k.seen, drops);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn receive_buffer_above_rmem_max_is_capped_or_forced() {
        let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let asked = (rmem_max * 2).min(MAX_RECEIVE_BUFFER);
        let (_s, granted) = bind_socket("127.0.0.1:0".parse().unwrap(), asked).unwrap();
        let accepted = accepted_buffer(granted);
        // Privileged (SO_RCVBUFFORCE): all of it; otherwise net.core.rmem_max.
        assert!(
            accepted == asked || accepted == rmem_max,
            "asked {asked}, reported {granted}, rmem_max {rmem_max}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listener_reports_the_granted_buffer_and_stops() {
        let cfg = TrapConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            communities: vec![Secret::Inline("trapc".into())],
            receive_buffer: ByteSize(256 << 10),
            ..TrapConfig::default()
        };
        let l = TrapListener::bind(&cfg, &[]).await.unwrap();
        let (asked, granted) = l.receive_buffer();
        assert_eq!(asked, 256 << 10);
        assert!(granted > 0);
        let to = l.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(l.run(tx, stop.clone()));
        let send = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            send.send_to(&ups_on_battery_v2c(0xa7, b"trapc"), to)
                .unwrap();
        }
        let mut got = 0;
        while got < 3 {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("traps within 5 s")
                .unwrap();
            got += b.samples.len();
        }
        assert_eq!(got, 3);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("listener stops within 5 s")
            .unwrap();
    }
}
