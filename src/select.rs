//! Helpers for the `tokio::select!` loops of the sinks: a branch that is "nothing yet"
//! instead of a branch that is disabled, so the loop needs no extra flags.

use std::future::Future;

/// Awaits the future if there is one; never completes otherwise.
pub async fn or_pending<F: Future + Unpin>(f: Option<&mut F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `due` if there is one; never completes otherwise.
pub async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
