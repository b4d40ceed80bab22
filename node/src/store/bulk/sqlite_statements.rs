//! The hot path's statements on the SQLite writer's own connection ([`crate::store::sqlite_writer`]):
//! the same SQL as through sqlx (but for `OR FAIL`, below), run directly on the writer's
//! thread. Each statement text depends only on its row count (one of [`super::CHUNK_SIZES`]),
//! so the prepared-statement cache holds every one of them.
//!
//! Every insert and update here is `OR FAIL`. Under SQLite's default (`ABORT`) a statement
//! that writes several rows and could break a constraint (a `NOT NULL`, the `status` check,
//! a key without an upsert) opens a statement journal, so that a failure can undo its own rows
//! and leave the transaction's earlier statements: every page the statement touches first is
//! copied there before it changes (`subjournalPageIfRequired` was 6 % of the writer's time
//! with two federating nodes at 10,000 messages/s, docs/benchmarks.md). This writer never
//! needs that undo: any database error fails the whole transaction ([`crate::store::writer`]
//! rolls it back and retries each operation alone), so a statement may stop where it failed
//! (`FAIL`) and no journal is kept. An upsert's `DO NOTHING` still decides its own conflict.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use kith_proto::MessageStatus;
use rusqlite::types::ToSqlOutput;
use rusqlite::{Transaction, params_from_iter};

use super::statements::{ClientIdRow, CopyRow, HandoffRow, MailboxInsert, QueueRow, Statements};
use crate::store::status::advances_guard;
use crate::store::{OutboxEntry, StoreError};

/// Which statement text: the call site's line, the row count, a variant (a status) or "".
type TextKey = (u32, usize, &'static str);

thread_local! {
    /// Statement texts, built once per call site, row count and variant: a chunk has one of a
    /// few sizes, and building a text anew for every statement (with its `?` lists) cost more
    /// than the lookup.
    static TEXTS: RefCell<HashMap<TextKey, Rc<str>>> = RefCell::new(HashMap::new());
}

/// The text `build` makes for this call site (its line), `rows` and `variant`, built the first
/// time only.
macro_rules! sql {
    ($rows:expr, $variant:expr, $build:expr) => {
        TEXTS
            .with(|texts| texts.borrow_mut().entry((line!(), $rows, $variant)).or_insert_with(|| $build.into()).clone())
    };
    ($rows:expr, $build:expr) => {
        sql!($rows, "", $build)
    };
}

/// One bound value, borrowed where it can be.
type Value<'a> = ToSqlOutput<'a>;

/// `(?, ?, …), (?, ?, …)`: `rows` groups of `columns` placeholders.
fn values(rows: usize, columns: usize) -> String {
    let group = format!("({})", vec!["?"; columns].join(", "));
    vec![group; rows].join(", ")
}

/// `SELECT ? AS a, ? AS b UNION ALL SELECT ?, ? …`: a derived table of `rows` rows.
fn derived(rows: usize, names: &[&str]) -> String {
    let first: Vec<String> = names.iter().map(|name| format!("? AS {name}")).collect();
    let rest = vec!["?"; names.len()].join(", ");
    let mut sql = format!("SELECT {}", first.join(", "));
    for _ in 1..rows {
        sql.push_str(" UNION ALL SELECT ");
        sql.push_str(&rest);
    }
    sql
}

/// `(a = ? AND b = ?) OR (a = ? AND b = ?) …`: `rows` conjunctions of `columns`.
fn any_of(rows: usize, columns: &[&str]) -> String {
    let group = format!("({})", columns.iter().map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(" AND "));
    vec![group; rows].join(" OR ")
}

fn text(s: &str) -> Value<'_> {
    ToSqlOutput::from(s)
}

fn int<'a>(n: i64) -> Value<'a> {
    ToSqlOutput::from(n)
}

fn execute(tx: &Transaction<'_>, sql: &str, args: Vec<Value<'_>>) -> Result<(), StoreError> {
    tx.prepare_cached(sql)?.execute(params_from_iter(args))?;
    Ok(())
}

/// Runs a statement and returns how many rows it changed.
fn changed(tx: &Transaction<'_>, sql: &str, args: Vec<Value<'_>>) -> Result<usize, StoreError> {
    Ok(tx.prepare_cached(sql)?.execute(params_from_iter(args))?)
}

