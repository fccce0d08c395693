//! Small text helpers shared by config parsing, rule files and error reporting.

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    // Lossy: an offset inside a multi-byte character must not panic.
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// An error and its sources as one line, `outer: inner: innermost`. A cause whose text the
/// line already holds is left out (many errors repeat their source in their own message).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    join_chain(std::iter::successors(Some(e), |e| e.source()))
}

/// [`error_chain`] of an `anyhow::Error`: its context layers and the error below them.
pub fn anyhow_error_chain(e: &anyhow::Error) -> String {
    join_chain(e.chain().map(|c| c as &dyn std::error::Error))
}

fn join_chain<'a>(chain: impl Iterator<Item = &'a dyn std::error::Error>) -> String {
    let mut out = String::new();
    for cause in chain {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// At most 64 characters of a payload for error messages.
pub fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// FNV-1a 64 over `parts` (each followed by a 0xff separator): stable across Rust versions and
/// restarts, unlike `DefaultHasher`, because identities made from it are kept outside the
/// process (a PagerDuty resolve sent after an upgrade must still match its trigger).
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chains_join_sources_and_skip_repeats() {
        let e = E(
            "sending: connection refused",
            Some(Box::new(E(
                "connection refused",
                Some(Box::new(E("os error 111", None))),
            ))),
        );
        assert_eq!(error_chain(&e), "sending: connection refused: os error 111");
        assert_eq!(error_chain(&E("alone", None)), "alone");
        let a = anyhow::Error::new(e).context("writing to InfluxDB");
        assert_eq!(
            anyhow_error_chain(&a),
            "writing to InfluxDB: sending: connection refused: os error 111"
        );
    }
}
