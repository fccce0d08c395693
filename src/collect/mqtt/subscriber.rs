//! The MQTT connection: subscribe, decode, hand batches downstream, acknowledge when stored.
//!
//! One task drives rumqttc's event loop ([`run`]); a second task forwards completed acks to
//! the client. The split matters: `client.ack().await` waits for room in rumqttc's bounded
//! request channel, which only the event-loop task drains, so awaiting it there could
//! deadlock. Sinks complete acks through an unbounded channel that never blocks them.
//!
//! Acks are written in batches: a sink releases thousands at once (one per stored line) and
//! rumqttc writes and flushes every request on its own, one `writev` per PUBACK (a fifth of
//! sitewatch's CPU in a QoS 1 drain). The forwarder sends the first ack of what it has
//! received as a request (that wakes the event loop) and stages the rest; the event-loop
//! task writes the staged ones into the connection's buffer after each event and flushes
//! once ([`write_staged_acks`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, PubAck, Publish,
    QoS, Request, Subscribe, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{
    MqttConfig, MqttConfigError, PartitionConfig, TlsConfig, MQTT_MAX_PACKET_SIZE,
};
use super::decode::{DecodeNotes, DecodeReason, Decoder};
use super::partition::narrowed;
use super::series_cap::SeriesCap;
use super::session_status::SessionStatus;
use super::topic_warn::{TopicWarnings, Warn};
use crate::ack::Ack;
use crate::config::SecretError;
use crate::model::{now_ns, Sample};
use crate::pipeline::{Batch, BatchSender};
use crate::retry::Backoff;

/// Capacity of rumqttc's request channel (acks, subscribe, disconnect).
const REQUEST_CAPACITY: usize = 256;
/// Most samples of back-to-back publishes sent downstream as one batch.
const COALESCE_MAX_SAMPLES: usize = 512;
/// Most acks the forwarder takes from its channel at once (one wake-up request, the rest
/// staged for one flush).
const ACK_BATCH_MAX: usize = 8192;
/// A flush of staged acks that takes longer means the connection is stuck: give up on it
/// (the acks are lost with the connection and the broker redelivers).
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// A connection that lasted this long was a working one: the reconnect backoff starts over.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Decode and field errors: the first of each topic is a warning (a newly broken sensor is
/// always named), then one per topic per this interval with the count suppressed since.
const TOPIC_WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Topics whose last warning is remembered; beyond, new bad topics share one warning per
/// interval (a flood of topics must not grow memory).
const TOPIC_WARN_MAX_TOPICS: usize = 4096;
/// Outgoing packets (CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT) are small; the limit is
/// this, or the SUBSCRIBE or CONNECT if they are larger. sitewatch publishes nothing.
const OUTGOING_PACKET_MIN: usize = 64 * 1024;
/// Dropped points and unmapped messages are expected in normal operation (a gateway's points
/// that nobody mapped, a device's event messages): one warning per subscription per minute.
const QUIET_WARN_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("invalid MQTT configuration: {0}")]
    Config(#[from] MqttConfigError),
    #[error("mqtt.password: {0}")]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "cannot connect to MQTT broker {host}:{port}: {source} (check host, port, credentials \
         and TLS settings, and that the broker is running)"
    )]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: Box<ConnectionError>,
    },
    #[error(
        "MQTT broker {host}:{port} refused the subscription to {filters} (the broker's ACL \
         does not let this user read it: grant read access or fix the topic)"
    )]
    SubscribeRefused {
        host: String,
        port: u16,
        filters: String,
    },
    #[error(
        "the sample pipeline closed while the MQTT collector was running (the rules engine \
         stopped; see earlier errors)"
    )]
    PipelineClosed,
}

/// One MQTT session of the collector: everything (no partitions), or one partition's share.
pub(super) struct Session {
    pub client_id: String,
    /// `mqtt:<partition>`: every batch of the session carries it (see [`Batch::unit`]).
    pub unit: Option<Arc<str>>,
    /// The partition: every subscription filter is narrowed to its topics.
    pub partition: Option<PartitionConfig>,
    pub status: SessionStatus,
}

