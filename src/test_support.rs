//! Helpers shared by unit tests in several modules (compiled for tests only).

/// Sets the process umask while alive. The umask is process-wide, so every test that
/// changes it holds this one lock (shared by the spool's and the rules state's tests), and
/// every such test sets 0o022, the usual default, so nothing stranger is ever left behind.
#[cfg(unix)]
pub(crate) struct Umask {
    old: libc::mode_t,
    _lock: std::sync::MutexGuard<'static, ()>,
}

#[cfg(unix)]
impl Umask {
    pub(crate) fn set(mask: libc::mode_t) -> Umask {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let lock = LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: umask(2) only swaps the process's file mode creation mask.
        let old = unsafe { libc::umask(mask) };
        Umask { old, _lock: lock }
    }
}

#[cfg(unix)]
impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as in `set`.
        unsafe { libc::umask(self.old) };
    }
}