fn pairs(tx: &Transaction<'_>, sql: &str, args: Vec<Value<'_>>) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement = tx.prepare_cached(sql)?;
    let rows = statement.query_map(params_from_iter(args), |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Statements for Transaction<'_> {
    async fn insert_inbox(&mut self, keys: &[(&str, &str)], now: i64) -> Result<Vec<(String, String)>, StoreError> {
        let args = keys.iter().flat_map(|(origin, id)| [text(origin), text(id), int(now)]).collect();
        let insert = "INSERT OR FAIL INTO inbox (origin, envelope_id, received_at) VALUES";
        if let [(origin, id)] = keys {
            // One row: whether it was new is the count of rows changed, without `RETURNING`'s
            // ephemeral table (see `insert_mailbox_rows`).
            let sql = sql!(1, format!("{insert} (?, ?, ?) ON CONFLICT (origin, envelope_id) DO NOTHING"));
            let new = changed(self, &sql, args)?;
            return Ok(if new == 1 { vec![((*origin).to_owned(), (*id).to_owned())] } else { Vec::new() });
        }
        let sql = sql!(
            keys.len(),
            format!(
                "{insert} {} ON CONFLICT (origin, envelope_id) DO NOTHING RETURNING origin, envelope_id",
                values(keys.len(), 3)
            )
        );
        pairs(self, &sql, args)
    }

    async fn insert_client_ids(&mut self, rows: &[ClientIdRow<'_>]) -> Result<Vec<(String, String)>, StoreError> {
        let args = rows
            .iter()
            .flat_map(|r| [text(r.sender), text(r.client_message_id), text(r.message_id), int(r.timestamp)])
            .collect();
        let insert =
            "INSERT OR FAIL INTO client_message_ids (sender_id, client_message_id, message_id, timestamp) VALUES";
        let conflict = "ON CONFLICT (sender_id, client_message_id) DO NOTHING";
        if let [row] = rows {
            // One row: whether it was new is the count of rows changed, without `RETURNING`'s
            // ephemeral table (see `insert_mailbox_rows`).
            let new = changed(self, &sql!(1, format!("{insert} (?, ?, ?, ?) {conflict}")), args)?;
            return Ok(if new == 1 {
                vec![(row.sender.to_owned(), row.client_message_id.to_owned())]
            } else {
                Vec::new()
            });
        }
        let sql = sql!(
            rows.len(),
            format!("{insert} {} {conflict} RETURNING sender_id, client_message_id", values(rows.len(), 4))
        );
        pairs(self, &sql, args)
    }

    async fn earlier_send(&mut self, sender: &str, client_message_id: &str) -> Result<(String, i64), StoreError> {
        Ok(self
            .prepare_cached(
                "SELECT message_id, timestamp FROM client_message_ids WHERE sender_id = ? AND client_message_id = ?",
            )?
            .query_row([sender, client_message_id], |row| Ok((row.get(0)?, row.get(1)?)))?)
    }

    async fn insert_mailbox_rows(
        &mut self,
        rows: &[MailboxInsert<'_>],
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let sql = sql!(
            rows.len(),
            format!(
                "INSERT OR FAIL INTO messages (owner_id, message_id, peer_id, sender_id, receiver_id, content, timestamp, status) \
             VALUES {} ON CONFLICT (owner_id, message_id) DO NOTHING",
                values(rows.len(), 8)
            )
        );
        let args: Vec<Value<'_>> = rows
            .iter()
            .flat_map(|r| {
                [
                    text(r.owner),
                    text(r.message_id),
                    text(r.peer),
                    text(r.sender),
                    text(r.receiver),
                    text(r.content),
                    int(r.timestamp),
                    text("sent"),
                ]
            })
            .collect();
        // No `RETURNING`: SQLite keeps a returning statement's rows in an ephemeral table, and
        // with the other two inserts that return rows that was a quarter of a message's
        // instructions at low rates. `seq` is `AUTOINCREMENT` on the writer's one connection,
        // so the rows of one statement take consecutive values in their order, above every
        // row there was before.
        let new = changed(self, &sql, args)?;
        if new == 0 {
            return Ok(Vec::new());
        }
        if new == rows.len() {
            let first = self.last_insert_rowid() - i64::try_from(new).unwrap_or(i64::MAX) + 1;
            return Ok(rows
                .iter()
                .zip(first..)
                .map(|(r, seq)| (seq, r.owner.to_owned(), r.message_id.to_owned()))
                .collect());
        }
        // Some were there already (stored by an attempt whose answer was lost): the new ones are
        // the `new` rows of these keys with the highest `seq`.
        let sql = sql!(
            rows.len(),
            format!(
                "SELECT seq, owner_id, message_id FROM messages WHERE {} ORDER BY seq DESC LIMIT ?",
                any_of(rows.len(), &["owner_id", "message_id"])
            )
        );
        let limit = i64::try_from(new).unwrap_or(i64::MAX);
        let args = rows.iter().flat_map(|r| [text(r.owner), text(r.message_id)]).chain([int(limit)]);
        let mut statement = self.prepare_cached(&sql)?;
        let found = statement.query_map(params_from_iter(args), |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(found.collect::<Result<_, _>>()?)
    }

    async fn queue_for_devices(&mut self, rows: &[QueueRow<'_>]) -> Result<(), StoreError> {
        let sql = sql!(
            rows.len(),
            format!(
                "INSERT OR FAIL INTO device_pending (owner_id, device_id, seq) \
             SELECT d.user_id, d.device_id, v.seq FROM devices d JOIN ({}) v \
             ON d.user_id = v.owner WHERE d.device_id <> v.except_device",
                derived(rows.len(), &["owner", "seq", "except_device"])
            )
        );
        let args = rows.iter().flat_map(|r| [text(r.owner), int(r.seq), int(r.except_device)]).collect();
        execute(self, &sql, args)
    }

    async fn delete_outbox(&mut self, destination: &str, seqs: &[i64]) -> Result<(), StoreError> {
        let sql = sql!(
            seqs.len(),
            format!("DELETE FROM outbox WHERE destination = ? AND seq IN ({})", vec!["?"; seqs.len()].join(", "))
        );
        let args = std::iter::once(text(destination)).chain(seqs.iter().map(|seq| int(*seq))).collect();
        execute(self, &sql, args)
    }

    async fn insert_outbox(&mut self, entries: &[&OutboxEntry], now: i64) -> Result<(), StoreError> {
        let sql = sql!(
            entries.len(),
            format!(
                "INSERT OR FAIL INTO outbox (destination, envelope_id, kind, body, created_at) VALUES {}",
                values(entries.len(), 5)
            )
        );
        let args = entries
            .iter()
            .flat_map(|e| {
                [
                    text(e.destination.as_str()),
                    text(e.envelope_id.as_str()),
                    text(e.kind.as_str()),
                    ToSqlOutput::from(e.body.as_slice()),
                    int(now),
                ]
            })
            .collect();
        execute(self, &sql, args)
    }

    async fn insert_handoffs(&mut self, rows: &[HandoffRow<'_>], now: i64) -> Result<(), StoreError> {
        let sql = sql!(
            rows.len(),
            format!(
                "INSERT OR FAIL INTO handoffs (handoff_id, target_shard, body, created_at) VALUES {} \
             ON CONFLICT (handoff_id) DO NOTHING",
                values(rows.len(), 4)
            )
        );
        let args =
            rows.iter().flat_map(|h| [text(h.id), int(h.target_shard), ToSqlOutput::from(h.body), int(now)]).collect();
        execute(self, &sql, args)
    }

    async fn find_copies(&mut self, keys: &[(&str, &str)]) -> Result<Vec<CopyRow>, StoreError> {
        let sql = sql!(
            keys.len(),
            format!(
                "SELECT m.seq, m.owner_id, m.message_id, m.sender_id, m.receiver_id, m.status FROM messages m \
             JOIN ({}) v ON m.owner_id = v.owner AND m.message_id = v.message_id",
                derived(keys.len(), &["owner", "message_id"])
            )
        );
        let args: Vec<Value<'_>> = keys.iter().flat_map(|(owner, id)| [text(owner), text(id)]).collect();
        let mut statement = self.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(args), |row| {
            Ok(CopyRow {
                seq: row.get(0)?,
                owner: row.get(1)?,
                message_id: row.get(2)?,
                sender: row.get(3)?,
                receiver: row.get(4)?,
                status: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn clear_device_pending(&mut self, rows: &[(&str, i64, i64)]) -> Result<(), StoreError> {
        let sql = sql!(
            rows.len(),
            format!("DELETE FROM device_pending WHERE {}", any_of(rows.len(), &["owner_id", "seq", "device_id"]))
        );
        let args = rows.iter().flat_map(|(owner, device, seq)| [text(owner), int(*seq), int(*device)]).collect();
        execute(self, &sql, args)
    }

    async fn clear_all_pending(&mut self, rows: &[(&str, i64)]) -> Result<(), StoreError> {
        let sql =
            sql!(rows.len(), format!("DELETE FROM device_pending WHERE {}", any_of(rows.len(), &["owner_id", "seq"])));
        let args = rows.iter().flat_map(|(owner, seq)| [text(owner), int(*seq)]).collect();
        execute(self, &sql, args)
    }

    async fn advance_by_seq(&mut self, status: MessageStatus, seqs: &[i64]) -> Result<(), StoreError> {
        let sql = sql!(
            seqs.len(),
            status.as_str(),
            format!(
                "UPDATE OR FAIL messages SET status = ? WHERE seq IN ({}) AND {}",
                vec!["?"; seqs.len()].join(", "),
                advances_guard(status)
            )
        );
        let args = std::iter::once(text(status.as_str())).chain(seqs.iter().map(|seq| int(*seq))).collect();
        execute(self, &sql, args)
    }

    async fn advance_by_id(&mut self, status: MessageStatus, copies: &[(&str, &str)]) -> Result<(), StoreError> {
        let sql = sql!(
            copies.len(),
            status.as_str(),
            format!(
                "UPDATE OR FAIL messages SET status = ? WHERE ({}) AND {}",
                any_of(copies.len(), &["owner_id", "message_id"]),
                advances_guard(status)
            )
        );
        let args = std::iter::once(text(status.as_str()))
            .chain(copies.iter().flat_map(|(owner, id)| [text(owner), text(id)]))
            .collect();
        execute(self, &sql, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_shapes() {
        assert_eq!(values(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(derived(2, &["a", "b"]), "SELECT ? AS a, ? AS b UNION ALL SELECT ?, ?");
        assert_eq!(any_of(2, &["a", "b"]), "(a = ? AND b = ?) OR (a = ? AND b = ?)");
    }
}
