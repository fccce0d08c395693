//! The MQTT collector as a [`Source`]: built from `[mqtt]`.

use std::time::Duration;

use async_trait::async_trait;

use crate::collect::{BoxError, Source, SourceContext};
use crate::config::LoadedConfig;
use crate::model::Sample;

use super::config::MqttConfig;
use super::subscriber;

/// `[mqtt]`, when configured.
pub fn source(cfg: &LoadedConfig) -> Result<Option<Box<dyn Source>>, BoxError> {
    let Some(mqtt) = &cfg.config.mqtt else {
        return Ok(None);
    };
    mqtt.validate()
        .map_err(|e| cfg.invalid(format!("[mqtt]: {e}")))?;
    // Resolved here so `check` catches a missing password file before deployment.
    if let Some(password) = &mqtt.password {
        password
            .resolve()
            .map_err(|e| format!("[mqtt] password: {e}"))?;
    }
    Ok(Some(Box::new(MqttSource { cfg: mqtt.clone() })))
}

pub struct MqttSource {
    cfg: MqttConfig,
}

#[async_trait]
impl Source for MqttSource {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    /// One line, then one indented `warning:` line per positional JSON path (the `Source`
    /// trait has no separate warnings, and `check` prints this under `mqtt:`).
    fn describe(&self) -> String {
        let mut out = format!(
            "{} subscription(s) on {}:{}",
            self.cfg.subscriptions.len(),
            self.cfg.host,
            self.cfg.port
        );
        for w in self.cfg.check_warnings() {
            out.push_str("\n  warning: ");
            out.push_str(&w);
        }
        out
    }

    fn acknowledges(&self) -> bool {
        self.cfg.subscriptions.iter().any(|s| s.qos >= 1)
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError> {
        Ok(subscriber::run(self.cfg, ctx.tx, ctx.stop).await?)
    }

    async fn collect_once(&mut self, listen_for: Duration) -> Result<Vec<Sample>, BoxError> {
        Ok(subscriber::collect_for(&self.cfg, listen_for).await?)
    }
}
