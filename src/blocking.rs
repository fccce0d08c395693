//! Blocking file I/O called from async code (spool appends and fsyncs).
//!
//! [`on_blocking_thread`] runs the call with `tokio::task::block_in_place`: the calling
//! worker becomes a blocking thread for the duration and tokio moves every other task it had
//! (the rules stage, the MQTT event loop, other sinks) to a fresh worker, so a slow disk delays
//! only the task that asked for the write. On a current-thread runtime (unit tests) there is
//! nowhere to move tasks to, and the call runs inline.

use tokio::runtime::{Handle, RuntimeFlavor};

pub fn on_blocking_thread<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// While one task sits in a 300 ms blocking call, a ticking task on the same runtime
    /// keeps its 10 ms beat: the blocking call does not hold a worker other tasks need.
    #[test]
    fn other_tasks_keep_running_during_a_blocking_call() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ticker = tokio::spawn(async {
                let mut worst = Duration::ZERO;
                let mut last = Instant::now();
                for _ in 0..30 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    worst = worst.max(last.elapsed());
                    last = Instant::now();
                }
                worst
            });
            let blocker = tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                on_blocking_thread(|| std::thread::sleep(Duration::from_millis(300)));
            });
            let worst = ticker.await.unwrap();
            blocker.await.unwrap();
            assert!(
                worst < Duration::from_millis(150),
                "the ticker stalled for {worst:?} behind a blocking call"
            );
        });
    }
}
