//! What one instance hands another through its stream: an entry's one field, `e`, holds one
//! of these as JSON. Frames travel already encoded, as the sending instance pushed them to its
//! own sessions.

use kith_client_api::SessionEvent;
use kith_proto::{DeviceId, MessageId, UserId};
use serde::{Deserialize, Serialize};

use crate::audience::Audience;

/// The stream entry field holding the event.
pub(crate) const FIELD: &str = "e";

/// An event for another instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "camelCase")]
pub(crate) enum Wire {
    /// A frame for every session of `user` on the receiving instance but those of `except`.
    #[serde(rename_all = "camelCase")]
    ToUser { user: UserId, except: Option<u32>, message_id: Option<MessageId>, text: String },
    /// A presence frame for the sessions watching `user`.
    #[serde(rename_all = "camelCase")]
    ToWatchers {
        user: UserId,
        text: String,
        /// The watchers admitted ([`Audience`]): absent for everyone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        admitted: Option<Vec<UserId>>,
        /// Whether `admitted` lists those excluded instead.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        inverted: bool,
    },
    /// A device was removed: its sessions end, and its tokens stop working.
    #[serde(rename_all = "camelCase")]
    CloseDevice { user: UserId, device: u32 },
    /// A destination's outbox has news: whoever pumps it should look.
    #[serde(rename_all = "camelCase")]
    OutboxWake { destination: String },
    /// Pushes for these users (all, when `None`) may have been lost: their sessions should
    /// replay what is pending.
    #[serde(rename_all = "camelCase")]
    Replay { users: Option<Vec<UserId>> },
}

impl Wire {
    /// The event carrying `event` to `user`'s sessions.
    pub(crate) fn to_user(user: &UserId, event: &SessionEvent, except: Option<DeviceId>) -> Self {
        Self::ToUser {
            user: user.clone(),
            except: except.map(|d| d.0),
            message_id: event.message_id(),
            text: event.text().to_owned(),
        }
    }

    /// The event carrying a presence frame to `user`'s watchers.
    pub(crate) fn to_watchers(user: &UserId, event: &SessionEvent, audience: &Audience) -> Self {
        let (admitted, inverted) = audience.to_wire();
        Self::ToWatchers { user: user.clone(), text: event.text().to_owned(), admitted, inverted }
    }

    /// Encodes the event for a stream entry.
    pub(crate) fn encode(&self) -> String {
        // Plain data always encodes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an entry back; `None` for one this version does not understand.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let user = UserId::parse("bob@test").unwrap_or_else(|e| panic!("{e}"));
        for wire in [
            Wire::ToUser { user: user.clone(), except: Some(2), message_id: Some(MessageId::now()), text: "{}".into() },
            Wire::ToWatchers { user: user.clone(), text: "{}".into(), admitted: None, inverted: false },
            Wire::ToWatchers {
                user: user.clone(),
                text: "{}".into(),
                admitted: Some(vec![user.clone()]),
                inverted: true,
            },
            Wire::CloseDevice { user: user.clone(), device: 3 },
            Wire::Replay { users: Some(vec![user]) },
            Wire::Replay { users: None },
        ] {
            assert_eq!(Wire::decode(&wire.encode()), Some(wire));
        }
        assert_eq!(Wire::decode("{\"k\":\"fromTheFuture\"}"), None);
    }
}
