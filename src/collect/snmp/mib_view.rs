//! What a poll reads from: a live agent ([`Client`]) or a recording of one
//! ([`super::recording::Recording`]). The poll logic is written once against this trait, so
//! `sitewatch profile test` on a recording shows exactly what `run` writes for that device.

use super::client::Client;
use super::value::{ObjectId, Received};
use super::SnmpError;

/// The three questions a poll asks of an agent.
pub(crate) trait MibView {
    /// Exact objects; absent ones come back as `NoSuchObject`.
    async fn get(&mut self, oids: &[ObjectId]) -> Result<Vec<(ObjectId, Received)>, SnmpError>;
    /// Every object under each root, as `(root index, oid, value)`.
    async fn walk(
        &mut self,
        roots: &[ObjectId],
    ) -> Result<Vec<(usize, ObjectId, Received)>, SnmpError>;
    /// For each OID, the next object after it (`None` past the end).
    async fn next_of(&mut self, oids: &[ObjectId]) -> Result<Vec<Option<ObjectId>>, SnmpError>;
}

impl MibView for Client {
    async fn get(&mut self, oids: &[ObjectId]) -> Result<Vec<(ObjectId, Received)>, SnmpError> {
        Client::get(self, oids).await
    }

    async fn walk(
        &mut self,
        roots: &[ObjectId],
    ) -> Result<Vec<(usize, ObjectId, Received)>, SnmpError> {
        Client::walk(self, roots).await
    }

    async fn next_of(&mut self, oids: &[ObjectId]) -> Result<Vec<Option<ObjectId>>, SnmpError> {
        Client::next_of(self, oids).await
    }
}
