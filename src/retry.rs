//! Retrying: exponential backoff with jitter, and the server's `Retry-After`.
//!
//! One implementation for the InfluxDB writer, the alert notifier and the MQTT reconnect loop:
//!
//! - [`Backoff`]: the n-th retry waits `min(max, initial · 2^n)`, jittered. *Full* jitter draws
//!   uniformly from `[floor, that]` (many clients retrying one server spread out the most);
//!   *half* jitter keeps half fixed and draws the other half (a fleet reconnecting to a
//!   restarted broker does not do so in lockstep, yet nobody retries at once).
//! - [`parse_retry_after`]: both forms of RFC 9110 `Retry-After`, delta-seconds (`120`) and an
//!   HTTP-date (`Wed, 21 Oct 2026 07:28:00 GMT`, and the obsolete RFC 850 and asctime forms).
//!   A date that has passed asks for no wait, so it gives `None` and the caller's own backoff
//!   applies. Callers cap what they honour.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;

use crate::time::days_from_civil;

/// How a backoff step is randomised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[floor, step]`.
    Full,
    /// `step / 2` plus uniform in `[0, step / 2]`.
    Half,
}

/// Capped exponential backoff with jitter. Stateless use: [`Backoff::delay`] with the number
/// of failed attempts; stateful use: [`Backoff::next_delay`] and [`Backoff::reset`].
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    floor: Duration,
    jitter: Jitter,
    attempt: u32,
}

impl Backoff {
    /// Half jitter from `initial` (at most `max`) doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial: initial.min(max),
            max,
            floor: Duration::ZERO,
            jitter: Jitter::Half,
            attempt: 0,
        }
    }

    /// Full jitter from `initial` doubling up to `max`.
    pub fn full_jitter(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            floor: Duration::ZERO,
            jitter: Jitter::Full,
            attempt: 0,
        }
    }

    /// No delay shorter than `floor`, so a zero draw does not hammer a struggling server.
    pub fn with_floor(mut self, floor: Duration) -> Backoff {
        self.floor = floor;
        self
    }

    /// The un-jittered step after `attempt` failed attempts (0: the first retry).
    pub fn step(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.max)
    }

    /// A jittered delay before retry number `attempt` (0: the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let step = self.step(attempt);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut rng = rand::rng();
        match self.jitter {
            Jitter::Full => {
                let floor = ms(self.floor);
                Duration::from_millis(rng.random_range(floor..=ms(step).max(floor)))
            }
            Jitter::Half => {
                let half = step / 2;
                (half + Duration::from_millis(rng.random_range(0..=ms(half)))).max(self.floor)
            }
        }
    }

    /// The next delay of a series of failures.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// After a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The wait a `Retry-After` header value asks for, at `now`: delta-seconds or an HTTP-date in
/// the future. `None` for anything else, including a date that has passed.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(parse_http_date(value)?))?;
    at.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// [`parse_retry_after`] of a response's `Retry-After` header, now.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    retry_after_value(headers.get(reqwest::header::RETRY_AFTER))
}

/// [`parse_retry_after`] of a `Retry-After` header value, now.
pub fn retry_after_value(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    parse_retry_after(value?.to_str().ok()?, SystemTime::now())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the epoch of an HTTP-date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) or asctime (`Sun Nov  6 08:49:37 1994`).
fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let (day, month, year, time) = match parts[..] {
        // IMF-fixdate
        [_, day, month, year, time, "GMT"] => (day, month, year.parse::<i64>().ok()?, time),
        // RFC 850: a two-digit year, 70-99 taken as 19xx and 00-69 as 20xx.
        [_, date, time, "GMT"] => {
            let mut it = date.split('-');
            let (day, month, yy) = (it.next()?, it.next()?, it.next()?);
            if it.next().is_some() || yy.len() != 2 {
                return None;
            }
            let yy = yy.parse::<i64>().ok()?;
            (
                day,
                month,
                if yy >= 70 { 1900 + yy } else { 2000 + yy },
                time,
            )
        }
        // asctime
        [_, month, day, time, year] => (day, month, year.parse::<i64>().ok()?, time),
        _ => return None,
    };
    let day: u32 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    if !(1..=crate::time::days_in_month(year, month)).contains(&day) || year < 1970 {
        return None;
    }
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_between_floor_and_the_capped_step() {
        let b = Backoff::full_jitter(Duration::from_millis(250), Duration::from_secs(30))
            .with_floor(Duration::from_millis(10));
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(250)
                .saturating_mul(1u32 << attempt.min(20))
                .min(Duration::from_secs(30));
            assert_eq!(b.step(attempt), ceiling);
            for _ in 0..20 {
                let d = b.delay(attempt);
                assert!(
                    d >= Duration::from_millis(10) && d <= ceiling,
                    "{attempt}: {d:?}"
                );
            }
        }
        // A floor above the step wins.
        let b = Backoff::full_jitter(Duration::from_millis(1), Duration::from_millis(5))
            .with_floor(Duration::from_millis(50));
        assert_eq!(b.delay(3), Duration::from_millis(50));
    }

    #[test]
    fn half_jitter_keeps_half_of_each_step() {
        let mut b = Backoff::new(Duration::from_millis(400), Duration::from_secs(2));
        for attempt in 0..8 {
            let step = b.step(attempt);
            let d = b.next_delay();
            assert!(d >= step / 2 && d <= step, "{attempt}: {d:?} for {step:?}");
        }
        assert_eq!(b.step(7), Duration::from_secs(2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(400));
        // An initial above the cap starts at the cap.
        let capped = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(capped.step(0), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_takes_seconds_and_future_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_717); // Sun, 06 Nov 1994 08:48:37
        let p = |s| parse_retry_after(s, now);
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(p(date), Some(Duration::from_secs(60)), "{date}");
        }
        // Passed, malformed, negative, fractional: no server-given wait.
        for bad in [
            "Sat, 05 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:48:37 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "-5",
            "1.5",
            "",
            "soon",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn http_dates_parse_to_epoch_seconds() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Friday, 06-Nov-26 08:49:37 GMT"),
            parse_http_date("Fri, 06 Nov 2026 08:49:37 GMT")
        );
    }
}