/// Runs one session until `shutdown` is cancelled ([`super::sessions::run`] starts them).
///
/// Connection losses are retried forever with capped exponential backoff; only configuration
/// problems (bad template, unreadable secret or certificate) and a closed pipeline end it
/// with an error. On `shutdown` it hands over what it holds (acks of batches sent downstream
/// first, up to `shutdown_grace`) and sends DISCONNECT, which keeps a persistent session.
pub(super) async fn run(
    cfg: &MqttConfig,
    session: Session,
    tx: BatchSender,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    let decoders = cfg.compile()?;
    let topics = session.partition.as_ref().map(|p| p.topics.as_slice());
    let subscribe = subscribe_request(&decoders, cfg.share_group.as_deref(), topics);
    let partition = session.partition.as_ref().map_or("-", |p| p.name.as_str());
    let client_id = session.client_id.as_str();
    let status = &session.status;
    let options = mqtt_options(cfg, client_id, cfg.clean_session, true, &subscribe)?;
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    // Once per collector, not once per partition session.
    if cfg.max_packet_size.is_some() && session.partition.is_none() {
        tracing::warn!(
            max_payload_size = cfg.max_payload(),
            "mqtt.max_packet_size is deprecated and now sets max_payload_size: larger payloads \
             are dropped, counted and acknowledged, the connection stays up; rename the key"
        );
    }
    for d in decoders.iter().filter(|_| session.partition.is_none()) {
        for w in d.positional_warnings() {
            tracing::warn!("{w}");
        }
    }
    let mut router = Router::new(decoders);
    let acks = AckForwarder::spawn(client.clone());
    let mut backoff = Backoff::new(INITIAL_BACKOFF, cfg.reconnect_backoff_max);
    let mut first_connack = true;
    let mut connected = false;
    // Since when the current connection is up: the backoff starts over only after one that
    // lasted (a broker that accepts and drops at once, or a second session with this client
    // id kicking this one, must not make it reconnect at the initial delay every time).
    let mut connected_at: Option<Instant> = None;
    // Since when the broker is lost (or unreachable since start), and the failed attempts
    // since: one line when it goes, one when it is back, the retries between at debug.
    let mut lost_since: Option<Instant> = None;
    let mut failed_attempts: u64 = 0;
    // Samples (and acks) of publishes read together, sent as one batch; empty between
    // events, dropped unsent on shutdown (un-acknowledged, so the broker redelivers).
    let mut pending = Batch::default();
    // Present from the start, so "never connected" is visible and alertable.
    status.set(false, None);
    if session.partition.is_none() {
        tracing::info!(
            host = %cfg.host, port = cfg.port, client_id = %client_id,
            share_group = cfg.share_group.as_deref().unwrap_or("-"),
            subscriptions = cfg.subscriptions.len(), "MQTT collector starting"
        );
    } else {
        tracing::debug!(partition, client_id = %client_id, filters = subscribe.filters.len(), "MQTT partition session starting");
    }

    let result = loop {
        let event = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            ev = eventloop.poll() => ev,
        };
        write_staged_acks(&mut eventloop, &acks).await;
        match event {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                connected = true;
                connected_at = Some(Instant::now());
                acks.connection_changed();
                status.set(true, None);
                // Without a session the broker has forgotten our subscriptions. On the first
                // connection we subscribe anyway, so config changes apply to a resumed session.
                if !connack.session_present || first_connack {
                    eventloop
                        .pending
                        .push_front(Request::Subscribe(subscribe.clone()));
                }
                match lost_since.take() {
                    Some(since) if !first_connack => tracing::info!(
                        host = %cfg.host, port = cfg.port, partition, client_id = %client_id,
                        session_present = connack.session_present,
                        down_for_s = since.elapsed().as_secs_f64(), failed_attempts,
                        "MQTT broker reconnected"
                    ),
                    _ => tracing::info!(
                        host = %cfg.host, port = cfg.port, partition, client_id = %client_id,
                        session_present = connack.session_present,
                        failed_attempts, "connected to MQTT broker"
                    ),
                }
                failed_attempts = 0;
                first_connack = false;
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let recv_ns = now_ns();
                match router.route(&publish, recv_ns) {
                    Some(samples) => {
                        pending.samples.extend(samples);
                        if publish.qos != QoS::AtMostOnce {
                            pending.acks.push(acks.ack_for(&publish));
                        }
                    }
                    // Undecodable or unmatched: it can never succeed, so let the broker go.
                    None => acks.ack_now(&publish),
                }
                // rumqttc reads up to ten packets per socket read and hands them out one per
                // poll(). Publishes already read travel together: one channel send and one
                // wake-up of the rules task instead of one per message (under load the
                // per-message hand-off cost more CPU than decoding). Never waits for more.
                let more_read = matches!(
                    eventloop.state.events.front(),
                    Some(Event::Incoming(Packet::Publish(_)))
                );
                if (more_read && pending.samples.len() < COALESCE_MAX_SAMPLES)
                    || (pending.samples.is_empty() && pending.acks.is_empty())
                {
                    continue;
                }
                let batch = std::mem::take(&mut pending).for_unit(session.unit.clone());
                // Waiting here is the backpressure: the broker buffers meanwhile.
                tokio::select! {
                    biased;
                    r = tx.send(batch) => if r.is_err() {
                        break if shutdown.is_cancelled() {
                            Ok(())
                        } else {
                            Err(MqttError::PipelineClosed)
                        };
                    },
                    () = shutdown.cancelled() => break Ok(()),
                }
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                for (code, filter) in suback.return_codes.iter().zip(&subscribe.filters) {
                    if *code == SubscribeReasonCode::Failure {
                        metrics::counter!("sitewatch_mqtt_subscribe_failures_total").increment(1);
                        tracing::error!(
                            filter = %filter.path, partition, client_id = %client_id,
                            "broker refused the subscription (check the broker's ACL for this user)"
                        );
                    }
                }
            }
            Ok(other) => tracing::trace!(event = ?other, "MQTT event"),
            Err(e) => {
                // Acks completed from now on belong to a dead connection; rumqttc has already
                // dropped the ones still queued (EventLoop::clean).
                acks.connection_changed();
                let connected_before_error = connected;
                connected = false;
                status.set(false, Some(e.to_string()));
                metrics::counter!("sitewatch_mqtt_reconnects_total").increment(1);
                let lasted = connected_at.take().map(|at| at.elapsed());
                if lasted.is_some_and(|d| d >= STABLE_CONNECTION) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                // A partition's session closed soon after it connected: most likely the
                // broker let another connection with this client id take it over.
                let taken_over =
                    session.partition.is_some() && lasted.is_some_and(|d| d < STABLE_CONNECTION);
                failed_attempts += 1;
                let was_connected = connected_before_error;
                if lost_since.is_some() {
                    tracing::debug!(
                        host = %cfg.host, port = cfg.port, partition, client_id = %client_id, error = %e,
                        retry_in = ?delay,
                        failed_attempts, "MQTT broker still unreachable; retrying"
                    );
                } else if matches!(e, ConnectionError::ConnectionRefused(_)) {
                    tracing::error!(
                        host = %cfg.host, port = cfg.port, partition, client_id = %client_id, error = %e,
                        retry_in = ?delay,
                        "MQTT broker refused the connection (check username/password and \
                         client_id); retrying with backoff, one line when connected"
                    );
                } else if taken_over {
                    tracing::warn!(
                        host = %cfg.host, port = cfg.port, partition, client_id = %client_id,
                        error = %e, retry_in = ?delay,
                        "MQTT partition session closed soon after connecting: another client \
                         with this client id may hold it (another member that also owns the \
                         partition for a moment, or a second installation with the same \
                         [mqtt] client_id); reconnecting with growing backoff"
                    );
                } else if was_connected {
                    tracing::warn!(
                        host = %cfg.host, port = cfg.port, partition, client_id = %client_id, error = %e,
                        retry_in = ?delay,
                        "MQTT broker disconnected; reconnecting with backoff (one line when \
                         it is back)"
                    );
                } else {
                    tracing::warn!(
                        host = %cfg.host, port = cfg.port, partition, client_id = %client_id, error = %e,
                        retry_in = ?delay,
                        "MQTT broker unreachable; retrying with backoff (one line when connected)"
                    );
                }
                lost_since.get_or_insert_with(Instant::now);
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    };

    if connected {
        graceful_disconnect(&mut eventloop, &client, &acks, cfg.shutdown_grace).await;
    }
    acks.stop();
    // A partition's session also stops when this member loses the partition, and the
    // collector runs on: its supervisor tells the status board which it was.
    if session.partition.is_none() {
        status.stopped(true);
        tracing::info!(host = %cfg.host, port = cfg.port, "MQTT collector stopped");
    }
    result
}

