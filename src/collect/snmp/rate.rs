//! Counter → per-second rate, with wrap and reset handling, per target.

use std::collections::HashMap;

use super::decode::CounterWidth;
use super::value::ObjectId;

/// Outcome of one counter reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RateOutcome {
    /// First reading (or first after a reset): nothing to emit yet.
    First,
    Rate(f64),
    /// The counter wrapped at its width; the rate accounts for it.
    Wrapped(f64),
    /// The counter went backwards and it is not a plausible wrap, or time did not advance:
    /// the interval is skipped.
    Reset,
}

#[derive(Clone, Copy, Debug)]
struct Last {
    value: u64,
    at_ns: i64,
    generation: u64,
}

/// Last readings of one target's counters, keyed by instance OID.
#[derive(Debug, Default)]
pub struct CounterState {
    last: HashMap<ObjectId, Last>,
    generation: u64,
    last_uptime: Option<u64>,
}

/// Rate between two readings of a counter of the given width.
pub fn rate(prev: u64, prev_ns: i64, now: u64, now_ns: i64, width: CounterWidth) -> RateOutcome {
    let dt = (now_ns - prev_ns) as f64 / 1e9;
    if dt <= 0.0 {
        return RateOutcome::Reset;
    }
    if now >= prev {
        return RateOutcome::Rate((now - prev) as f64 / dt);
    }
    // Went backwards: a wrap is plausible only if the implied increase is under half the
    // counter's range; anything else is a reset (device reboot, counter cleared).
    let (modulus, half) = match width {
        CounterWidth::Bits32 if prev <= u64::from(u32::MAX) => (1u128 << 32, 1u128 << 31),
        CounterWidth::Bits64 => (1u128 << 64, 1u128 << 63),
        _ => return RateOutcome::Reset,
    };
    let delta = modulus - u128::from(prev) + u128::from(now);
    if delta < half {
        RateOutcome::Wrapped(delta as f64 / dt)
    } else {
        RateOutcome::Reset
    }
}

impl CounterState {
    /// Starts a poll. `uptime_ticks` is sysUpTime; if it went backwards the device restarted
    /// and every stored counter is forgotten (returns true).
    pub fn begin_poll(&mut self, uptime_ticks: Option<u64>) -> bool {
        self.generation += 1;
        let mut restarted = false;
        if let (Some(prev), Some(now)) = (self.last_uptime, uptime_ticks) {
            // sysUpTime is a 32-bit TimeTicks that wraps after ~497 days; a high-to-low jump
            // across that boundary is a wrap, not a restart.
            let wrapped = prev > 0xC000_0000 && now < 0x4000_0000;
            if now < prev && !wrapped {
                self.last.clear();
                restarted = true;
            }
        }
        if uptime_ticks.is_some() {
            self.last_uptime = uptime_ticks;
        }
        restarted
    }

    pub fn observe(
        &mut self,
        key: &ObjectId,
        value: u64,
        at_ns: i64,
        width: CounterWidth,
    ) -> RateOutcome {
        let generation = self.generation;
        let entry = Last {
            value,
            at_ns,
            generation,
        };
        match self.last.insert(key.clone(), entry) {
            None => RateOutcome::First,
            Some(prev) => rate(prev.value, prev.at_ns, value, at_ns, width),
        }
    }

    /// Drops counters not seen in the current poll (removed interfaces, sensors).
    pub fn end_poll(&mut self) {
        let g = self.generation;
        self.last.retain(|_, l| l.generation == g);
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn plain_rate_wrap32_wrap64_and_reset() {
        assert_eq!(
            rate(100, 0, 1100, 10 * S, CounterWidth::Bits32),
            RateOutcome::Rate(100.0)
        );
        // 2^32 - 500 → 500: 1000 counts in 10 s.
        assert_eq!(
            rate(
                u64::from(u32::MAX) - 499,
                0,
                500,
                10 * S,
                CounterWidth::Bits32
            ),
            RateOutcome::Wrapped(100.0)
        );
        assert_eq!(
            rate(u64::MAX - 999, 0, 1000, 10 * S, CounterWidth::Bits64),
            RateOutcome::Wrapped(200.0)
        );
        // A Counter64 dropping from 5e9 to 10 is a reset, not a wrap.
        assert_eq!(
            rate(5_000_000_000, 0, 10, 10 * S, CounterWidth::Bits64),
            RateOutcome::Reset
        );
        // A Counter32 dropping from 1e9 to 10 is too far to be a wrap.
        assert_eq!(
            rate(1_000_000_000, 0, 10, 10 * S, CounterWidth::Bits32),
            RateOutcome::Reset
        );
        // Not a counter on the wire: any drop is a reset.
        assert_eq!(
            rate(10, 0, 5, 10 * S, CounterWidth::Unknown),
            RateOutcome::Reset
        );
        assert_eq!(rate(10, 5, 20, 5, CounterWidth::Bits32), RateOutcome::Reset);
    }

    #[test]
    fn state_tracks_uptime_and_prunes() {
        let mut st = CounterState::default();
        let k = ObjectId(vec![1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 1]);
        let k2 = ObjectId(vec![1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 2]);
        assert!(!st.begin_poll(Some(1000)));
        assert_eq!(
            st.observe(&k, 0, 0, CounterWidth::Bits64),
            RateOutcome::First
        );
        st.observe(&k2, 0, 0, CounterWidth::Bits64);
        st.end_poll();
        assert!(!st.begin_poll(Some(2000)));
        assert_eq!(
            st.observe(&k, 500, 10 * S, CounterWidth::Bits64),
            RateOutcome::Rate(50.0)
        );
        st.end_poll();
        assert_eq!(st.len(), 1, "k2 not seen in the last poll is pruned");
        // sysUpTime went backwards: the device rebooted.
        assert!(st.begin_poll(Some(10)));
        assert!(!st.begin_poll(Some(0xF000_0000)));
        assert!(!st.begin_poll(Some(5)), "TimeTicks wrap is not a restart");
        assert_eq!(
            st.observe(&k, 3, 20 * S, CounterWidth::Bits64),
            RateOutcome::First
        );
    }

    proptest::proptest! {
        #[test]
        fn rate_is_never_negative(prev in proptest::num::u64::ANY, now in proptest::num::u64::ANY,
                                  dt in 1i64..1_000_000_000_000) {
            for w in [CounterWidth::Bits32, CounterWidth::Bits64, CounterWidth::Unknown] {
                match rate(prev, 0, now, dt, w) {
                    RateOutcome::Rate(r) | RateOutcome::Wrapped(r) => proptest::prop_assert!(r >= 0.0),
                    _ => {}
                }
            }
        }
    }
}
