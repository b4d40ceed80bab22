//! A client's text frame, parsed and checked against the protocol's rules without touching the
//! node: the pure half of the WebSocket dispatch, which the connection loop acts on, and which
//! the fuzz target `ws_frame` (`fuzz/`) and its corpus replay test call directly.

use kith_proto::limits::MAX_PRESENCE_SUBSCRIPTIONS;
use kith_proto::{ClientFrame, MessageId, ServerName, UserId};

use crate::error::ApiError;
use crate::service::{OutgoingMessage, ServiceError};
use crate::validate;

/// What a well-formed frame asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Send a message (checked: receiver, size, characters, client id).
    Send {
        /// The client's id, echoed in the `sent` or `error` answer.
        client_message_id: String,
        /// The checked message.
        message: OutgoingMessage,
    },
    /// This device has the message.
    Ack(MessageId),
    /// The user read the message.
    Read(MessageId),
    /// Watch these users' presence (at most [`MAX_PRESENCE_SUBSCRIPTIONS`]).
    Subscribe(Vec<UserId>),
}

/// A refused frame: the error for the client, and the `clientMessageId` of the `send` it
/// answers, when it answers one.
#[derive(Debug)]
pub struct Refused {
    /// What is wrong.
    pub error: ApiError,
    /// The `send` this refuses.
    pub client_message_id: Option<String>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self { error, client_message_id: None }
    }
}

/// Parses and checks one text frame from a user of `home`.
///
/// # Errors
/// [`Refused`] with `invalid_json` for a frame that is not a `ClientFrame`, or the rule a field
/// breaks.
pub fn parse_frame(text: &str, home: &ServerName) -> Result<Command, Refused> {
    let frame = serde_json::from_str::<ClientFrame>(text)
        .map_err(|e| ApiError::InvalidJson(format!("malformed frame: {e}")))?;
    match frame {
        ClientFrame::Send { client_message_id, receiver_id, message } => {
            match validate::outgoing(&receiver_id, message, Some(&client_message_id), home) {
                Ok(message) => Ok(Command::Send { client_message_id, message }),
                Err(error) => Err(Refused { error, client_message_id: Some(client_message_id) }),
            }
        }
        ClientFrame::Ack { message_id } => Ok(Command::Ack(message_id)),
        ClientFrame::Read { message_id } => Ok(Command::Read(message_id)),
        ClientFrame::PresenceSubscribe { user_ids } => {
            if user_ids.len() > MAX_PRESENCE_SUBSCRIPTIONS {
                return Err(ApiError::from(ServiceError::InvalidRequest(format!(
                    "at most {MAX_PRESENCE_SUBSCRIPTIONS} users per presence.subscribe (got {})",
                    user_ids.len()
                )))
                .into());
            }
            let users =
                user_ids.iter().map(|id| validate::user_field("userIds", id, home)).collect::<Result<_, _>>()?;
            Ok(Command::Subscribe(users))
        }
    }
}
