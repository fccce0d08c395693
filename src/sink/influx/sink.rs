//! The InfluxDB writer as a [`Sink`]: built from `[influx]`, spool opened at start-up, events
//! shaped into points of the events measurement ([`super::event`]) before the writer sees them.

use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::collect::BoxError;
use crate::config::LoadedConfig;
use crate::pipeline::{Batch, SinkInputs, SINK_CHANNEL_CAPACITY};
use crate::sink::Sink;

use super::capacity::OutagePlan;
use super::config::InfluxConfig;
use super::event::event_sample;
use super::writer::InfluxWriter;

/// `[influx]`, when configured.
pub fn sink(cfg: &LoadedConfig) -> Result<Option<Box<dyn Sink>>, BoxError> {
    let Some(influx) = &cfg.config.influx else {
        return Ok(None);
    };
    influx
        .validate()
        .map_err(|e| cfg.invalid(format!("[influx]: {e}")))?;
    // Secrets are resolved here: a missing token file is a deployment error `check` catches.
    let writer = InfluxWriter::new(influx)?;
    Ok(Some(Box::new(InfluxSink {
        writer: Some(writer),
        cfg: influx.clone(),
        // The spool is written: under $STATE_DIRECTORY when systemd runs the service.
        state_dir: cfg.state_dir.clone(),
    })))
}

pub struct InfluxSink {
    writer: Option<InfluxWriter>,
    cfg: InfluxConfig,
    state_dir: PathBuf,
}

#[async_trait]
impl Sink for InfluxSink {
    fn name(&self) -> &'static str {
        "influx"
    }

    fn describe(&self) -> String {
        match &self.writer {
            Some(w) => w.endpoint().to_string(),
            None => "(opened)".into(),
        }
    }

    fn check_warnings(&self, acking_sources: bool) -> Vec<String> {
        let mut out = Vec::new();
        if acking_sources && self.cfg.spool_dir.is_none() {
            out.push("[influx] has no spool_dir: while InfluxDB is down or hung, MQTT QoS 1 messages wait unacknowledged in memory and a full broker queue drops them; set spool_dir".to_string());
        }
        if let Some(rate) = self.cfg.expected_rate {
            let plan = OutagePlan::new(&self.cfg, rate, self.cfg.hold_outage);
            out.extend(plan.warnings());
            if acking_sources {
                out.push(plan.broker_advice());
            }
        }
        out.extend(crate::tls::check_warning(
            self.cfg.tls.as_ref(),
            "influx.tls",
            &super::config::redacted_url_text(&self.cfg.url),
        ));
        out
    }

    async fn open(&mut self) -> Result<(), BoxError> {
        // A bad or busy spool_dir stops start-up; relative to the config file.
        if let Some(w) = self.writer.take() {
            self.writer = Some(w.open_spool(&self.state_dir)?);
        }
        Ok(())
    }

    async fn run(self: Box<Self>, inputs: SinkInputs, stop: CancellationToken) {
        let Some(writer) = self.writer else {
            return;
        };
        let measurement = self.cfg.events_measurement.clone();
        // Events are few: shaping them on a small task of their own keeps the writer a
        // writer of two line streams (events first, then series).
        let (events_tx, events_rx) = mpsc::channel(SINK_CHANNEL_CAPACITY);
        let mut events = inputs.events;
        let shaper = tokio::spawn(async move {
            while let Some(records) = events.recv().await {
                let points = records
                    .iter()
                    .map(|r| event_sample(r, &measurement))
                    .collect();
                if events_tx.send(Batch::new(points)).await.is_err() {
                    return;
                }
            }
        });
        writer.run(inputs.series, events_rx, stop).await;
        shaper.abort();
    }
}
