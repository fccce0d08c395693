//! The collector's MQTT sessions: one for everything, or one per `[[mqtt.partition]]`, each
//! run while this member owns its partition.
//!
//! Without `[cluster]` every partition's session runs all the time (partitions also work on
//! a single instance). In cluster mode a partition's supervisor waits until the partition is
//! this member's ([`UnitGate::gained`]), runs its session under a [`UnitGate::running`]
//! guard, and when the partition is taken away ([`UnitGate::lost`]) stops the session the
//! way a shutdown does: acks of batches already handed downstream first, then DISCONNECT,
//! which keeps the broker-side session and its subscriptions (no UNSUBSCRIBE): the broker
//! queues the partition's QoS 1 messages for whoever resumes it. Only then is the guard
//! dropped, so the handover takes the partition's rule state after its last samples reached
//! the rules stage.
//!
//! Two members that both think they own a partition for a moment connect with the same
//! client id and the broker closes the older connection each time; the reconnect backoff,
//! which starts over only after a connection that lasted, keeps that from looping fast.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::{MqttConfig, PartitionConfig};
use super::partition::{partition_client_id, partition_unit};
use super::session_status::Sessions;
use super::subscriber::{self, MqttError, Session};
use crate::cluster::Ownership;
use crate::cluster::UnitGate;
use crate::pipeline::BatchSender;

/// Runs the collector until `shutdown`: its one session, or a supervisor per partition
/// (`ownership`: cluster mode, `None`: every partition all the time). The first error of a
/// session (configuration, closed pipeline) stops the others and is returned.
pub async fn run(
    cfg: MqttConfig,
    ownership: Option<Ownership>,
    tx: BatchSender,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    let board = Sessions::default();
    if cfg.partitions.is_empty() {
        let session = Session {
            client_id: cfg.client_id.clone(),
            unit: None,
            partition: None,
            status: board.session(None),
        };
        return subscriber::run(&cfg, session, tx, shutdown).await;
    }
    // Before any session starts: a bad config fails once, not once per partition.
    cfg.compile()?;
    tracing::info!(
        host = %cfg.host, port = cfg.port, partitions = cfg.partitions.len(),
        subscriptions = cfg.subscriptions.len(), cluster = ownership.is_some(),
        "MQTT collector starting, one session per partition{}",
        if ownership.is_some() { " this member owns" } else { "" }
    );
    let cfg = Arc::new(cfg);
    let stop = shutdown.child_token();
    let mut tasks = JoinSet::new();
    for p in &cfg.partitions {
        let gate = ownership.as_ref().map(|o| o.gate(partition_unit(&p.name)));
        tasks.spawn(supervise(
            cfg.clone(),
            p.clone(),
            gate,
            board.clone(),
            tx.clone(),
            stop.clone(),
        ));
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if result.is_ok() {
                    result = Err(e);
                }
                stop.cancel();
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    crate::status::set_mqtt(false, Some("stopped".into()));
    tracing::info!(host = %cfg.host, port = cfg.port, "MQTT collector stopped");
    result
}

/// One partition: its session while this member owns it (always without a gate).
async fn supervise(
    cfg: Arc<MqttConfig>,
    partition: PartitionConfig,
    mut gate: Option<UnitGate>,
    board: Sessions,
    tx: BatchSender,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    let client_id = partition_client_id(&cfg.client_id, &partition.name);
    let unit: Arc<str> = partition_unit(&partition.name).into();
    let name = partition.name.as_str();
    let topics = partition.topics.join(", ");
    let status = board.session(Some(name));
    let owned_gauge =
        metrics::gauge!("sitewatch_mqtt_partition_owned", "partition" => name.to_string());
    owned_gauge.set(0.0);
    loop {
        // Taken before asking, so a release that comes in between waits for this to end.
        let guard = gate.as_ref().map(UnitGate::running);
        if let Some(g) = &mut gate {
            if !g.owns() {
                drop(guard);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = g.gained() => continue,
                }
            }
        }
        owned_gauge.set(1.0);
        tracing::info!(
            partition = name, client_id = %client_id, topics = %topics,
            "MQTT partition started{}",
            if gate.is_some() { ": this member owns it now" } else { "" }
        );
        let session_stop = shutdown.child_token();
        let session = Session {
            client_id: client_id.clone(),
            unit: Some(unit.clone()),
            partition: Some(partition.clone()),
            status: status.clone(),
        };
        let running = subscriber::run(&cfg, session, tx.clone(), session_stop.clone());
        tokio::pin!(running);
        let mut lost = false;
        let result = tokio::select! {
            r = &mut running => r,
            () = lost_of(&mut gate) => {
                lost = true;
                session_stop.cancel();
                running.await
            }
        };
        // Its last batches are downstream and acknowledged (or left to the broker):
        // the handover may take the partition's rule state now.
        drop(guard);
        owned_gauge.set(0.0);
        status.stopped(shutdown.is_cancelled());
        let why = match (&result, lost) {
            (Err(_), _) => "error",
            (Ok(()), true) => {
                "this member lost it (the broker keeps its session for the next owner)"
            }
            (Ok(()), false) => "shutdown",
        };
        tracing::info!(partition = name, client_id = %client_id, "MQTT partition stopped: {why}");
        result?;
        if !lost {
            return Ok(());
        }
    }
}

/// Resolves when the partition is taken away; never without a gate.
async fn lost_of(gate: &mut Option<UnitGate>) {
    match gate {
        Some(g) => g.lost().await,
        None => std::future::pending().await,
    }
}
