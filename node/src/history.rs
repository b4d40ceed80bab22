//! Conversation history, newest page from the cache when it has it, otherwise from the store
//! (which then fills the cache).

use kith_client_api::ServiceError;
use kith_proto::rest::HistoryPage;
use kith_proto::{MessageId, UserId};

use crate::cache::{RECENT_MESSAGES, Recent};
use crate::state::AppState;

/// `caller`'s conversation with `peer`: the newest `limit` messages before `before`, oldest
/// first, and the cursor of the page before it.
pub(crate) async fn page(
    state: &AppState,
    caller: &UserId,
    peer: &UserId,
    before: Option<MessageId>,
    limit: u32,
) -> Result<HistoryPage, ServiceError> {
    if peer.is_on(&state.server_name) && !state.users.exists(peer).await? {
        return Err(ServiceError::UnknownUser(peer.clone()));
    }
    let limit_len = usize::try_from(limit).unwrap_or(usize::MAX);

    if before.is_none() {
        if let Some(recent) = state.cache.recent(caller, peer).await
            && (recent.whole || recent.messages.len() >= limit_len)
        {
            return Ok(newest(recent.messages, limit_len, !recent.whole));
        }
        // Read enough to fill the cache too, and one more to know whether older ones exist.
        let token = state.cache.begin_fill(caller, peer).await;
        let want = limit_len.max(RECENT_MESSAGES) + 1;
        let rows = state.store.history(caller, peer, None, u32::try_from(want).unwrap_or(u32::MAX)).await?;
        let whole = rows.len() < want;
        let cached = rows[rows.len().saturating_sub(RECENT_MESSAGES)..].to_vec();
        state
            .cache
            .fill(caller, peer, Recent { whole: whole && cached.len() == rows.len(), messages: cached }, token)
            .await;
        return Ok(newest(rows, limit_len, !whole));
    }

    let rows = state.store.history(caller, peer, before, limit.saturating_add(1)).await?;
    let more = rows.len() > limit_len;
    Ok(newest(rows, limit_len, more))
}

/// The newest `limit` of `messages` (oldest first); `more_before` says whether anything older
/// than what `messages` holds exists.
fn newest(mut messages: Vec<kith_proto::MessageView>, limit: usize, more_before: bool) -> HistoryPage {
    let cut = messages.len().saturating_sub(limit);
    let more = more_before || cut > 0;
    messages.drain(..cut);
    let next_before = if more { messages.first().map(|m| m.message_id) } else { None };
    HistoryPage { messages, next_before }
}
