//! The etcd session of the moment (client, lease, this member's key), shared by the
//! membership that makes it and the handover that writes checkpoints under it.

use std::sync::{Arc, Mutex};

use etcd_client::Client;

/// A registered session: writes fenced on `lease` succeed only while it lives.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    pub lease: i64,
    /// `<prefix>/members/<name>`, attached to `lease`.
    pub member_key: String,
}

/// The current session, if registered.
#[derive(Clone, Default)]
pub struct SessionSlot(Arc<Mutex<Option<Session>>>);

impl SessionSlot {
    pub fn set(&self, session: Session) {
        *self.lock() = Some(session);
    }

    pub fn clear(&self) {
        *self.lock() = None;
    }

    pub fn get(&self) -> Option<Session> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
