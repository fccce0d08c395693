//! Calendar arithmetic and RFC 3339 for the places that read or write wall-clock times
//! (payload timestamps, silences, replay ranges, receiver payloads). Hand-written because
//! devices send numeric UTC offsets, which `humantime` does not accept, and because every
//! i64 nanosecond value must format without panicking.

/// Nanoseconds per second.
pub const NS_PER_SEC: i64 = 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as u32, d as u32)
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-01T00:00:00Z`, `…T02:00:00.5+02:00`, a space instead
/// of `T`) or a bare date (midnight UTC) into ns since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let s = text.trim();
    let num = |part: &str, what: &str, lo: u32, hi: u32| -> Result<u32, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what} {part:?} is not a number"));
        }
        let v: u32 = part
            .parse()
            .map_err(|_| format!("{what} {part:?} is too large"))?;
        if v < lo || v > hi {
            return Err(format!("{what} {v} is outside {lo}..={hi}"));
        }
        Ok(v)
    };
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (dp.next(), dp.next(), dp.next(), dp.next()) else {
        return Err("the date must be YYYY-MM-DD".into());
    };
    if y.len() != 4 {
        return Err("the year must have four digits".into());
    }
    let y = i64::from(num(y, "year", 1970, 9999)?);
    let m = num(m, "month", 1, 12)?;
    let d = num(d, "day", 1, days_in_month(y, m))?;
    let mut secs = days_from_civil(y, m, d) * 86_400;
    let mut frac_ns = 0i64;
    if let Some(rest) = rest {
        let (clock, offset_s) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
            (c, 0i64)
        } else if let Some(i) = rest.rfind(['+', '-']) {
            let (c, off) = rest.split_at(i);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let Some((oh, om)) = off[1..].split_once(':') else {
                return Err("the UTC offset must be +HH:MM or -HH:MM".into());
            };
            let oh = i64::from(num(oh, "offset hours", 0, 23)?);
            let om = i64::from(num(om, "offset minutes", 0, 59)?);
            (c, sign * (oh * 3600 + om * 60))
        } else {
            return Err("a time needs a zone: end it with Z or an offset like +02:00".into());
        };
        let (hms, frac) = match clock.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (clock, None),
        };
        let mut tp = hms.split(':');
        let (Some(h), Some(mi), Some(sec), None) = (tp.next(), tp.next(), tp.next(), tp.next())
        else {
            return Err("the time must be HH:MM:SS".into());
        };
        let h = i64::from(num(h, "hour", 0, 23)?);
        let mi = i64::from(num(mi, "minute", 0, 59)?);
        let sec = i64::from(num(sec, "second", 0, 60)?);
        if let Some(f) = frac {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the fraction of a second must be digits".into());
            }
            // Some devices send picoseconds; nanoseconds are all InfluxDB keeps.
            let f = &f[..f.len().min(9)];
            frac_ns = f.parse::<i64>().unwrap_or(0) * 10i64.pow(9 - f.len() as u32);
        }
        secs += h * 3600 + mi * 60 + sec - offset_s;
    }
    if secs < 0 {
        return Err("times before 1970 cannot be stored in InfluxDB".into());
    }
    secs.checked_mul(NS_PER_SEC)
        .and_then(|ns| ns.checked_add(frac_ns))
        .ok_or_else(|| "times after 2262-04-11 do not fit in nanoseconds since 1970".into())
}

/// A full RFC 3339 timestamp (date, time and zone; `t`/space separator and `z` accepted)
/// into ns since the epoch; `None` for anything else, a bare date included.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.contains(['T', 't', ' ']) {
        return None;
    }
    parse_time(s).ok()
}

/// RFC 3339 in UTC: whole seconds when the time has no fraction, milliseconds otherwise.
pub fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(NS_PER_SEC);
    let sub = ns.rem_euclid(NS_PER_SEC);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let hms = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if sub == 0 {
        format!("{hms}Z")
    } else {
        format!("{hms}.{:03}Z", sub / 1_000_000)
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.250Z`, for any i64 ns.
pub fn rfc3339_millis(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let millis = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}
