//! Fuzz entry `ws_frame`: a client's WebSocket text frame through the parse and checks the
//! connection loop dispatches on (`kith_client_api::parse_frame`). Shared by
//! `fuzz_targets/ws_frame.rs` and the corpus replay test.
//!
//! Checks: nothing panics; a frame that passes holds only what the protocol allows (a message
//! within 64 KiB and without NUL, a valid client id, at most 1,000 subscriptions); a refused
//! frame maps to an `error` frame.

use std::sync::OnceLock;

use kith_client_api::{Command, parse_frame};
use kith_proto::limits::{MAX_MESSAGE_BYTES, MAX_PRESENCE_SUBSCRIPTIONS};
use kith_proto::{ClientMessageId, ServerName};

fn home() -> &'static ServerName {
    static HOME: OnceLock<ServerName> = OnceLock::new();
    HOME.get_or_init(|| ServerName::parse("kith.example").unwrap_or_else(|e| panic!("{e}")))
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_frame(text, home()) {
        Ok(Command::Send { client_message_id, message }) => {
            assert!(message.content.len() <= MAX_MESSAGE_BYTES);
            assert!(!message.content.contains('\0'));
            assert!(ClientMessageId::parse(&client_message_id).is_ok());
        }
        Ok(Command::Subscribe(users)) => assert!(users.len() <= MAX_PRESENCE_SUBSCRIPTIONS),
        Ok(Command::Ack(_) | Command::Read(_)) => {}
        Err(refused) => {
            let _ = refused.error.to_frame(refused.client_message_id);
        }
    }
}
