//! Whether an InfluxDB outage of a given length can be held without loss, for `sitewatch
//! check`: the disk spool must hold `rate × outage` lines, and the MQTT broker must hold
//! what arrives before memory moves to the spool (`spill_after`), because until then the
//! messages are not acknowledged and count against the broker's in-flight window and queue.

use std::time::Duration;

use super::config::InfluxConfig;

/// Bytes one encoded line takes in the spool, for planning: facility lines (a measurement,
/// three or four tags, a few fields, a timestamp) are 100–200 bytes; the upper end is used
/// so the estimate errs towards more disk.
pub const PLANNING_LINE_BYTES: u64 = 200;

/// What a rate and an outage length need, and what the config gives.
#[derive(Debug, Clone, PartialEq)]
pub struct OutagePlan {
    pub rate: f64,
    pub outage: Duration,
    pub spool_needed_bytes: u64,
    pub spool_max_bytes: Option<u64>,
    /// Messages the broker must keep unacknowledged (in flight plus queued) while memory
    /// waits `spill_after` plus one flush.
    pub broker_window: u64,
}

impl OutagePlan {
    pub fn new(cfg: &InfluxConfig, rate: f64, outage: Duration) -> OutagePlan {
        let lines = rate * outage.as_secs_f64();
        let wait = cfg.spill_after() + cfg.flush_interval;
        // Twice the wait: a spill and its fsync are not instant, and rates have bursts.
        let window = (rate * wait.as_secs_f64() * 2.0).ceil() as u64;
        OutagePlan {
            rate,
            outage,
            spool_needed_bytes: (lines * PLANNING_LINE_BYTES as f64).ceil() as u64,
            spool_max_bytes: cfg.spool_dir.as_ref().map(|_| cfg.spool_max_bytes),
            broker_window: window.max(100),
        }
    }

    /// Lines for `check`: what cannot hold, then what the broker needs.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let hours = self.outage.as_secs_f64() / 3600.0;
        match self.spool_max_bytes {
            None => out.push(format!(
                "[influx] no spool_dir: an InfluxDB outage is held in memory only (buffer_limit); at {} samples/s a {hours:.1} h outage needs a spool of about {} MiB",
                self.rate,
                self.spool_needed_bytes >> 20
            )),
            Some(max) if max < self.spool_needed_bytes => out.push(format!(
                "[influx] spool_max_bytes {} MiB holds about {:.1} h at {} samples/s, less than the {hours:.1} h planned; raise it to at least {} MiB (the oldest series data is deleted when full)",
                max >> 20,
                max as f64 / PLANNING_LINE_BYTES as f64 / self.rate / 3600.0,
                self.rate,
                self.spool_needed_bytes >> 20
            )),
            Some(_) => {}
        }
        out
    }

    /// The broker settings that hold this rate (MQTT QoS 1 sources).
    pub fn broker_advice(&self) -> String {
        format!(
            "MQTT broker: max_inflight_messages >= {w} (or 0 = unlimited) and max_queued_messages >= {w}, max_queued_bytes 0 or >= {b} MiB, message_size_limit >= the largest payload you accept",
            w = self.broker_window,
            b = ((self.broker_window * 1024) >> 20).max(1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> InfluxConfig {
        toml::from_str(&format!(
            "url = \"http://127.0.0.1:8086\"\ndatabase = \"sw\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn an_hour_at_500_per_second() {
        let p = OutagePlan::new(
            &cfg("spool_dir = \"spool\""),
            500.0,
            Duration::from_secs(3600),
        );
        // 500 × 3600 × 200 B = 360 MB: the default 1 GiB spool holds it.
        assert_eq!(p.spool_needed_bytes, 360_000_000);
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
        // (3 s spill + 1 s flush) × 2 × 500/s.
        assert_eq!(p.broker_window, 4000);
        assert!(p.broker_advice().contains(">= 4000"));
    }

    #[test]
    fn too_small_a_spool_or_none_is_a_warning() {
        let small = OutagePlan::new(
            &cfg("spool_dir = \"spool\"\nspool_max_bytes = 104857600"),
            500.0,
            Duration::from_secs(3600),
        );
        let w = small.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("raise it to at least 343 MiB"), "{w:?}");
        let none = OutagePlan::new(&cfg(""), 10.0, Duration::from_secs(3600));
        assert!(none.warnings()[0].contains("no spool_dir"));
    }
}
