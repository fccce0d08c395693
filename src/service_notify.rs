//! systemd service notifications (`Type=notify` in deploy/sitewatch.service) through the
//! `sd-notify` crate: READY=1 once sinks are open and collectors started, STATUS= lines,
//! RELOADING=1 / READY=1 around a SIGHUP rule reload, STOPPING=1 at shutdown, and WATCHDOG=1
//! pings while the pipeline's tasks are alive. Every call is a no-op when `NOTIFY_SOCKET` is
//! unset (a shell, a container, the tests without a socket).
//!
//! A failed send is logged once and otherwise ignored: systemd then restarts the service for
//! a missing READY=1 or watchdog ping, which is the right outcome for a socket that is gone.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

static SEND_FAILED: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        if !SEND_FAILED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                socket = ?std::env::var_os("NOTIFY_SOCKET"),
                "cannot notify systemd (NOTIFY_SOCKET); readiness and watchdog pings are not delivered"
            );
        }
    }
}

/// Start-up finished: sinks open, collectors started. `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A free-form status line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A reload (SIGHUP) starts. systemd wants the monotonic clock with RELOADING=1 so it can
/// tell this reload from an earlier one.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading rules"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// Shutdown starts: collectors stop, buffered data is flushed.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: flushing buffered data"),
    ]);
}

/// Half of `WATCHDOG_USEC` (systemd's advice for the ping period), when the unit has
/// `WatchdogSec=` and the variable is meant for this process.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Pings the watchdog every [`watchdog_period`] while `alive()` holds; never returns. When the
/// watchdog is off this just waits forever, so it can sit in a `select!` next to the
/// shutdown signal. Once `alive()` is false the pings stop and systemd restarts the service
/// after `WatchdogSec=`: a dead pipeline stage must not look healthy.
pub fn watchdog(alive: impl Fn() -> bool) -> impl Future<Output = ()> {
    let period = watchdog_period();
    async move {
        let Some(period) = period else {
            return std::future::pending().await;
        };
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = false;
        loop {
            ticker.tick().await;
            if alive() {
                send(&[NotifyState::Watchdog]);
            } else if !reported {
                reported = true;
                tracing::error!(
                    "a pipeline task ended while the service runs; watchdog pings stop, systemd will restart sitewatch"
                );
            }
        }
    }
}
