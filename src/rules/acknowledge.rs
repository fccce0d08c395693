//! Acknowledging an open alert: the request the API hands to the rules stage, which owns
//! the open alerts (see [`super::open_alerts`]) and answers on the request's own channel.

use tokio::sync::{mpsc, oneshot};

use super::open_alerts::AlertView;

/// `POST /api/v1/alerts/{id}/ack`, on its way to the rules stage.
#[derive(Debug)]
pub struct AckRequest {
    pub id: String,
    pub by: String,
    pub comment: String,
    pub reply: oneshot::Sender<Result<AlertView, AckError>>,
}

/// The API's end of the channel to the rules stage.
pub type AckSender = mpsc::Sender<AckRequest>;
pub type AckReceiver = mpsc::Receiver<AckRequest>;

/// How many acknowledgements may wait for the rules stage (people type them: a few suffice).
pub const ACK_CHANNEL_CAPACITY: usize = 64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AckError {
    #[error("no open alert has id {0:?}: it may have resolved already (GET /api/v1/alerts lists the open ones)")]
    NotFound(String),
    #[error("alert {id} is already acknowledged (by {by} at {at})")]
    Already { id: String, by: String, at: String },
}
