//! The node as the client API sees it: [`ChatService`] over the node's parts.

use async_trait::async_trait;
use kith_client_api::{
    Caller, ChatService, Completion, OutgoingMessage, Password, SendOutcome, ServiceError, Session, SessionId,
    SessionLease,
};
use kith_proto::keys::{KeyBundles, KeyCount, KeyUpload, RemovalUpload};
use kith_proto::rest::HistoryPage;
use kith_proto::{
    DeviceId, IncomingMessage, MessageId, MessageStatus, PresenceView, PresenceVisibility, ServerName, UserId, Username,
};

use crate::state::AppState;
use crate::{accounts, delivery, history, keys, presence};

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

    async fn register(&self, username: Username, password: Password, device: DeviceId) -> Result<UserId, ServiceError> {
        accounts::register(&self.state, username, password, device).await
    }

    async fn login(&self, username: Username, password: Password, device: DeviceId) -> Result<UserId, ServiceError> {
        accounts::login(&self.state, username, password, device).await
    }

    async fn send(&self, sender: &Caller, message: OutgoingMessage) -> Result<Completion<SendOutcome>, ServiceError> {
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

    async fn presence(&self, viewer: &UserId, user: &UserId) -> Result<PresenceView, ServiceError> {
        presence::presence_for(&self.state, viewer, user).await
    }

    async fn presence_visibility(&self, user: &UserId) -> Result<PresenceVisibility, ServiceError> {
        presence::visibility(&self.state, user).await
    }

    async fn set_presence_visibility(&self, user: &UserId, visibility: PresenceVisibility) -> Result<(), ServiceError> {
        presence::set_visibility(&self.state, user, visibility).await
    }

    async fn open_session(&self, caller: &Caller) -> Result<Session, ServiceError> {
        // A device that is gone (or a user that never was) is refused before anything is
        // registered: a refused upgrade must not move anyone's presence, nor make a user that
        // does not exist look like one that went offline just now.
        self.check_device(caller).await?;
        let Some((id, events, first)) = self.state.sessions.register(&caller.user, caller.device) else {
            return Err(ServiceError::TooManySessions(format!(
                "{} has as many live connections as one user may",
                caller.user
            )));
        };
        let lease = Lease { state: self.state.clone(), user: caller.user.clone(), id };
        // Checked again once registered: a removal between the two checks is seen here; one
        // after this check ends this session with the device's others (dropping the lease
        // unregisters it).
        self.check_device(caller).await?;
        if first {
            presence::refresh(&self.state, &caller.user).await;
        }
        Ok(Session { id, events, lease: Box::new(lease) })
    }

    async fn pending(
        &self,
        caller: &Caller,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, IncomingMessage)>, ServiceError> {
        let pending = self.state.store.pending(&caller.user, caller.device, after, limit).await?;
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
        caller: &Caller,
        message_id: MessageId,
        status: MessageStatus,
    ) -> Result<Completion<()>, ServiceError> {
        delivery::receipt(&self.state, caller, message_id, status).await
    }

    async fn publish_keys(&self, caller: &Caller, keys: KeyUpload) -> Result<KeyCount, ServiceError> {
        keys::publish(&self.state, caller, keys).await
    }

    async fn claim_keys(&self, caller: &Caller, user: &UserId) -> Result<KeyBundles, ServiceError> {
        keys::claim(&self.state, caller, user).await
    }

    async fn device_keys(&self, caller: &Caller, user: &UserId) -> Result<KeyBundles, ServiceError> {
        keys::devices(&self.state, caller, user).await
    }

    async fn key_count(&self, caller: &Caller) -> Result<KeyCount, ServiceError> {
        keys::count(&self.state, caller).await
    }

    async fn remove_device(&self, caller: &Caller, device: DeviceId) -> Result<(), ServiceError> {
        keys::remove_device(&self.state, caller, device).await
    }

    async fn publish_removal(&self, caller: &Caller, removal: RemovalUpload) -> Result<(), ServiceError> {
        crate::trust::publish_removal(&self.state, caller, removal).await
    }

    async fn subscribe_presence(
        &self,
        session: SessionId,
        users: Vec<UserId>,
    ) -> Result<Vec<PresenceView>, ServiceError> {
        presence::subscribe(&self.state, session, users).await
    }

    async fn check_device(&self, caller: &Caller) -> Result<(), ServiceError> {
        if self.state.users.device_exists(&caller.user, caller.device).await? {
            Ok(())
        } else {
            Err(ServiceError::UnknownDevice(caller.user.clone(), caller.device))
        }
    }

    async fn ready(&self) -> Result<(), ServiceError> {
        if let Err(e) = self.state.store.ping().await {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            return Err(ServiceError::Unavailable("the store does not answer".into()));
        }
        self.state.cluster.ready().map_err(ServiceError::Unavailable)
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
            self.state.tasks.spawn_on(async move { presence::refresh(&state, &user).await }, &runtime);
        }
    }
}
