//! The node as the client API sees it: [`ChatService`] over the node's parts.

use async_trait::async_trait;
use kith_client_api::{
    ChatService, Completion, OutgoingMessage, Password, SendOutcome, ServiceError, Session,
    SessionId, SessionLease,
};
use kith_proto::rest::HistoryPage;
use kith_proto::{
    IncomingMessage, MessageId, MessageStatus, PresenceView, ServerName, UserId, Username,
};

use crate::state::AppState;
use crate::{accounts, delivery, history, presence};

/// Implements the client API's [`ChatService`] for this node.
#[derive(Debug, Clone)]
pub struct NodeService {
    state: AppState,
}

impl NodeService {
    /// The service over `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[async_trait]
impl ChatService for NodeService {
    fn server_name(&self) -> &ServerName {
        &self.state.server_name
    }

    async fn register(
        &self,
        username: Username,
        password: Password,
    ) -> Result<UserId, ServiceError> {
        accounts::register(&self.state, username, password).await
    }

    async fn login(&self, username: Username, password: Password) -> Result<UserId, ServiceError> {
        accounts::login(&self.state, username, password).await
    }

    async fn send(
        &self,
        sender: &UserId,
        message: OutgoingMessage,
    ) -> Result<Completion<SendOutcome>, ServiceError> {
        delivery::send(&self.state, sender, message).await
    }

    async fn history(
        &self,
        caller: &UserId,
        peer: &UserId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<HistoryPage, ServiceError> {
        history::page(&self.state, caller, peer, before, limit).await
    }

    async fn presence(&self, user: &UserId) -> Result<PresenceView, ServiceError> {
        presence::presence_of(&self.state, user).await
    }

    async fn open_session(&self, user: &UserId) -> Result<Session, ServiceError> {
        let (id, events, first) = self.state.sessions.register(user);
        let lease = Lease {
            state: self.state.clone(),
            user: user.clone(),
            id,
        };
        if first {
            presence::refresh(&self.state, user).await;
        }
        Ok(Session {
            id,
            events,
            lease: Box::new(lease),
        })
    }

    async fn pending(
        &self,
        user: &UserId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, IncomingMessage)>, ServiceError> {
        let pending = self.state.store.pending(user, after, limit).await?;
        Ok(pending
            .into_iter()
            .map(|p| {
                let m = p.message;
                let incoming = IncomingMessage {
                    message_id: m.message_id,
                    sender_id: m.sender_id,
                    receiver_id: m.receiver_id,
                    message: m.message,
                    timestamp: m.timestamp,
                };
                (p.seq, incoming)
            })
            .collect())
    }

    async fn receipt(
        &self,
        user: &UserId,
        message_id: MessageId,
        status: MessageStatus,
    ) -> Result<Completion<()>, ServiceError> {
        delivery::receipt(&self.state, user, message_id, status).await
    }

    async fn subscribe_presence(
        &self,
        session: SessionId,
        users: Vec<UserId>,
    ) -> Result<Vec<PresenceView>, ServiceError> {
        presence::subscribe(&self.state, session, users).await
    }

    async fn ready(&self) -> Result<(), ServiceError> {
        self.state
            .store
            .ping()
            .await
            .map_err(|e| ServiceError::Unavailable(e.to_string()))
    }
}

/// Keeps a session registered; its drop unregisters it and, for the user's last session,
/// takes them offline.
#[derive(Debug)]
struct Lease {
    state: AppState,
    user: UserId,
    id: SessionId,
}

impl SessionLease for Lease {}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.state.sessions.unregister(self.id) != Some(true) {
            return;
        }
        let (state, user) = (self.state.clone(), self.user.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.state.tasks.spawn_on(
                async move { presence::refresh(&state, &user).await },
                &runtime,
            );
        }
    }
}
