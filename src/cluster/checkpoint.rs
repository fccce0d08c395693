//! A unit's rule-state checkpoint in etcd, `<prefix>/state/<unit>`: who wrote it, whether
//! that member released the unit, and the state (the rules state file's form, see
//! `crate::rules::units`).
//!
//! The value is a JSON header line, then the state bytes as they are (no second encoding of
//! a document that is already JSON). Writes are fenced: a transaction that puts only while
//! the writer's member key still holds the writer's lease (a member whose lease has expired,
//! and whose units others own by now, cannot overwrite their checkpoints) and the key is
//! unchanged since the writer's own last write: a member that takes a unit up *claims* its
//! checkpoint (a write conditional on the revision it read), and from then on only it
//! writes there; a member that lost the race, or whose release comes late, is refused.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::session::Session;

/// etcd refuses requests over 1.5 MiB by default (`--max-request-bytes`).
pub const MAX_CHECKPOINT_BYTES: usize = 1536 * 1024 - 4096;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("etcd: {what} of {key}: {source}")]
    Etcd {
        what: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd: {what} of {key}: no answer within {after:?}")]
    Timeout {
        what: &'static str,
        key: String,
        after: Duration,
    },
    #[error("{key}: not a sitewatch checkpoint ({problem}); it is ignored and the unit starts with fresh rule state")]
    Invalid { key: String, problem: String },
    #[error("{key}: checkpoint of {bytes} bytes is over etcd's request limit ({MAX_CHECKPOINT_BYTES}); the unit's rule state does not move with it (split the unit: fewer topics per partition)")]
    TooLarge { key: String, bytes: usize },
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    owner: String,
    released: bool,
    saved_ns: i64,
}

/// A checkpoint as read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The member that wrote it.
    pub owner: String,
    /// Whether it let the unit go with this write (a clean handover).
    pub released: bool,
    pub saved_ns: i64,
    /// The rule state; none when the owner had none yet.
    pub state: Option<Vec<u8>>,
}

/// The key of `unit`'s checkpoint under the cluster's `prefix`.
pub fn key(prefix: &str, unit: &str) -> String {
    format!("{prefix}/state/{unit}")
}

pub fn encode(owner: &str, released: bool, state: Option<&[u8]>) -> Vec<u8> {
    let header = Header {
        owner: owner.to_string(),
        released,
        saved_ns: crate::model::now_ns(),
    };
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    if let Some(state) = state {
        out.push(b'\n');
        out.extend_from_slice(state);
    }
    out
}

pub fn decode(key: &str, value: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let invalid = |problem: String| CheckpointError::Invalid {
        key: key.to_string(),
        problem,
    };
    let (head, state) = match value.iter().position(|b| *b == b'\n') {
        Some(i) => (&value[..i], Some(value[i + 1..].to_vec())),
        None => (value, None),
    };
    let header: Header =
        serde_json::from_slice(head).map_err(|e| invalid(format!("header: {e}")))?;
    Ok(Checkpoint {
        owner: header.owner,
        released: header.released,
        saved_ns: header.saved_ns,
        state,
    })
}

async fn bounded<T>(
    what: &'static str,
    key: &str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CheckpointError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CheckpointError::Etcd {
            what,
            key: key.to_string(),
            source,
        }),
        Err(_) => Err(CheckpointError::Timeout {
            what,
            key: key.to_string(),
            after,
        }),
    }
}

/// Reads the checkpoint at `key` and its modification revision; `None` when there is none.
pub async fn read(
    session: &Session,
    key: &str,
    timeout: Duration,
) -> Result<Option<(Checkpoint, i64)>, CheckpointError> {
    let mut client = session.client.clone();
    let resp = bounded("read", key, timeout, client.get(key, None)).await?;
    match resp.kvs().first() {
        Some(kv) => decode(key, kv.value()).map(|c| Some((c, kv.mod_revision()))),
        None => Ok(None),
    }
}

/// What the key must be for a write to go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No checkpoint yet.
    Absent,
    /// Unchanged since this modification revision (this member's claim or last write).
    Revision(i64),
}

/// Writes `value` at `key` while `session`'s lease holds its member key and the key is as
/// `expect` says: `Ok(Some(revision))` of the write, `Ok(None)` when refused (the lease is
/// gone, or someone wrote the key since).
pub async fn write(
    session: &Session,
    key: &str,
    value: Vec<u8>,
    expect: Expect,
    timeout: Duration,
) -> Result<Option<i64>, CheckpointError> {
    if value.len() > MAX_CHECKPOINT_BYTES {
        return Err(CheckpointError::TooLarge {
            key: key.to_string(),
            bytes: value.len(),
        });
    }
    let unchanged = match expect {
        Expect::Absent => Compare::version(key, CompareOp::Equal, 0),
        Expect::Revision(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
    };
    let txn = Txn::new()
        .when([
            Compare::lease(session.member_key.as_str(), CompareOp::Equal, session.lease),
            unchanged,
        ])
        .and_then([TxnOp::put(key, value, None)]);
    let mut client = session.client.clone();
    let resp = bounded("write", key, timeout, client.txn(txn)).await?;
    Ok(resp
        .succeeded()
        .then(|| resp.header().map_or(0, |h| h.revision())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_checkpoint_reads_back_as_written() {
        let v = encode("m1", true, Some(br#"{"version":2}"#));
        let c = decode("k", &v).unwrap();
        assert_eq!(c.owner, "m1");
        assert!(c.released);
        assert_eq!(c.state.as_deref(), Some(&br#"{"version":2}"#[..]));
        let claim = decode("k", &encode("m2", false, None)).unwrap();
        assert_eq!(
            (claim.owner.as_str(), claim.released, claim.state),
            ("m2", false, None)
        );
        assert_eq!(
            key("/sitewatch/default", "mqtt:a"),
            "/sitewatch/default/state/mqtt:a"
        );
    }

    proptest! {
        #[test]
        fn any_value_decodes_or_is_refused_without_panicking(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode("k", &v);
        }

        #[test]
        fn any_state_survives(owner in "[a-z0-9-]{1,20}", released: bool, state in proptest::collection::vec(any::<u8>(), 0..200)) {
            let c = decode("k", &encode(&owner, released, Some(&state))).unwrap();
            prop_assert_eq!(c.owner, owner);
            prop_assert_eq!(c.released, released);
            prop_assert_eq!(c.state, Some(state));
        }
    }
}