/// Connects with a separate client id (`<client_id>-once-<pid>`) and a clean session,
/// subscribes, and returns whatever decodes within `duration` (for `sitewatch once`). Retained
/// messages arrive at once, so this also shows the last value of quiet sensors.
///
/// Fails if the first connection attempt fails; later drops are retried until the deadline.
pub async fn collect_for(cfg: &MqttConfig, duration: Duration) -> Result<Vec<Sample>, MqttError> {
    let decoders = cfg.compile()?;
    let base = if cfg.client_id.is_empty() {
        "sitewatch"
    } else {
        cfg.client_id.as_str()
    };
    let client_id = format!("{base}-once-{}", std::process::id());
    // No share group: a one-shot look must not take messages away from running instances.
    let subscribe = subscribe_request(&decoders, None, None);
    let options = mqtt_options(cfg, &client_id, true, false, &subscribe)?;
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut router = Router::new(decoders);
    let mut backoff = Backoff::new(INITIAL_BACKOFF, cfg.reconnect_backoff_max);
    let deadline = Instant::now() + duration;
    let mut connected_once = false;
    let mut samples = Vec::new();
    loop {
        let event = match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => break,
            Ok(ev) => ev,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_once = true;
                backoff.reset();
                eventloop
                    .pending
                    .push_front(Request::Subscribe(subscribe.clone()));
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(mut s) = router.route(&publish, now_ns()) {
                    samples.append(&mut s);
                }
            }
            Ok(_) => {}
            Err(source) if !connected_once => {
                return Err(MqttError::Connect {
                    host: cfg.host.clone(),
                    port: cfg.port,
                    source: Box::new(source),
                })
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "MQTT connection lost; reconnecting");
                tokio::time::sleep_until(deadline.min(Instant::now() + delay)).await;
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(samples)
}

