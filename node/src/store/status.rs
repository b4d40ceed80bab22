//! The one rule for message status: it only moves forward, `sent` → `delivered` → `read`
//! (and `sent` → `read` when the read comes first). The in-memory decision and the SQL guard
//! that repeats it inside every `UPDATE` are both derived from [`advances`].

use kith_proto::MessageStatus;
use sqlx::{Database, QueryBuilder};

/// Every status, in order.
const ORDER: [MessageStatus; 3] = [MessageStatus::Sent, MessageStatus::Delivered, MessageStatus::Read];

fn rank(status: MessageStatus) -> usize {
    ORDER.iter().position(|s| *s == status).unwrap_or(0)
}

/// Whether a message with status `current` moves to `new`.
pub(crate) fn advances(current: MessageStatus, new: MessageStatus) -> bool {
    rank(new) > rank(current)
}

/// The SQL guard "the row's `status` is one that moves to `new`", e.g.
/// `status IN ('sent', 'delivered')` for `read`, so that a statement never lowers a status
/// even when the decision before it raced another writer.
pub(crate) fn advances_guard(new: MessageStatus) -> String {
    // Literals from a fixed set, not user input.
    let from: Vec<String> =
        ORDER.into_iter().filter(|from| advances(*from, new)).map(|from| format!("'{}'", from.as_str())).collect();
    if from.is_empty() {
        // Nothing moves to `sent`: a guard no row meets.
        return "status IN (NULL)".to_owned();
    }
    format!("status IN ({})", from.join(", "))
}

/// Appends [`advances_guard`] to a query.
pub(crate) fn push_advances<DB: Database>(query: &mut QueryBuilder<DB>, new: MessageStatus) {
    query.push(advances_guard(new));
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::{Delivered, Read, Sent};

    #[test]
    fn status_only_moves_forward() {
        assert!(advances(Sent, Delivered) && advances(Sent, Read) && advances(Delivered, Read));
        assert!(!advances(Delivered, Delivered) && !advances(Read, Delivered) && !advances(Read, Read));
        assert!(!advances(Sent, Sent) && !advances(Delivered, Sent));
    }

    #[test]
    fn the_sql_guard_says_the_same() {
        let guard = |status| {
            let mut query = QueryBuilder::<sqlx::Sqlite>::new("");
            push_advances(&mut query, status);
            query.into_sql()
        };
        assert_eq!(guard(Read), "status IN ('sent', 'delivered')");
        assert_eq!(guard(Delivered), "status IN ('sent')");
        assert_eq!(guard(Sent), "status IN (NULL)");
    }
}
