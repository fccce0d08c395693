//! The alert router and the per-receiver delivery workers.
//!
//! The router owns nothing slow: it matches each event against every receiver and pushes it
//! onto that receiver's bounded queue (dropping the oldest entry when full), so a receiver
//! that is down or hangs can only fill its own queue. Each worker delivers its queue in
//! order, retrying transport errors, 429 and 5xx with full-jitter exponential backoff, and
//! re-sends still-firing alerts every `repeat_interval`.
//!
//! Acknowledged alerts are not re-sent (but to Alertmanager, which forgets alerts that are
//! not re-sent; it gets the acknowledgement as annotations) and do not escalate. Every
//! second the router hands alerts whose escalation is due to the next receivers (see
//! [`super::escalation`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::config::{check_url, NotifyConfig, ReceiverConfig, ReceiverKind, PAGERDUTY_DEFAULT_URL};
use super::escalation::{Escalations, Policy};
use super::matcher::Matchers;
use super::payload::{self, PayloadContext};
use super::{key_of, AlertKey, NotifyConfigError, NotifyError};
use crate::model::{now_ns, Acknowledgement, Event, EventState, Severity};
use crate::pipeline::{Action, AlertNotice, EventRecord, EventSenders};
use crate::retry::{self, Backoff};

/// First retry delay; doubles per attempt up to the receiver's `max_retry_delay`.
const RETRY_BASE: Duration = Duration::from_millis(250);
/// Floor under the jittered delay, so a zero draw does not hammer a struggling receiver.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Alerts per Alertmanager POST when re-sending many at once.
const ALERTMANAGER_CHUNK: usize = 500;
/// How much of a rejecting receiver's answer goes into the log.
const LOGGED_BODY_MAX: usize = 500;

/// How often due escalations are looked for.
const ESCALATION_TICK: Duration = Duration::from_secs(1);

/// Routes events to receivers. Build with [`Notifier::new`], then drive with
/// [`Notifier::run`].
pub struct Notifier {
    receivers: Vec<Arc<Receiver>>,
    /// Per receiver (same order), its escalation step.
    policies: Vec<Option<Policy>>,
    /// Where escalation steps are written (the sinks' events inputs).
    history: Option<EventSenders>,
    shutdown_grace: Duration,
    /// What `sitewatch check` warns about (receivers that do not verify certificates).
    warnings: Vec<String>,
}