/// On shutdown: keep the connection serviced while acks of already-handed-off data are still
/// coming (up to `grace`), then send DISCONNECT. Publishes arriving meanwhile stay
/// un-acknowledged and are redelivered on the next start.
async fn graceful_disconnect(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    acks: &AckForwarder,
    grace: Duration,
) {
    let deadline = Instant::now() + grace;
    while acks.outstanding() > 0 {
        if Instant::now() >= deadline {
            tracing::info!(
                outstanding = acks.outstanding(),
                "MQTT shutdown: un-acknowledged messages will be redelivered by the broker"
            );
            break;
        }
        // Short slices: an ack reaching the request channel produces no event of its own
        // until the event loop writes it.
        let slice = (Instant::now() + Duration::from_millis(50)).min(deadline);
        if let Ok(Err(_)) = tokio::time::timeout_at(slice, eventloop.poll()).await {
            return;
        }
        write_staged_acks(eventloop, acks).await;
    }
    let mut sent = client.try_disconnect().is_ok();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if !sent {
            sent = client.try_disconnect().is_ok();
        }
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
            Ok(Err(_)) | Err(_) => return,
            Ok(Ok(ev)) => tracing::trace!(event = ?ev, "MQTT event while disconnecting"),
        }
    }
    // MQTT has no reply to PUBACK or DISCONNECT. Wait for the broker to close the socket:
    // it reads in order, so by then it has processed every PUBACK. Dropping the socket at
    // once races with a quick restart: Mosquitto lets a new connection with the same client
    // id take over the session before reading the rest of the old one, and redelivers.
    let _ =
        tokio::time::timeout_at(deadline, async { while eventloop.poll().await.is_ok() {} }).await;
}

