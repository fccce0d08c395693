//! The MQTT collector as a [`Source`]: built from `[mqtt]`.

use std::time::Duration;

use async_trait::async_trait;

use crate::collect::{BoxError, Source, SourceContext, SourceOptions};
use crate::config::LoadedConfig;
use crate::model::Sample;

use super::config::MqttConfig;
use super::{partition, sessions, subscriber};

/// `[mqtt]`, when configured; `opts.cluster` gates its partitions (`[[mqtt.partition]]`).
pub fn source(
    cfg: &LoadedConfig,
    opts: SourceOptions,
) -> Result<Option<Box<dyn Source>>, BoxError> {
    let Some(mqtt) = &cfg.config.mqtt else {
        return Ok(None);
    };
    if let Err(e) = mqtt.validate() {
        // Point at the entry's `[[mqtt.subscription]]` or `[[mqtt.partition]]` header where
        // the file has one.
        let line = match &e {
            super::MqttConfigError::Subscription { index, .. } => {
                std::fs::read_to_string(&cfg.path)
                    .ok()
                    .and_then(|text| header_line(&text, "subscription", *index))
            }
            super::MqttConfigError::Partition { index, .. } => std::fs::read_to_string(&cfg.path)
                .ok()
                .and_then(|text| header_line(&text, "partition", *index)),
            _ => None,
        };
        return Err(match line {
            Some(line) => crate::config::ConfigError::Parse {
                path: cfg.path.clone(),
                line,
                column: 1,
                message: format!("[mqtt]: {e}"),
            }
            .into(),
            None => cfg.invalid(format!("[mqtt]: {e}")).into(),
        });
    }
    // Resolved here so `check` catches a missing password file before deployment.
    if let Some(password) = &mqtt.password {
        password
            .resolve()
            .map_err(|e| format!("[mqtt] password: {e}"))?;
    }
    // And the TLS files: a missing ca_file or client key must fail `check`, not the first
    // connect. (With insecure_skip_verify the run logs its warning; nothing to read here
    // that the run would not report at once.)
    if let Some(tls) = mqtt.tls.as_ref().filter(|t| !t.insecure_skip_verify) {
        let broker = format!("mqtts://{}:{}", mqtt.host.trim(), mqtt.port);
        crate::tls::client_config(Some(tls), "mqtt.tls", &broker)?;
    }
    Ok(Some(Box::new(MqttSource {
        cfg: mqtt.clone(),
        cluster: opts.cluster,
    })))
}

/// Line (1-based) of the `index`-th `[[mqtt.<table>]]` header in `text`.
fn header_line(text: &str, table: &str, index: usize) -> Option<usize> {
    let (tight, spaced) = (format!("[[mqtt.{table}]]"), format!("[[ mqtt.{table} ]]"));
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start();
            l.starts_with(&tight) || l.starts_with(&spaced)
        })
        .nth(index)
        .map(|(n, _)| n + 1)
}

pub struct MqttSource {
    cfg: MqttConfig,
    /// Cluster mode: which partitions this member collects now.
    cluster: Option<crate::cluster::Ownership>,
}

#[async_trait]
impl Source for MqttSource {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    /// One line; with partitions, then one line per partition, indented below `mqtt:` (its unit, client id
    /// and topics).
    fn describe(&self) -> String {
        let mut out = format!(
            "{} subscription(s) on {}:{}",
            self.cfg.subscriptions.len(),
            self.cfg.host,
            self.cfg.port
        );
        if !self.cfg.partitions.is_empty() {
            out.push_str(&format!(
                ", {} partition(s), one persistent session each",
                self.cfg.partitions.len()
            ));
            for line in partition::describe(&self.cfg) {
                out.push_str("\n    ");
                out.push_str(&line);
            }
        }
        out
    }