/// One configured receiver with its secrets resolved.
struct Receiver {
    name: String,
    kind: ReceiverKind,
    matchers: Matchers,
    url: reqwest::Url,
    headers: HeaderMap,
    routing_key: Option<String>,
    client: reqwest::Client,
    /// `notify.receiver[i].tls`, named when a certificate is refused.
    tls_table: String,
    repeat: Option<Duration>,
    queue_size: usize,
    max_retry_delay: Duration,
    ctx: PayloadContext,
    /// Named in some `escalate_to`: gets alerts only by escalation.
    escalation_only: bool,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Receivers hold resolved secrets (URLs with tokens, routing keys): names only.
        f.debug_struct("Notifier")
            .field(
                "receivers",
                &self.receivers.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Notifier {
    /// Validates the config, reads every secret and builds the HTTP clients. Nothing is
    /// sent until [`Notifier::run`].
    pub fn new(cfg: &NotifyConfig) -> Result<Notifier, NotifyError> {
        cfg.validate()?;
        let generator_url_base = cfg
            .generator_url_base
            .as_deref()
            .map(check_url)
            .transpose()
            .map_err(|problem| NotifyConfigError::Global {
                key: "generator_url_base",
                problem,
            })?;
        let mut receivers = Vec::with_capacity(cfg.receivers.len());
        let mut warnings = Vec::new();
        let targets = cfg.escalation_targets();
        let position = |name: &str| cfg.receivers.iter().position(|r| r.name == name);
        let policies = cfg
            .receivers
            .iter()
            .map(|r| {
                r.escalate_after.map(|after| Policy {
                    after,
                    targets: r.escalate_to.iter().filter_map(|t| position(t)).collect(),
                })
            })
            .collect();
        for (index, r) in cfg.receivers.iter().enumerate() {
            let secret = |key: &str, s: &crate::secret::Secret| {
                s.resolve().map_err(|source| NotifyError::Secret {
                    index,
                    name: r.name.clone(),
                    key: key.to_string(),
                    source,
                })
            };
            let invalid = |key: &str, problem: String| NotifyError::Invalid {
                index,
                name: r.name.clone(),
                key: key.to_string(),
                problem,
            };
            let raw_url = match &r.url {
                Some(s) => secret("url", s)?,
                None => PAGERDUTY_DEFAULT_URL.to_string(),
            };
            // The URL may embed a token: describe the problem, never echo the value.
            let mut url = check_url(raw_url.trim()).map_err(|p| invalid("url", p))?;
            if r.kind == ReceiverKind::Alertmanager {
                url = alertmanager_alerts_url(url).map_err(|p| invalid("url", p))?;
            }
            let routing_key = match &r.routing_key {
                Some(s) => {
                    let key = secret("routing_key", s)?.trim().to_string();
                    if key.is_empty() {
                        return Err(invalid("routing_key", "is empty".into()));
                    }
                    Some(key)
                }
                None => None,
            };
            let mut headers = HeaderMap::new();
            for (name, value) in &r.headers {
                let key = format!("headers.{name}");
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| invalid(&key, e.to_string()))?;
                let mut value = HeaderValue::from_str(secret(&key, value)?.trim())
                    .map_err(|_| invalid(&key, "is not a valid HTTP header value".into()))?;
                value.set_sensitive(true);
                headers.insert(header, value);
            }
            let matchers = Matchers::compile(&r.matchers)
                .map_err(|(label, problem)| invalid(&format!("match.{label}"), problem))?;
            // Only the origin: Slack and webhook URLs carry tokens in their path.
            let tls_table = ReceiverConfig::tls_table(index);
            let origin = url.origin().ascii_serialization();
            warnings.extend(crate::tls::check_warning(
                r.tls.as_ref(),
                &tls_table,
                &origin,
            ));
            let client = crate::tls::http_client_builder(r.tls.as_ref(), &tls_table, &origin)
                .map_err(|source| NotifyError::Tls {
                    name: r.name.clone(),
                    source,
                })?
                .timeout(r.timeout)
                .connect_timeout(r.timeout.min(Duration::from_secs(5)))
                .user_agent(concat!("sitewatch/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|source| NotifyError::Client {
                    index,
                    name: r.name.clone(),
                    source,
                })?;
            let repeat = r.effective_repeat_interval();
            receivers.push(Arc::new(Receiver {
                name: r.name.clone(),
                kind: r.kind,
                matchers,
                url,
                headers,
                routing_key,
                client,
                tls_table,
                repeat,
                queue_size: r.queue_size,
                max_retry_delay: r.max_retry_delay,
                ctx: PayloadContext {
                    generator_url_base: generator_url_base.clone(),
                    // Two lost re-sends are tolerated before Alertmanager resolves on its own.
                    firing_validity: repeat.unwrap_or(Duration::from_secs(60)) * 3,
                },
                escalation_only: targets.contains(r.name.as_str()),
            }));
        }
        Ok(Notifier {
            receivers,
            policies,
            history: None,
            shutdown_grace: cfg.shutdown_grace,
            warnings,
        })
    }

    /// Writes escalation steps to these sinks' events (the `escalated` rows).
    pub fn with_history(mut self, history: EventSenders) -> Notifier {
        self.history = Some(history);
        self
    }

    /// Warnings for `sitewatch check`.
    pub fn check_warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The configured receivers in config order, each with its escalation, for `check`:
    /// `noc (escalates to duty-manager after 15m), duty-manager`.
    pub fn describe_receivers(&self) -> Vec<String> {
        self.receivers
            .iter()
            .zip(&self.policies)
            .map(|(r, p)| match p {
                Some(p) => format!(
                    "{} (escalates to {} after {})",
                    r.name,
                    p.targets
                        .iter()
                        .map(|t| self.receivers[*t].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    humantime::format_duration(p.after)
                ),
                None => r.name.clone(),
            })
            .collect()
    }

    /// Routes events from `rx` until `shutdown` is cancelled or `rx` closes. Then events
    /// still in `rx` are routed, and receivers get `shutdown_grace` to deliver their queues;
    /// what is left after that is counted as dropped.
    pub async fn run(self, mut rx: mpsc::Receiver<AlertNotice>, shutdown: CancellationToken) {
        let hard_stop = CancellationToken::new();
        let queues: Vec<Arc<Queue>> = self
            .receivers
            .iter()
            .map(|r| Arc::new(Queue::new(r.name.clone(), r.queue_size)))
            .collect();
        let mut workers = JoinSet::new();
        for (receiver, queue) in self.receivers.iter().zip(&queues) {
            let worker = Worker {
                receiver: receiver.clone(),
                queue: queue.clone(),
                firing: HashMap::new(),
                acked: HashMap::new(),
                shutdown: shutdown.clone(),
                hard_stop: hard_stop.clone(),
            };
            workers.spawn(worker.run());
        }
        let mut routing = Routing {
            routed: vec![HashMap::new(); queues.len()],
            escalations: Escalations::default(),
        };
        let mut escalation_tick = tokio::time::interval(ESCALATION_TICK);
        escalation_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let escalating = self.escalating();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                notice = rx.recv() => match notice {
                    Some(notice) => self.route(notice, &queues, &mut routing),
                    None => {
                        tracing::info!("alert channel closed; notifier finishing its queues");
                        break;
                    }
                },
                _ = escalation_tick.tick(), if escalating => self.escalate(&queues, &mut routing),
            }
        }
        // Events the rules stage already handed over are not lost to a shutdown race.
        while let Ok(notice) = rx.try_recv() {
            self.route(notice, &queues, &mut routing);
        }
        for q in &queues {
            q.close();
        }
        let grace = self.shutdown_grace;
        {
            let all_done = async { while workers.join_next().await.is_some() {} };
            let grace_over = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                _ = all_done => {}
                _ = grace_over => {
                    tracing::warn!(grace = ?grace, "notify: shutdown grace over; abandoning undelivered alerts");
                    hard_stop.cancel();
                }
            }
        }
        while let Some(res) = workers.join_next().await {
            if let Err(e) = res {
                tracing::error!(error = %e, "notify: a receiver task failed");
            }
        }
    }

    fn route(&self, notice: AlertNotice, queues: &[Arc<Queue>], routing: &mut Routing) {
        match notice {
            AlertNotice::Change(ev) => self.route_change(ev, queues, routing),
            AlertNotice::Adopted(ev, ack) => self.adopt(ev, ack, queues, routing),
            AlertNotice::Forgotten(ev) => {
                let key = key_of(&ev);
                routing.escalations.resolved(&key);
                for (queue, routed) in queues.iter().zip(&mut routing.routed) {
                    if routed.remove(&key).is_some() {
                        queue.push(Item::Forget(ev.clone()));
                    }
                }
            }
            AlertNotice::Acknowledged(ev, ack) => {
                let key = key_of(&ev);
                routing.escalations.acknowledged(&key);
                // Receivers that were told it fires hear who took it.
                for (queue, routed) in queues.iter().zip(&routing.routed) {
                    if routed.contains_key(&key) {
                        queue.push(Item::Ack(ev.clone(), ack.clone()));
                    }
                }
            }
        }
    }

    /// Pushes `ev` to every receiver whose matchers accept it (a receiver reached only by
    /// escalation: once it has the alert). A receiver that got an alert firing and no longer
    /// matches it (e.g. a warning-only receiver after a change to critical) gets a resolve,
    /// so nothing stays firing there forever.
    fn route_change(&self, ev: Event, queues: &[Arc<Queue>], routing: &mut Routing) {
        let labels = payload::labels(&ev);
        let key = key_of(&ev);
        let mut told = Vec::new();
        for (i, ((receiver, queue), routed)) in self
            .receivers
            .iter()
            .zip(queues)
            .zip(&mut routing.routed)
            .enumerate()
        {
            let reached = !receiver.escalation_only || routed.contains_key(&key);
            if reached && receiver.matchers.matches(&labels) {
                match ev.state {
                    EventState::Firing => {
                        routed.insert(key.clone(), ev.severity);
                        told.push(i);
                    }
                    EventState::Resolved => {
                        routed.remove(&key);
                    }
                }
                queue.push(Item::Event(ev.clone()));
            } else if let Some(severity) = routed.remove(&key) {
                let mut resolve = ev.clone();
                resolve.state = EventState::Resolved;
                resolve.severity = severity;
                queue.push(Item::Event(resolve));
            }
        }
        if !self.escalating() {
            // No receiver escalates: nothing to time, nothing to keep per alert.
            return;
        }
        match ev.state {
            EventState::Firing => {
                routing
                    .escalations
                    .firing(&key, &ev, told, &self.policies, Instant::now())
            }
            EventState::Resolved => routing.escalations.resolved(&key),
        }
    }

    /// An alert taken over from another cluster member: every receiver it would reach
    /// (escalation-only ones not: their step restarts here) keeps it as firing, for repeats
    /// and the resolve, without being told again. Its escalation restarts from now.
    fn adopt(
        &self,
        ev: Event,
        ack: Option<Arc<Acknowledgement>>,
        queues: &[Arc<Queue>],
        routing: &mut Routing,
    ) {
        let labels = payload::labels(&ev);
        let key = key_of(&ev);
        let mut told = Vec::new();
        for (i, ((receiver, queue), routed)) in self
            .receivers
            .iter()
            .zip(queues)
            .zip(&mut routing.routed)
            .enumerate()
        {
            if !receiver.escalation_only && receiver.matchers.matches(&labels) {
                routed.insert(key.clone(), ev.severity);
                queue.push(Item::Adopt(ev.clone(), ack.clone()));
                told.push(i);
            }
        }
        if self.escalating() {
            routing
                .escalations
                .firing(&key, &ev, told, &self.policies, Instant::now());
            if ack.is_some() {
                routing.escalations.acknowledged(&key);
            }
        }
    }

    /// Whether some receiver has `escalate_after`.
    fn escalating(&self) -> bool {
        self.policies.iter().any(Option::is_some)
    }

    /// Hands every alert whose escalation is due to the next receivers and writes the step.
    fn escalate(&self, queues: &[Arc<Queue>], routing: &mut Routing) {
        let now = Instant::now();
        for due in routing.escalations.due(now) {
            let Some(Some(policy)) = self.policies.get(due.from) else {
                continue;
            };
            let labels = payload::labels(&due.event);
            let mut to = Vec::new();
            for &t in &policy.targets {
                let receiver = &self.receivers[t];
                if routing.routed[t].contains_key(&due.key) || !receiver.matchers.matches(&labels) {
                    continue;
                }
                routing.routed[t].insert(due.key.clone(), due.event.severity);
                queues[t].push(Item::Event(due.event.clone()));
                to.push(t);
            }
            let from = &self.receivers[due.from].name;
            if to.is_empty() {
                tracing::debug!(rule = %due.event.rule, series = %due.event.series, from = %from, "escalation due, but every next receiver already has the alert or does not match it");
                continue;
            }
            let step = routing
                .escalations
                .escalated(&due.key, &to, &self.policies, now);
            let names: Vec<String> = to.iter().map(|t| self.receivers[*t].name.clone()).collect();
            metrics::counter!("sitewatch_notify_escalations_total", "receiver" => from.clone())
                .increment(1);
            let after = humantime::format_duration(policy.after);
            tracing::warn!(
                rule = %due.event.rule,
                series = %due.event.series,
                severity = %due.event.severity,
                step,
                from = %from,
                to = %names.join(","),
                "alert not acknowledged within {after}: escalated"
            );
            if let Some(history) = &self.history {
                let mut event = due.event.clone();
                event.timestamp_ns = now_ns();
                event.message = format!(
                    "escalated to {} (step {step}): not acknowledged within {after} of reaching {from}",
                    names.join(", ")
                );
                history.try_send(vec![EventRecord {
                    event,
                    silenced: false,
                    action: Action::Escalated {
                        step,
                        receivers: names,
                    },
                    response: None,
                }]);
            }
        }
    }
}