/// Subscription QoS; compile() allows only 0 and 1.
fn qos(level: u8) -> QoS {
    if level == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// One SUBSCRIBE for all filters; templates that share a filter get the highest QoS asked.
/// With a share group each filter becomes `$share/<group>/<filter>`; with a partition's
/// `topics` each filter is narrowed to each topic it overlaps. The broker still delivers the
/// publish under its real topic, so routing by template is unchanged.
pub(super) fn subscribe_request(
    decoders: &[Decoder],
    share_group: Option<&str>,
    topics: Option<&[String]>,
) -> Subscribe {
    let mut filters: BTreeMap<String, u8> = BTreeMap::new();
    for d in decoders {
        let whole = d.template.filter();
        let narrowed: Vec<String> = match topics {
            Some(topics) => narrowed(&whole, topics).collect(),
            None => vec![whole],
        };
        for filter in narrowed {
            let filter = match share_group {
                Some(group) => format!("$share/{group}/{filter}"),
                None => filter,
            };
            let q = filters.entry(filter).or_insert(0);
            *q = (*q).max(d.qos);
        }
    }
    Subscribe::new_many(
        filters
            .into_iter()
            .map(|(path, q)| SubscribeFilter::new(path, qos(q))),
    )
}

pub(super) fn mqtt_options(
    cfg: &MqttConfig,
    client_id: &str,
    clean_session: bool,
    manual_acks: bool,
    subscribe: &Subscribe,
) -> Result<MqttOptions, MqttError> {
    // compile() has checked what rumqttc would otherwise assert on (empty id without clean
    // session, sub-second keep-alive).
    let mut o = MqttOptions::new(client_id, cfg.host.trim(), cfg.port);
    let mut credentials_len = 0;
    if let Some(user) = &cfg.username {
        let password = match &cfg.password {
            Some(secret) => secret.resolve()?,
            None => String::new(),
        };
        credentials_len = user.len() + password.len();
        o.set_credentials(user.as_str(), password);
    }
    // Incoming: whatever MQTT allows. rumqttc drops the connection on a larger packet before
    // it can be acknowledged, and the broker redelivers it after every reconnect: one
    // oversized message would stop the session for good. Payloads over max_payload_size are
    // dropped (and acknowledged) by the decoder instead.
    let outgoing = outgoing_packet_limit(subscribe, client_id.len() + credentials_len);
    o.set_clean_session(clean_session)
        .set_keep_alive(cfg.keep_alive)
        .set_max_packet_size(MQTT_MAX_PACKET_SIZE, outgoing)
        .set_manual_acks(manual_acks);
    if let Some(tls) = &cfg.tls {
        let broker = format!("mqtts://{}:{}", cfg.host.trim(), cfg.port);
        let config = tls_client_config(tls, &broker)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
    }
    Ok(o)
}

/// Largest packet sitewatch sends: it must fit the SUBSCRIBE of all filters and the CONNECT
/// (client id and credentials, `connect_strings` bytes), everything else is tiny.
fn outgoing_packet_limit(subscribe: &Subscribe, connect_strings: usize) -> usize {
    // CONNECT: fixed header (5) + protocol name, level, flags and keep-alive (10) + a 2-byte
    // length per string.
    let connect = 5 + 10 + 3 * 2 + connect_strings;
    OUTGOING_PACKET_MIN.max(subscribe.size()).max(connect)
}

fn tls_client_config(tls: &TlsConfig, broker: &str) -> Result<rustls::ClientConfig, MqttError> {
    Ok(crate::tls::client_config(Some(tls), "mqtt.tls", broker)?)
}

/// Matches topics to subscriptions and decodes, counting everything.
struct Router {
    decoders: Vec<Decoder>,
    captures: Vec<(Arc<str>, Arc<str>)>,
    /// Scratch for the field values and points a decode drops; empty between messages.
    notes: DecodeNotes,
    decode_warnings: TopicWarnings,
    field_warnings: TopicWarnings,
    series_caps: Vec<SeriesCap>,
    /// Per subscription, registered once: `counter!` with a label per message was a registry
    /// look-up (key built, hashed, dropped) costing ~6 % of a drain's CPU.
    messages_total: Vec<metrics::Counter>,
    samples_total: Vec<metrics::Counter>,
    /// Per subscription: dropped points and unmapped messages warn at most once a minute.
    quiet_warnings: Vec<WarnEvery>,
    fallback_warnings: Vec<WarnEvery>,
    unmapped_warnings: Vec<WarnEvery>,
}

/// Allows one warning per `interval`: the first event warns, then at most one per interval.
struct WarnEvery {
    interval: Duration,
    last: Option<Instant>,
}

impl WarnEvery {
    fn new(interval: Duration) -> WarnEvery {
        WarnEvery {
            interval,
            last: None,
        }
    }

    fn should_warn(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

impl Router {
    fn new(decoders: Vec<Decoder>) -> Router {
        let n = decoders.len();
        // At 0 from the start: "no messages on this subscription" is then a value a
        // dashboard and an alert can see, not a missing series.
        metrics::counter!("sitewatch_mqtt_unmatched_total").increment(0);
        metrics::counter!("sitewatch_mqtt_reconnects_total").increment(0);
        metrics::counter!("sitewatch_mqtt_subscribe_failures_total").increment(0);
        metrics::counter!("sitewatch_mqtt_stale_acks_total").increment(0);
        let series_caps = decoders
            .iter()
            .map(|d| SeriesCap::new(d.max_series))
            .collect();
        // Registered once per subscription (a registry look-up per message was ~6 % of the
        // CPU of a drain) and at zero, so dashboards see every subscription from the start.
        let zeroed = |c: metrics::Counter| {
            c.increment(0);
            c
        };
        let messages_total = decoders
            .iter()
            .map(|d| zeroed(metrics::counter!("sitewatch_mqtt_messages_total", "subscription" => d.label.clone())))
            .collect();
        let samples_total = decoders
            .iter()
            .map(|d| zeroed(metrics::counter!("sitewatch_mqtt_samples_total", "subscription" => d.label.clone())))
            .collect();
        Router {
            decoders,
            messages_total,
            samples_total,
            captures: Vec::new(),
            notes: DecodeNotes::default(),
            decode_warnings: TopicWarnings::new(TOPIC_WARN_INTERVAL, TOPIC_WARN_MAX_TOPICS),
            field_warnings: TopicWarnings::new(TOPIC_WARN_INTERVAL, TOPIC_WARN_MAX_TOPICS),
            series_caps,
            quiet_warnings: (0..n)
                .map(|_| WarnEvery::new(QUIET_WARN_INTERVAL))
                .collect(),
            fallback_warnings: (0..n)
                .map(|_| WarnEvery::new(QUIET_WARN_INTERVAL))
                .collect(),
            unmapped_warnings: (0..n)
                .map(|_| WarnEvery::new(QUIET_WARN_INTERVAL))
                .collect(),
        }
    }

    /// Samples for a publish, or `None` if it is dropped (no subscription matches, or the
    /// payload does not decode). The first matching subscription decodes it.
    fn route(&mut self, publish: &Publish, recv_ns: i64) -> Option<Vec<Sample>> {
        self.captures.clear();
        let Some(decoder) = self
            .decoders
            .iter()
            .find(|d| d.template.match_topic(&publish.topic, &mut self.captures))
        else {
            // A persistent session can carry subscriptions of an older config.
            metrics::counter!("sitewatch_mqtt_unmatched_total").increment(1);
            tracing::debug!(topic = %publish.topic, "MQTT message matches no subscription; dropped");
            return None;
        };
        // Arc<str> labels: no allocation per message.
        let label = decoder.label.clone();
        self.messages_total[decoder.index].increment(1);
        // The payload stays in rumqttc's buffer (`Bytes`): decoding borrows it, and an
        // oversized one is rejected by its length alone.
        let decoded = decoder.decode_into(
            &publish.topic,
            &self.captures,
            &publish.payload,
            recv_ns,
            &mut self.notes,
        );
        for fe in self.notes.field_errors.drain(..) {
            metrics::counter!(
                "sitewatch_mqtt_field_errors_total",
                "subscription" => label.clone(),
                "field" => fe.field.clone(),
                "reason" => fe.reason.as_str()
            )
            .increment(1);
            match self.field_warnings.check(&publish.topic, Instant::now()) {
                Warn::Yes { suppressed } => tracing::warn!(
                    subscription = %label, topic = %publish.topic, field = %fe.field,
                    reason = %fe.reason, detail = %fe.detail, suppressed,
                    "MQTT field value dropped from its point (counted in \
                     sitewatch_mqtt_field_errors_total; warned at most once a minute per topic)"
                ),
                Warn::No => tracing::debug!(
                    subscription = %label, topic = %publish.topic, field = %fe.field,
                    reason = %fe.reason, detail = %fe.detail, "MQTT field value dropped"
                ),
            }
        }
        let unknown = self.notes.unknown_points.len() + self.notes.nameless_points.len();
        if unknown > 0 {
            for (reason, n) in [
                ("unknown", self.notes.unknown_points.len()),
                ("no_name", self.notes.nameless_points.len()),
            ] {
                if n > 0 {
                    metrics::counter!(
                        "sitewatch_mqtt_unknown_points_total",
                        "subscription" => label.clone(),
                        "reason" => reason
                    )
                    .increment(n as u64);
                }
            }
            if self.quiet_warnings[decoder.index].should_warn(Instant::now()) {
                // A list of thousands of points must not make a log line of megabytes.
                let first = |v: &[String]| v.iter().take(20).cloned().collect::<Vec<_>>();
                tracing::warn!(
                    subscription = %label, topic = %publish.topic,
                    unknown = ?first(&self.notes.unknown_points),
                    without_name = ?first(&self.notes.nameless_points),
                    dropped = unknown,
                    "MQTT points dropped: not in points.known (add them there, or set \
                     unknown = \"keep\"), or without a name; counted in \
                     sitewatch_mqtt_unknown_points_total, warned at most once a minute per \
                     subscription"
                );
            }
            self.notes.clear();
        }
        if !self.notes.timestamp_fallbacks.is_empty() {
            for (reason, _) in &self.notes.timestamp_fallbacks {
                metrics::counter!(
                    "sitewatch_mqtt_timestamp_fallbacks_total",
                    "subscription" => label.clone(),
                    "reason" => reason.as_str()
                )
                .increment(1);
            }
            if self.fallback_warnings[decoder.index].should_warn(Instant::now()) {
                let (reason, detail) = &self.notes.timestamp_fallbacks[0];
                tracing::warn!(
                    subscription = %label, topic = %publish.topic, reason = %reason,
                    "MQTT payload timestamp replaced by receive time (timestamp_fallback = \
                     \"receive_time\"): {detail}; counted in \
                     sitewatch_mqtt_timestamp_fallbacks_total, warned at most once a minute"
                );
            }
            self.notes.timestamp_fallbacks.clear();
        }
        match decoded {
            Ok(mut samples) => {
                self.series_caps[decoder.index].filter(&label, &mut samples);
                if samples.is_empty() {
                    // Every sample was of a new series over the cap: counted there, and
                    // redelivery would not change that.
                    return None;
                }
                self.samples_total[decoder.index].increment(samples.len() as u64);
                Some(samples)
            }
            Err(e) if e.reason == DecodeReason::NoFields && decoder.maps_shapes() => {
                // Another message type on a mapped topic (events, announcements): expected,
                // so a counter and one warning a minute, not one per message.
                metrics::counter!("sitewatch_mqtt_unmapped_total", "subscription" => label.clone())
                    .increment(1);
                if self.unmapped_warnings[decoder.index].should_warn(Instant::now()) {
                    tracing::warn!(
                        subscription = %label,
                        "MQTT message of a shape this subscription does not map, dropped \
                         (counted in sitewatch_mqtt_unmapped_total, warned at most once a \
                         minute per subscription; map it or narrow the topic if it matters): {e}"
                    );
                } else {
                    tracing::debug!(subscription = %label, "{e}");
                }
                None
            }
            Err(e) => {
                metrics::counter!(
                    "sitewatch_mqtt_decode_errors_total",
                    "subscription" => label.clone(),
                    "reason" => e.reason.as_str()
                )
                .increment(1);
                match self.decode_warnings.check(&e.topic, Instant::now()) {
                    Warn::Yes { suppressed } => tracing::warn!(
                        subscription = %label, topic = %e.topic, reason = %e.reason,
                        detail = %e.detail, suppressed,
                        "MQTT payload dropped: it does not decode (counted in \
                         sitewatch_mqtt_decode_errors_total; warned at most once a minute per \
                         topic)"
                    ),
                    Warn::No => tracing::debug!(
                        subscription = %label, topic = %e.topic, reason = %e.reason,
                        detail = %e.detail, "MQTT payload dropped"
                    ),
                }
                None
            }
        }
    }
}

/// An ack on its way to the broker. Dropping it (ack completed and forwarded, ack dropped
/// unused, or discarded as stale) releases its count in `outstanding`.
struct PendingAck {
    qos: QoS,
    pkid: u16,
    generation: u64,
    outstanding: Arc<AtomicUsize>,
}

impl Drop for PendingAck {
    fn drop(&mut self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

struct AckForwarder {
    tx: mpsc::UnboundedSender<PendingAck>,
    /// QoS 1 acks taken from the channel behind a wake-up request, for the event-loop task
    /// to write ([`write_staged_acks`]). Still counted in `outstanding` until written.
    staged: Arc<Mutex<Vec<PendingAck>>>,
    /// Bumped on every connection loss and ConnAck. A packet id is only meaningful on the
    /// connection that delivered it: after a reconnect the broker resends un-acked messages
    /// (same or new ids) and an old PUBACK could acknowledge a different message that is not
    /// stored yet. An ack forwarded in the microseconds between rumqttc noticing the loss and
    /// the bump can still slip through; with Mosquitto, which resends a message under its old
    /// id, it then acknowledges the resent copy of a message that is stored, which is harmless.
    generation: Arc<AtomicU64>,
    outstanding: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl AckForwarder {
    fn spawn(client: AsyncClient) -> AckForwarder {
        let (tx, mut rx) = mpsc::unbounded_channel::<PendingAck>();
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        let staged: Arc<Mutex<Vec<PendingAck>>> = Arc::default();
        let to_stage = staged.clone();
        let task = tokio::spawn(async move {
            let mut received = Vec::with_capacity(ACK_BATCH_MAX);
            let mut stage = Vec::new();
            while rx.recv_many(&mut received, ACK_BATCH_MAX).await > 0 {
                let generation = current.load(Ordering::Acquire);
                let mut wake = None;
                for pending in received.drain(..) {
                    if pending.generation != generation {
                        drop_stale(&pending);
                    } else if pending.qos != QoS::AtLeastOnce {
                        send_ack(&client, &pending).await;
                    } else if wake.is_none() {
                        wake = Some(pending);
                    } else {
                        stage.push(pending);
                    }
                }
                // Staged before the wake-up is sent: the event loop finds them when the
                // request's event comes out of poll().
                if !stage.is_empty() {
                    lock_staged(&to_stage).append(&mut stage);
                }
                if let Some(pending) = wake {
                    send_ack(&client, &pending).await;
                }
            }
        });
        AckForwarder {
            tx,
            staged,
            generation,
            outstanding: Arc::new(AtomicUsize::new(0)),
            task,
        }
    }

    fn connection_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn take_staged(&self) -> Vec<PendingAck> {
        std::mem::take(&mut *lock_staged(&self.staged))
    }

    fn pending(&self, publish: &Publish) -> PendingAck {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        PendingAck {
            qos: publish.qos,
            pkid: publish.pkid,
            generation: self.generation.load(Ordering::Acquire),
            outstanding: self.outstanding.clone(),
        }
    }

    /// The ack that travels downstream with the publish's samples.
    fn ack_for(&self, publish: &Publish) -> Ack {
        let pending = self.pending(publish);
        let tx = self.tx.clone();
        Ack::new(move |delivery| {
            metrics::counter!("sitewatch_mqtt_acks_total", "delivery" => delivery.as_str())
                .increment(1);
            // Failed: some sink did not store it; no PUBACK, so the broker redelivers.
            if delivery.releases() {
                let _ = tx.send(pending);
            }
        })
    }

    fn ack_now(&self, publish: &Publish) {
        if publish.qos != QoS::AtMostOnce {
            let _ = self.tx.send(self.pending(publish));
        }
    }

    fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    fn stop(self) {
        self.task.abort();
    }
}

fn lock_staged(staged: &Mutex<Vec<PendingAck>>) -> std::sync::MutexGuard<'_, Vec<PendingAck>> {
    // A panic elsewhere while holding it leaves a valid Vec: keep going.
    staged
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn drop_stale(pending: &PendingAck) {
    metrics::counter!("sitewatch_mqtt_stale_acks_total").increment(1);
    tracing::debug!(
        pkid = pending.pkid,
        "ack from an earlier connection dropped; the broker redelivers the message"
    );
}

/// One ack through rumqttc's request channel (written and flushed by the event loop).
async fn send_ack(client: &AsyncClient, pending: &PendingAck) {
    let mut publish = Publish::new("", pending.qos, Vec::new());
    publish.pkid = pending.pkid;
    tracing::trace!(pkid = pending.pkid, "forwarding MQTT ack");
    if let Err(e) = client.ack(&publish).await {
        tracing::debug!(error = %e, "MQTT ack not sent (client stopped)");
    }
}

/// Writes the staged acks of the current connection into its buffer and flushes once. Runs
/// on the event-loop task between polls, so it never races rumqttc's own writes. Acks of an
/// earlier connection (or with no connection) are dropped as stale: the broker redelivers.
async fn write_staged_acks(eventloop: &mut EventLoop, acks: &AckForwarder) {
    let staged = acks.take_staged();
    if staged.is_empty() {
        return;
    }
    let generation = acks.generation.load(Ordering::Acquire);
    let Some(network) = eventloop.network.as_mut() else {
        staged.iter().for_each(drop_stale);
        return;
    };
    let mut written = 0usize;
    for pending in &staged {
        if pending.generation != generation {
            drop_stale(pending);
            continue;
        }
        // Into the write buffer; it only touches the socket when the buffer is full.
        if let Err(e) = network
            .write(Packet::PubAck(PubAck::new(pending.pkid)))
            .await
        {
            tracing::debug!(error = %e, "MQTT acks not written (connection lost; the broker redelivers)");
            return;
        }
        written += 1;
    }
    match tokio::time::timeout(ACK_FLUSH_TIMEOUT, network.flush()).await {
        Ok(Ok(())) => tracing::trace!(acks = written, "MQTT acks written in one flush"),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "MQTT acks not flushed (connection lost; the broker redelivers)")
        }
        Err(_) => tracing::debug!("MQTT ack flush timed out; the broker redelivers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_warnings_are_rate_limited() {
        let mut w = WarnEvery::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(w.should_warn(t0));
        assert!(!w.should_warn(t0 + Duration::from_secs(1)));
        assert!(!w.should_warn(t0 + Duration::from_secs(59)));
        assert!(w.should_warn(t0 + Duration::from_secs(60)));
        assert!(!w.should_warn(t0 + Duration::from_secs(61)));
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(200));
        assert!(d[5] >= Duration::from_millis(500) && d[5] <= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn one_subscribe_with_deduplicated_filters() {
        let cfg: MqttConfig = toml::from_str(
            r#"
            host = "h"
            [[subscription]]
            topic = "a/{x}/t"
            measurement = "m"
            format = "number"
            qos = 0
            [[subscription]]
            name = "second"
            topic = "a/{y}/t"
            measurement = "m"
            format = "number"
            qos = 1
            [[subscription]]
            topic = "b/#"
            format = "line_protocol"
            "#,
        )
        .unwrap();
        let decoders = cfg.compile().unwrap();
        let s = subscribe_request(&decoders, None, None);
        assert_eq!(
            s.filters,
            vec![
                SubscribeFilter::new("a/+/t".into(), QoS::AtLeastOnce),
                SubscribeFilter::new("b/#".into(), QoS::AtLeastOnce),
            ]
        );
        let s = subscribe_request(&decoders, Some("sw"), None);
        assert_eq!(
            s.filters,
            vec![
                SubscribeFilter::new("$share/sw/a/+/t".into(), QoS::AtLeastOnce),
                SubscribeFilter::new("$share/sw/b/#".into(), QoS::AtLeastOnce),
            ]
        );
        // A partition's session: each filter narrowed to each topic it overlaps.
        let topics = ["a/x/#".to_string(), "b/y".to_string()];
        let s = subscribe_request(&decoders, None, Some(&topics));
        assert_eq!(
            s.filters,
            vec![
                SubscribeFilter::new("a/x/t".into(), QoS::AtLeastOnce),
                SubscribeFilter::new("b/y".into(), QoS::AtLeastOnce),
            ]
        );
    }

    #[test]
    fn outgoing_limit_fits_subscribe_and_connect() {
        let small = Subscribe::new_many([SubscribeFilter::new("a/#".into(), QoS::AtLeastOnce)]);
        assert_eq!(outgoing_packet_limit(&small, 20), OUTGOING_PACKET_MIN);
        // 2,000 subscriptions with long filters: one SUBSCRIBE of ~200 KB must still go out.
        let big = Subscribe::new_many((0..2000).map(|i| {
            SubscribeFilter::new(format!("site/{i}/{}/#", "x".repeat(90)), QoS::AtLeastOnce)
        }));
        assert!(big.size() > OUTGOING_PACKET_MIN);
        assert!(outgoing_packet_limit(&big, 20) >= big.size());
        assert!(outgoing_packet_limit(&small, 3 * 65535) > 3 * 65535);
    }

    #[tokio::test]
    async fn ack_counting_and_stale_generation() {
        let opts = MqttOptions::new("t", "127.0.0.1", 1);
        let (client, _eventloop) = AsyncClient::new(opts, 8);
        let acks = AckForwarder::spawn(client);
        let mut p = Publish::new("x", QoS::AtLeastOnce, Vec::new());
        p.pkid = 7;
        let dropped = acks.ack_for(&p);
        let completed = acks.ack_for(&p);
        assert_eq!(acks.outstanding(), 2);
        drop(dropped);
        assert_eq!(acks.outstanding(), 1);
        acks.connection_changed();
        completed.complete();
        // Stale: discarded by the forwarder task without reaching the client.
        tokio::time::timeout(Duration::from_secs(2), async {
            while acks.outstanding() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let q0 = Publish::new("x", QoS::AtMostOnce, Vec::new());
        acks.ack_now(&q0);
        assert_eq!(acks.outstanding(), 0);
        acks.stop();
    }

    #[test]
    fn tls_errors_name_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a pem").unwrap();
        let e = tls_client_config(
            &TlsConfig {
                ca_file: Some(empty),
                ..TlsConfig::default()
            },
            "mqtts://broker:8883",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("mqtt.tls.ca_file") && e.contains("ca.pem"),
            "{e}"
        );
        let e = tls_client_config(
            &TlsConfig {
                ca_file: Some(dir.path().join("missing.pem")),
                ..TlsConfig::default()
            },
            "mqtts://broker:8883",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
