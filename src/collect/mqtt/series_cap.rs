//! Per-subscription series cap (`max_series`): a publisher that puts a counter, a UUID or a
//! timestamp into a topic level or a tag would otherwise create a new InfluxDB series per
//! message and blow up the database's index. Series already seen keep flowing; samples of new
//! series beyond the cap are dropped, counted as
//! `sitewatch_mqtt_dropped_total{subscription, reason="series_cap"}` and logged at warn at
//! most once per minute per subscription. The set of seen series lives for the process.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::model::{Sample, SeriesKey};

const LOG_PERIOD: Duration = Duration::from_secs(60);

pub(crate) struct SeriesCap {
    max: usize,
    /// 64-bit hashes of the series seen: 8 bytes each instead of a cloned key; a collision
    /// at worst lets one extra series through.
    seen: HashSet<u64>,
    dropped_since_log: u64,
    last_log: Option<Instant>,
    /// The 80 % warning was given (once per process: series are never forgotten).
    warned_near: bool,
}

fn series_hash(key: &SeriesKey) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl SeriesCap {
    /// `max == 0`: no cap.
    pub fn new(max: usize) -> SeriesCap {
        SeriesCap {
            max,
            seen: HashSet::new(),
            dropped_since_log: 0,
            last_log: None,
            warned_near: false,
        }
    }

    /// Removes the samples of new series beyond the cap; returns how many were removed.
    pub fn filter(&mut self, subscription: &str, samples: &mut Vec<Sample>) -> usize {
        if self.max == 0 {
            return 0;
        }
        let before = samples.len();
        samples.retain(|s| {
            let h = series_hash(&s.series);
            if self.seen.contains(&h) {
                return true;
            }
            if self.seen.len() < self.max {
                self.seen.insert(h);
                return true;
            }
            false
        });
        let dropped = before - samples.len();
        if !self.warned_near && self.seen.len() * 5 >= self.max * 4 {
            self.warned_near = true;
            tracing::warn!(
                subscription,
                series = self.seen.len(),
                max_series = self.max,
                "MQTT subscription has reached 80 % of max_series; beyond it new series are \
                 dropped: raise max_series now if the site is growing"
            );
        }
        if dropped > 0 {
            metrics::counter!(
                "sitewatch_mqtt_dropped_total",
                "subscription" => subscription.to_string(),
                "reason" => "series_cap"
            )
            .increment(dropped as u64);
            self.dropped_since_log += dropped as u64;
            let now = Instant::now();
            if self
                .last_log
                .is_none_or(|t| now.duration_since(t) >= LOG_PERIOD)
            {
                tracing::warn!(
                    subscription,
                    max_series = self.max,
                    dropped = self.dropped_since_log,
                    "MQTT subscription reached max_series: samples of new series are dropped \
                     (a publisher with a changing topic level or tag?); raise max_series if \
                     this many series are real"
                );
                self.dropped_since_log = 0;
                self.last_log = Some(now);
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldValue, TagSet};

    fn sample(sensor: &str) -> Sample {
        let tags = TagSet::new([("sensor", sensor)]);
        Sample::new(SeriesKey::new("m", tags), 1).with_field("v", FieldValue::Float(1.0))
    }

    #[test]
    fn caps_new_series_but_keeps_known_ones_flowing() {
        let mut cap = SeriesCap::new(2);
        let mut batch = vec![sample("a"), sample("b"), sample("c")];
        assert_eq!(cap.filter("sub", &mut batch), 1);
        assert_eq!(batch.len(), 2);
        let mut again = vec![sample("a"), sample("d"), sample("b")];
        assert_eq!(cap.filter("sub", &mut again), 1);
        assert_eq!(
            again
                .iter()
                .map(|s| s.series.tags.get("sensor").unwrap())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let mut none = SeriesCap::new(0);
        let mut many: Vec<Sample> = (0..100).map(|i| sample(&i.to_string())).collect();
        assert_eq!(none.filter("sub", &mut many), 0);
    }

    #[test]
    fn warns_once_at_80_percent() {
        let mut cap = SeriesCap::new(10);
        let mut seven: Vec<Sample> = (0..7).map(|i| sample(&i.to_string())).collect();
        cap.filter("sub", &mut seven);
        assert!(!cap.warned_near);
        let mut eighth = vec![sample("7")];
        cap.filter("sub", &mut eighth);
        assert!(cap.warned_near, "8 of 10 is 80 %");
    }
}