/// The router's memory: which receiver was told which alert fires, and the escalations.
struct Routing {
    routed: Vec<HashMap<AlertKey, Severity>>,
    escalations: Escalations,
}

/// `{base}/api/v2/alerts`, keeping a path prefix (Alertmanager behind a reverse proxy).
fn alertmanager_alerts_url(mut base: reqwest::Url) -> Result<reqwest::Url, String> {
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join("api/v2/alerts")
        .map_err(|e| format!("cannot append api/v2/alerts: {e}"))
}

/// A bounded FIFO that drops its oldest entry when full: for alerts the newest state matters
/// most, and the producer (the router) must never wait.
struct Queue {
    receiver: String,
    cap: usize,
    state: Mutex<QueueState>,
    wake: Notify,
}

/// What a receiver's worker delivers.
#[derive(Clone, Debug)]
enum Item {
    Event(Event),
    /// The firing alert and who acknowledged it.
    Ack(Event, Arc<Acknowledgement>),
    /// Cluster mode: an alert this receiver was told about by another member, firing here
    /// from now on (acknowledged, or not); nothing is sent.
    Adopt(Event, Option<Arc<Acknowledgement>>),
    /// Cluster mode: an alert another member carries on; forgotten, nothing is sent.
    Forget(Event),
}

impl Item {
    fn event(&self) -> &Event {
        match self {
            Item::Event(ev) | Item::Ack(ev, _) | Item::Adopt(ev, _) | Item::Forget(ev) => ev,
        }
    }
}

