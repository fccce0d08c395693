//! Retry timing: full-jitter exponential backoff and `Retry-After`. Kept here, small, until a
//! shared helper exists.

use std::time::Duration;

use rand::Rng as _;
use reqwest::header::HeaderValue;

/// First backoff step; doubles per failed attempt up to the cap.
pub const BASE_DELAY: Duration = Duration::from_millis(250);
/// Upper bound for an honoured `Retry-After`, so a confused proxy cannot park the sink.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Full jitter: uniform in [10 ms, min(cap, 250 ms · 2^attempt)] (the 10 ms floor keeps a
/// dead receiver from being hammered in a tight loop).
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let ceiling = BASE_DELAY
        .saturating_mul(1u32 << attempt.min(20))
        .min(cap)
        .max(Duration::from_millis(10));
    Duration::from_millis(rand::rng().random_range(10..=ceiling.as_millis() as u64))
}

/// `Retry-After` in its delta-seconds form (receivers in this space do not send HTTP dates;
/// a date is ignored and the backoff applies), capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let secs: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_cap() {
        let cap = Duration::from_secs(30);
        for _ in 0..200 {
            assert!(backoff(0, cap) <= Duration::from_millis(250));
            assert!(backoff(3, cap) <= Duration::from_secs(2));
            let d = backoff(40, cap);
            assert!(d <= cap && d >= Duration::from_millis(10));
        }
        // Jitter spreads the delays: not every draw is the same.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| backoff(10, cap)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn retry_after_seconds_are_honoured_and_capped() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            parse_retry_after(Some(&v("3"))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_retry_after(Some(&v("86400"))), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after(Some(&v("Wed, 21 Oct 2015 07:28:00 GMT"))),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}