    fn check_warnings(&self) -> Vec<String> {
        let mut w = self.cfg.check_warnings();
        let broker = format!("mqtts://{}:{}", self.cfg.host.trim(), self.cfg.port);
        w.extend(crate::tls::check_warning(
            self.cfg.tls.as_ref(),
            "mqtt.tls",
            &broker,
        ));
        w
    }

    /// Line protocol payloads name their own measurement, and a measurement with a `{...}`
    /// template can be anything: then `None`.
    fn measurements(&self) -> Option<Vec<String>> {
        use super::config::PayloadFormat;
        let mut out = Vec::new();
        for s in &self.cfg.subscriptions {
            if s.format == PayloadFormat::LineProtocol {
                return None;
            }
            if s.format == PayloadFormat::SparkplugB {
                out.push(super::decode::SPARKPLUG_STATE_MEASUREMENT.to_string());
            }
            let each = s.each.iter().filter_map(|e| e.measurement.as_ref());
            for m in s.measurement.iter().chain(each) {
                if m.contains('{') {
                    return None;
                }
                out.push(m.clone());
            }
        }
        Some(out)
    }

    fn acknowledges(&self) -> bool {
        self.cfg.subscriptions.iter().any(|s| s.qos >= 1)
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError> {
        Ok(sessions::run(self.cfg, self.cluster, ctx.tx, ctx.stop).await?)
    }

    async fn collect_once(&mut self, listen_for: Duration) -> Result<Vec<Sample>, BoxError> {
        Ok(subscriber::collect_for(&self.cfg, listen_for).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        std::fs::write(
            &path,
            "[influx]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"d\"\n\n[mqtt]\nhost = \"h\"\n\n\
             [[mqtt.subscription]]\ntopic = \"a\"\nmeasurement = \"m\"\nformat = \"number\"\n\n\
             [[mqtt.subscription]]\ntopic = \"b\"\nmeasurement = \"m\"\nformat = \"json\"\n\
             [mqtt.subscription.points]\npath = \"p\"\n",
        )
        .unwrap();
        let cfg = LoadedConfig::load(&path).unwrap();
        let e = source(&cfg, SourceOptions::default())
            .err()
            .expect("invalid")
            .to_string();
        assert!(
            e.contains("site.toml:13:1:")
                && e.contains("subscription[1]")
                && e.contains("would store nothing"),
            "{e}"
        );
        assert_eq!(
            header_line(
                "[[mqtt.subscription]]\n  [[mqtt.subscription]]",
                "subscription",
                1
            ),
            Some(2)
        );
        assert_eq!(header_line("", "subscription", 0), None);
    }

    #[test]
    fn partitions_are_described_and_their_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        let text = |second: &str| {
            format!(
                "[influx]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"d\"\n\n[mqtt]\n\
                 host = \"h\"\nclient_id = \"sw\"\n\n[[mqtt.subscription]]\ntopic = \"site/#\"\n\
                 format = \"line_protocol\"\n\n[[mqtt.partition]]\nname = \"a\"\n\
                 topics = [\"site/a/#\"]\n\n[[mqtt.partition]]\nname = \"b\"\n\
                 topics = [{second:?}]\n"
            )
        };
        std::fs::write(&path, text("site/b/#")).unwrap();
        let cfg = LoadedConfig::load(&path).unwrap();
        let s = source(&cfg, SourceOptions::default()).unwrap().unwrap();
        assert_eq!(
            s.describe(),
            "1 subscription(s) on h:1883, 2 partition(s), one persistent session each\n    \
             partition a (unit mqtt:a, client id sw-a): site/a/#\n    \
             partition b (unit mqtt:b, client id sw-b): site/b/#"
        );
        std::fs::write(&path, text("site/+/x")).unwrap();
        let cfg = LoadedConfig::load(&path).unwrap();
        let e = source(&cfg, SourceOptions::default())
            .err()
            .expect("overlapping partitions")
            .to_string();
        assert!(
            e.contains("site.toml:17:1:") && e.contains("partition[1] (\"b\")"),
            "{e}"
        );
    }
}