#[derive(Default)]
struct QueueState {
    /// Items with the time the notifier took them from the rules stage (just after they
    /// were made): the start of the latency to the receiver's answer.
    items: VecDeque<(Item, std::time::Instant)>,
    closed: bool,
}

impl Queue {
    fn new(receiver: String, cap: usize) -> Queue {
        Queue {
            receiver,
            cap,
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic elsewhere while holding this lock leaves a consistent VecDeque behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, item: Item) {
        let (dropped, depth) = {
            let mut st = self.lock();
            let dropped = if st.items.len() >= self.cap {
                st.items.pop_front().map(|(item, _)| item)
            } else {
                None
            };
            st.items.push_back((item, std::time::Instant::now()));
            (dropped, st.items.len())
        };
        self.set_depth(depth);
        if let Some(old) = dropped {
            let old = old.event();
            metrics::counter!("sitewatch_notify_dropped_total", "receiver" => self.receiver.clone())
                .increment(1);
            tracing::warn!(
                receiver = %self.receiver,
                queue_size = self.cap,
                rule = %old.rule,
                series = %old.series,
                state = %old.state,
                "notify: receiver queue full (receiver down or slow); dropped the oldest event"
            );
        }
        self.wake.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// The next event and when it was queued; `None` once closed and empty.
    async fn pop(&self) -> Option<(Item, std::time::Instant)> {
        loop {
            {
                let mut st = self.lock();
                if let Some(ev) = st.items.pop_front() {
                    let depth = st.items.len();
                    drop(st);
                    self.set_depth(depth);
                    return Some(ev);
                }
                if st.closed {
                    return None;
                }
            }
            // Single consumer: notify_one stores a permit if we are not waiting yet, so a
            // push between the check above and this await is not missed.
            self.wake.notified().await;
        }
    }

    fn take_all(&self) -> usize {
        let n = {
            let mut st = self.lock();
            let n = st.items.len();
            st.items.clear();
            n
        };
        self.set_depth(0);
        n
    }

    fn set_depth(&self, depth: usize) {
        metrics::gauge!("sitewatch_notify_queue_depth", "receiver" => self.receiver.clone())
            .set(depth as f64);
    }
}

enum Work {
    Item(Box<Item>, std::time::Instant),
    Repeat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Refused for good (4xx other than 429): counted as a failure, not retried.
    Rejected,
    /// The shutdown grace ran out first.
    Abandoned,
}

/// Delivers one receiver's queue and re-sends its firing alerts.
struct Worker {
    receiver: Arc<Receiver>,
    queue: Arc<Queue>,
    /// Alerts this receiver was told are firing (last event of each).
    firing: HashMap<AlertKey, Event>,
    /// Of those, the acknowledged ones (until they resolve or change severity).
    acked: HashMap<AlertKey, Arc<Acknowledgement>>,
    shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: abandon whatever is in flight.
    hard_stop: CancellationToken,
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Worker {
    async fn run(mut self) {
        let mut repeat = self.receiver.repeat.map(|d| {
            let mut i = tokio::time::interval_at(Instant::now() + d, d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        loop {
            let work = tokio::select! {
                biased;
                _ = self.hard_stop.cancelled() => break,
                ev = self.queue.pop() => match ev {
                    Some((item, queued)) => Work::Item(Box::new(item), queued),
                    None => break,
                },
                _ = tick(&mut repeat), if !self.shutdown.is_cancelled() => Work::Repeat,
            };
            match work {
                Work::Item(item, queued) => match *item {
                    Item::Event(ev) => self.handle_event(ev, queued).await,
                    Item::Ack(ev, ack) => self.handle_ack(ev, ack, queued).await,
                    Item::Adopt(ev, ack) => {
                        let key = key_of(&ev);
                        match ack {
                            Some(ack) => self.acked.insert(key.clone(), ack),
                            None => self.acked.remove(&key),
                        };
                        self.firing.insert(key, ev);
                    }
                    Item::Forget(ev) => {
                        let key = key_of(&ev);
                        self.firing.remove(&key);
                        self.acked.remove(&key);
                    }
                },
                Work::Repeat => self.resend_firing().await,
            }
        }
        let left = self.queue.take_all();
        if left > 0 {
            metrics::counter!("sitewatch_notify_dropped_total", "receiver" => self.receiver.name.clone())
                .increment(left as u64);
            tracing::warn!(
                receiver = %self.receiver.name,
                undelivered = left,
                "notify: shutdown grace over with events still queued; they are dropped"
            );
        }
    }

    async fn handle_event(&mut self, ev: Event, queued: std::time::Instant) {
        let key = key_of(&ev);
        let batch = match ev.state {
            EventState::Firing => {
                let prev = self.firing.insert(key.clone(), ev.clone());
                if prev.as_ref().is_some_and(|p| p.severity != ev.severity) {
                    // The acknowledgement held for the old severity only.
                    self.acked.remove(&key);
                }
                match prev {
                    // Severity is part of the label set for these kinds, so the old alert is
                    // a different alert there: close it in the same request.
                    Some(prev)
                        if prev.severity != ev.severity
                            && matches!(
                                self.receiver.kind,
                                ReceiverKind::Alertmanager | ReceiverKind::Webhook
                            ) =>
                    {
                        let mut old = prev;
                        old.state = EventState::Resolved;
                        old.timestamp_ns = ev.timestamp_ns;
                        vec![old, ev]
                    }
                    _ => vec![ev],
                }
            }
            EventState::Resolved => {
                let mut ev = ev;
                self.acked.remove(&key);
                // Resolve exactly what this receiver was told is firing.
                if let Some(prev) = self.firing.remove(&key) {
                    ev.severity = prev.severity;
                    ev.started_ns = prev.started_ns;
                }
                vec![ev]
            }
        };
        self.deliver(&batch, Some(queued)).await;
    }

    /// Tells the receiver who acknowledged an alert it has firing, the way its kind
    /// understands (PagerDuty `acknowledge`, Alertmanager annotations, a webhook status, a
    /// Slack message).
    async fn handle_ack(
        &mut self,
        ev: Event,
        ack: Arc<Acknowledgement>,
        queued: std::time::Instant,
    ) {
        let key = key_of(&ev);
        let Some(firing) = self.firing.get(&key).cloned() else {
            // Resolved (or never told) in the meantime: nothing to acknowledge here.
            return;
        };
        if firing.severity != ev.severity {
            return;
        }
        self.acked.insert(key, ack.clone());
        self.deliver_ack(&firing, &ack, queued).await;
    }

    async fn resend_firing(&mut self) {
        if self.firing.is_empty() {
            return;
        }
        let am = self.receiver.kind == ReceiverKind::Alertmanager;
        let mut alerts: Vec<Event> = self
            .firing
            .iter()
            .filter_map(|(key, ev)| match self.acked.get(key) {
                // Alertmanager forgets what is not re-sent: keep it, marked acknowledged.
                Some(ack) if am => Some(payload::with_ack(ev, ack)),
                Some(_) => None,
                None => Some(ev.clone()),
            })
            .collect();
        if alerts.is_empty() {
            return;
        }
        alerts.sort_by_key(|e| e.started_ns);
        tracing::debug!(receiver = %self.receiver.name, alerts = alerts.len(), "notify: re-sending firing alerts");
        if self.receiver.kind == ReceiverKind::Alertmanager {
            self.deliver(&alerts, None).await;
        } else {
            for ev in &alerts {
                if self.hard_stop.is_cancelled() {
                    return;
                }
                self.deliver(std::slice::from_ref(ev), None).await;
            }
        }
    }

    /// Sends `batch` as one or more requests. `fresh` (not a re-send) gives when the events
    /// were queued: the latency histogram measures from then to the receiver's answer, not
    /// from the sample's own time (a re-announced or replayed alert would look hours late).
    async fn deliver(&self, batch: &[Event], fresh: Option<std::time::Instant>) {
        let r = &*self.receiver;
        let groups: Vec<&[Event]> = match r.kind {
            ReceiverKind::Alertmanager => batch.chunks(ALERTMANAGER_CHUNK).collect(),
            ReceiverKind::Webhook => vec![batch],
            ReceiverKind::Pagerduty | ReceiverKind::Slack => {
                batch.iter().map(std::slice::from_ref).collect()
            }
        };
        for group in groups {
            let outcome = self
                .send(|| match r.kind {
                    // Built per attempt: endsAt is relative to the time of sending.
                    ReceiverKind::Alertmanager => {
                        payload::alertmanager_body(group, &r.ctx, now_ns())
                    }
                    ReceiverKind::Webhook => payload::webhook_body(&r.name, group, &r.ctx),
                    ReceiverKind::Pagerduty => payload::pagerduty_body(
                        r.routing_key.as_deref().unwrap_or_default(),
                        &group[0],
                        &r.ctx,
                    ),
                    ReceiverKind::Slack => payload::slack_body(&group[0], &r.ctx),
                })
                .await;
            self.count(outcome, group.len(), fresh);
        }
    }

    /// Counts a delivery of `n` alerts: sent (with the latency of fresh ones) or dropped at
    /// shutdown.
    fn count(&self, outcome: Outcome, n: usize, fresh: Option<std::time::Instant>) {
        let r = &*self.receiver;
        if outcome == Outcome::Abandoned && fresh.is_some() {
            metrics::counter!("sitewatch_notify_dropped_total", "receiver" => r.name.clone())
                .increment(n as u64);
            tracing::warn!(
                receiver = %r.name,
                alerts = n,
                "notify: shutdown grace over while delivering; alert dropped"
            );
        }
        if outcome == Outcome::Delivered {
            metrics::counter!("sitewatch_notify_sent_total", "receiver" => r.name.clone())
                .increment(n as u64);
            if let Some(queued) = fresh {
                let secs = queued.elapsed().as_secs_f64();
                for _ in 0..n {
                    metrics::histogram!("sitewatch_notify_latency_seconds", "receiver" => r.name.clone())
                        .record(secs);
                }
            }
        }
    }

    /// One acknowledgement, delivered like a fresh event (latency, counters, drops).
    async fn deliver_ack(&self, firing: &Event, ack: &Acknowledgement, queued: std::time::Instant) {
        let r = &*self.receiver;
        let outcome = self
            .send(|| match r.kind {
                ReceiverKind::Alertmanager => payload::alertmanager_body(
                    std::slice::from_ref(&payload::with_ack(firing, ack)),
                    &r.ctx,
                    now_ns(),
                ),
                ReceiverKind::Webhook => payload::webhook_ack_body(&r.name, firing, ack, &r.ctx),
                ReceiverKind::Pagerduty => payload::pagerduty_ack_body(
                    r.routing_key.as_deref().unwrap_or_default(),
                    firing,
                ),
                ReceiverKind::Slack => payload::slack_ack_body(firing, ack, &r.ctx),
            })
            .await;
        self.count(outcome, 1, Some(queued));
    }

    fn failure(&self, kind: &'static str) {
        metrics::counter!(
            "sitewatch_notify_failures_total",
            "receiver" => self.receiver.name.clone(),
            "kind" => kind
        )
        .increment(1);
    }

    /// POSTs the body until it is accepted, rejected (4xx other than 429) or the shutdown
    /// grace is over.
    async fn send(&self, body: impl Fn() -> Value) -> Outcome {
        let r = &*self.receiver;
        let mut attempt: u32 = 0;
        loop {
            let bytes = match serde_json::to_vec(&body()) {
                Ok(b) => b,
                Err(e) => {
                    self.failure("encode");
                    tracing::error!(receiver = %r.name, error = %e, "notify: cannot encode the alert body; dropped (a bug: please report it)");
                    return Outcome::Rejected;
                }
            };
            let request = r
                .client
                .post(r.url.clone())
                .headers(r.headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(bytes);
            let result = tokio::select! {
                biased;
                _ = self.hard_stop.cancelled() => return Outcome::Abandoned,
                res = request.send() => res,
            };
            attempt += 1;
            let retry_after = match result {
                Ok(resp) if resp.status().is_success() => {
                    if attempt > 1 {
                        tracing::info!(receiver = %r.name, attempts = attempt, "notify: delivered after retries");
                    }
                    return Outcome::Delivered;
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status.as_u16() == 429 || status.is_server_error() {
                        self.failure(if status.as_u16() == 429 {
                            "http_429"
                        } else {
                            "http_5xx"
                        });
                        let retry_after = parse_retry_after(resp.headers());
                        tracing::warn!(receiver = %r.name, kind = r.kind.as_str(), %status, attempt, "notify: receiver answered with a retryable status; retrying");
                        retry_after
                    } else {
                        self.failure("rejected");
                        let text = tokio::select! {
                            _ = self.hard_stop.cancelled() => String::new(),
                            t = resp.text() => t.unwrap_or_default(),
                        };
                        tracing::error!(
                            receiver = %r.name,
                            kind = r.kind.as_str(),
                            %status,
                            body = %payload::truncate_chars(&text, LOGGED_BODY_MAX),
                            "notify: receiver rejected the alert; not retrying (check the receiver's url, key and headers)"
                        );
                        return Outcome::Rejected;
                    }
                }
                Err(e) => {
                    // without_url: Slack and webhook URLs carry tokens.
                    let e = e.without_url();
                    let (failure, detail) = crate::tls::send_failure(&e, &r.tls_table);
                    self.failure(failure);
                    if failure == "tls" {
                        // The operator's to fix, like a rejected alert; still retried.
                        tracing::error!(receiver = %r.name, kind = r.kind.as_str(), attempt, "notify: {detail}; retrying");
                    } else {
                        tracing::warn!(receiver = %r.name, kind = r.kind.as_str(), error = %e, attempt, "notify: cannot reach receiver; retrying");
                    }
                    None
                }
            };
            let delay = retry_delay(attempt, r.max_retry_delay, retry_after);
            tokio::select! {
                biased;
                _ = self.hard_stop.cancelled() => return Outcome::Abandoned,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// `Retry-After`: delta-seconds or a future HTTP-date (a passed one falls back to backoff).
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry::retry_after(headers)
}

/// Full-jitter exponential backoff: uniform in [0, min(cap, base·2^(attempt−1))], floored
/// at [`RETRY_MIN`]; a server's `Retry-After` wins, capped at `cap`.
fn retry_delay(attempt: u32, cap: Duration, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(cap);
    }
    Backoff::full_jitter(RETRY_BASE, cap)
        .with_floor(RETRY_MIN)
        .delay(attempt.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldValue, SeriesKey, TagSet};
    use reqwest::header::RETRY_AFTER;

    fn ev(rule: &str, sev: Severity, state: EventState) -> Event {
        Event {
            labels: Vec::new(),
            annotations: Vec::new(),
            rule: rule.into(),
            series: SeriesKey::new("env", TagSet::new([("site", "dc1")])),
            field: "t".into(),
            severity: sev,
            state,
            value: FieldValue::Float(1.0),
            threshold: None,
            started_ns: 1,
            timestamp_ns: 2,
            message: String::new(),
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let cap = Duration::from_secs(2);
        for attempt in 1..40 {
            let d = retry_delay(attempt, cap, None);
            assert!(d >= RETRY_MIN && d <= cap, "{attempt}: {d:?}");
        }
        for _ in 0..50 {
            assert!(retry_delay(1, cap, None) <= RETRY_BASE);
        }
        assert_eq!(
            retry_delay(1, cap, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(retry_delay(1, cap, Some(Duration::from_secs(3600))), cap);
    }

    #[test]
    fn retry_after_seconds_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn alertmanager_url_keeps_prefix() {
        let u = |s| alertmanager_alerts_url(reqwest::Url::parse(s).unwrap()).unwrap();
        assert_eq!(
            u("http://127.0.0.1:9093").as_str(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(u("http://h/am/").as_str(), "http://h/am/api/v2/alerts");
        assert_eq!(u("http://h/am").as_str(), "http://h/am/api/v2/alerts");
    }

    #[tokio::test]
    async fn queue_drops_oldest_when_full_and_ends_when_closed() {
        let q = Queue::new("t".into(), 2);
        q.push(Item::Event(ev("a", Severity::Warning, EventState::Firing)));
        q.push(Item::Event(ev("b", Severity::Warning, EventState::Firing)));
        q.push(Item::Event(ev("c", Severity::Warning, EventState::Firing)));
        q.close();
        assert_eq!(&*q.pop().await.unwrap().0.event().rule, "b");
        assert_eq!(&*q.pop().await.unwrap().0.event().rule, "c");
        assert!(q.pop().await.is_none());
    }

    fn notifier(toml_src: &str) -> Notifier {
        #[derive(serde::Deserialize)]
        struct Root {
            notify: NotifyConfig,
        }
        let root: Root = toml::from_str(toml_src).unwrap();
        Notifier::new(&root.notify).unwrap()
    }

    /// A queue of ten per receiver and empty routing, for tests of the routing alone.
    fn queues_and_routing(n: &Notifier) -> (Vec<Arc<Queue>>, Routing) {
        let queues = n
            .receivers
            .iter()
            .map(|r| Arc::new(Queue::new(r.name.clone(), 10)))
            .collect();
        let routing = Routing {
            routed: vec![HashMap::new(); n.receivers.len()],
            escalations: Escalations::default(),
        };
        (queues, routing)
    }

    #[test]
    fn router_resolves_alerts_that_stop_matching() {
        let n = notifier(
            r#"
            [notify]
            [[notify.receiver]]
            name = "warn-only"
            kind = "webhook"
            url = "http://127.0.0.1:9/"
            match = { severity = "warning" }
            [[notify.receiver]]
            name = "all"
            kind = "webhook"
            url = "http://127.0.0.1:9/"
            "#,
        );
        let (queues, mut routed) = queues_and_routing(&n);
        n.route_change(
            ev("x", Severity::Warning, EventState::Firing),
            &queues,
            &mut routed,
        );
        n.route_change(
            ev("x", Severity::Critical, EventState::Firing),
            &queues,
            &mut routed,
        );
        n.route_change(
            ev("x", Severity::Critical, EventState::Resolved),
            &queues,
            &mut routed,
        );
        let drain = |q: &Queue| {
            let st = q.lock();
            st.items
                .iter()
                .map(|(e, _)| (e.event().severity, e.event().state))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            drain(&queues[0]),
            vec![
                (Severity::Warning, EventState::Firing),
                (Severity::Warning, EventState::Resolved)
            ]
        );
        assert_eq!(drain(&queues[1]).len(), 3);
    }

    #[test]
    fn an_adopted_alert_is_kept_without_a_send_and_a_forgotten_one_without_a_resolve() {
        let n = notifier(
            r#"
            [notify]
            [[notify.receiver]]
            name = "noc"
            kind = "webhook"
            url = "http://127.0.0.1:9/"
            escalate_after = "10m"
            escalate_to = ["manager"]
            [[notify.receiver]]
            name = "manager"
            kind = "webhook"
            url = "http://127.0.0.1:9/"
            "#,
        );
        let (queues, mut routing) = queues_and_routing(&n);
        let firing = ev("x", Severity::Critical, EventState::Firing);
        n.route(
            AlertNotice::Adopted(firing.clone(), None),
            &queues,
            &mut routing,
        );
        let kinds = |q: &Queue| {
            q.lock()
                .items
                .iter()
                .map(|(i, _)| match i {
                    Item::Event(_) => "event",
                    Item::Ack(..) => "ack",
                    Item::Adopt(..) => "adopt",
                    Item::Forget(_) => "forget",
                })
                .collect::<Vec<_>>()
        };
        // The NOC keeps it (for repeats and the resolve) without being told again; the
        // manager, reached only by escalation, has nothing yet.
        assert_eq!(kinds(&queues[0]), vec!["adopt"]);
        assert!(kinds(&queues[1]).is_empty());
        assert!(routing.routed[0].contains_key(&key_of(&firing)));
        // Handed on: forgotten, no resolve sent.
        n.route(
            AlertNotice::Forgotten(firing.clone()),
            &queues,
            &mut routing,
        );
        assert_eq!(kinds(&queues[0]), vec!["adopt", "forget"]);
        assert!(routing.routed[0].is_empty());
        // A resolve that comes later (from nowhere here) reaches the NOC as usual.
        n.route(
            AlertNotice::Change(ev("x", Severity::Critical, EventState::Resolved)),
            &queues,
            &mut routing,
        );
        assert_eq!(kinds(&queues[0]), vec!["adopt", "forget", "event"]);
    }

    /// Metric names and labels, through a real HTTP exchange: a receiver answering 503 once,
    /// and a dead one with a queue of one.
    #[test]
    fn metrics_count_sent_failures_drops_and_latency() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            // Current-thread runtime: every task records through this thread's local recorder.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                let hits = Arc::new(AtomicUsize::new(0));
                let h = hits.clone();
                let app = axum::Router::new().fallback(move || {
                    let h = h.clone();
                    async move {
                        if h.fetch_add(1, Ordering::SeqCst) == 0 {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
                let dead = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let n = notifier(&format!(
                    r#"
                    [notify]
                    shutdown_grace = "300ms"
                    [[notify.receiver]]
                    name = "m"
                    kind = "webhook"
                    url = "http://127.0.0.1:{port}/"
                    max_retry_delay = "100ms"
                    [[notify.receiver]]
                    name = "d"
                    kind = "webhook"
                    url = "http://127.0.0.1:{dead}/"
                    queue_size = 1
                    match = {{ severity = "critical" }}
                    "#
                ));
                let (tx, rx) = mpsc::channel(8);
                let shutdown = CancellationToken::new();
                let task = tokio::spawn(n.run(rx, shutdown.clone()));
                let mut e = ev("x", Severity::Critical, EventState::Firing);
                // About a sample an hour old (a late device, a restored alert): the latency
                // is still the notifier's own, from hand-over to the receiver's answer.
                e.timestamp_ns = now_ns() - 3600 * 1_000_000_000;
                for rule in ["a", "b", "c"] {
                    let mut e = e.clone();
                    e.rule = rule.into();
                    tx.send(AlertNotice::Change(e)).await.unwrap();
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while hits.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                shutdown.cancel();
                task.await.unwrap();
            });
        });
        let text = handle.render();
        let value = |name: &str, labels: &[&str]| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name) && labels.iter().all(|lab| l.contains(lab)))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
        };
        assert_eq!(
            value("sitewatch_notify_sent_total{", &["receiver=\"m\""]),
            3.0
        );
        assert_eq!(
            value(
                "sitewatch_notify_failures_total{",
                &["receiver=\"m\"", "kind=\"http_5xx\""]
            ),
            1.0
        );
        assert!(
            value(
                "sitewatch_notify_failures_total{",
                &["receiver=\"d\"", "kind=\"transport\""]
            ) >= 1.0
        );
        // Three events into a queue of one with a dead receiver: all three end up dropped
        // (two pushed out by newer ones, one abandoned at shutdown).
        assert_eq!(
            value("sitewatch_notify_dropped_total{", &["receiver=\"d\""]),
            3.0
        );
        assert_eq!(
            value(
                "sitewatch_notify_latency_seconds_count{",
                &["receiver=\"m\""]
            ),
            3.0
        );
        assert_eq!(
            value("sitewatch_notify_queue_depth{", &["receiver=\"m\""]),
            0.0
        );
        let latency_sum = value("sitewatch_notify_latency_seconds_sum{", &["receiver=\"m\""]);
        assert!(
            latency_sum < 30.0,
            "latency is measured from hand-over, not from the hour-old sample: {latency_sum} s"
        );
    }

    #[test]
    fn secrets_resolved_at_new_and_errors_name_the_key() {
        #[derive(serde::Deserialize)]
        struct Root {
            notify: NotifyConfig,
        }
        let root: Root = toml::from_str(
            r#"
            [notify]
            [[notify.receiver]]
            name = "chat"
            kind = "slack"
            url = { env = "SITEWATCH_TEST_NOTIFY_UNSET_URL" }
            "#,
        )
        .unwrap();
        let err = Notifier::new(&root.notify).unwrap_err().to_string();
        assert!(
            err.contains("notify.receiver[0] (name \"chat\"): `url`"),
            "{err}"
        );
        assert!(err.contains("SITEWATCH_TEST_NOTIFY_UNSET_URL"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("url");
        std::fs::write(&p, "not a url with token xoxb-123\n").unwrap();
        let root: Root = toml::from_str(&format!(
            "[notify]\n[[notify.receiver]]\nname = \"chat\"\nkind = \"slack\"\nurl = {{ file = {:?} }}\n",
            p
        ))
        .unwrap();
        let err = Notifier::new(&root.notify).unwrap_err().to_string();
        assert!(err.contains("`url`: is not a valid URL"), "{err}");
        assert!(!err.contains("xoxb"), "secret leaked: {err}");
    }
}
