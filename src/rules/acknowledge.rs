//! Acknowledging an open alert: the request the API hands to the rules stage, which owns
//! the open alerts (see [`super::open_alerts`]) and answers on the request's own channel.

use tokio::sync::{mpsc, oneshot};

pub use super::open_alerts::AckError;
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
